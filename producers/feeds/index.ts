import { ConfigError } from '../../shared/errors.ts';
import { AlpacaMapper, ALPACA_URLS, type AlpacaFeed } from './alpaca.ts';
import { BinanceMapper } from './binance.ts';
import { CoinbaseMapper } from './coinbase.ts';
import { KrakenMapper } from './kraken.ts';
import type { FeedMapper, MapperOptions } from './mapper.ts';

/** The venues `tickstream produce feed <venue>` knows, each a native mapper in its own file. */
export const VENUES = ['coinbase', 'binance', 'kraken', 'alpaca'] as const;
export type Venue = (typeof VENUES)[number];

export interface VenueCredentials {
  alpacaKeyId?: string | undefined;
  alpacaSecretKey?: string | undefined;
  alpacaFeed?: AlpacaFeed | undefined;
}

export function createMapper(venue: string, o: MapperOptions, creds: VenueCredentials = {}): FeedMapper {
  switch (venue) {
    case 'coinbase':
      return new CoinbaseMapper(o);
    case 'binance':
      return new BinanceMapper(o);
    case 'kraken':
      return new KrakenMapper(o);
    case 'alpaca': {
      if (creds.alpacaKeyId === undefined || creds.alpacaSecretKey === undefined)
        throw new ConfigError('alpaca needs APCA_API_KEY_ID and APCA_API_SECRET_KEY');
      return new AlpacaMapper({
        ...o,
        feed: creds.alpacaFeed ?? 'iex',
        keyId: creds.alpacaKeyId,
        secretKey: creds.alpacaSecretKey,
      });
    }
    default:
      throw new ConfigError(`unknown venue "${venue}" (one of ${VENUES.join(', ')})`);
  }
}

export const ALPACA_FEEDS = Object.keys(ALPACA_URLS) as AlpacaFeed[];
