import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { loadConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { closeRedis, createRedis, deleteByPrefix } from '../shared/redis.ts';
import { nowNs } from '../shared/model.ts';
import { AlpacaMapper } from '../producers/feeds/alpaca.ts';
import { BinanceMapper } from '../producers/feeds/binance.ts';
import { CoinbaseMapper } from '../producers/feeds/coinbase.ts';
import { KrakenMapper } from '../producers/feeds/kraken.ts';
import type { FeedMapper } from '../producers/feeds/mapper.ts';
import { FeedSource } from '../producers/feeds/source.ts';
import { acceptKey } from '../producers/feeds/websocket.ts';
import { Publisher } from '../producers/publisher.ts';
import { measurement, median, repeat, type BenchReport, type Measurement } from './lib.ts';

/**
 * `npm run bench -- feed`: messages/s through each venue mapper (JSON.parse + map + model validation) against
 * JSON.parse alone, and through the whole producer (stand-in WebSocket server on loopback pushing as fast as
 * it can → FeedSource → Publisher → Redis). Target: ≥ 200k messages/s per mapper, the producer ≥ 50% of it.
 * The producer runs as `produce feed` does by default (socket and mapping in a feed worker thread, rows
 * handed to `Publisher.publishEncoded`), and in the same loop with TICKSTREAM_FEED_THREADS=false (all on the
 * main thread) for comparison.
 * Each baseline run alternates with a run of what it is compared with, so that the ratios hold on a loaded machine.
 */
const MESSAGES = 200_000;
const RUNS = 5;
const SYMBOLS = ['BTC-USD', 'ETH-USD', 'SOL-USD', 'XRP-USD', 'ADA-USD', 'DOGE-USD', 'LTC-USD', 'DOT-USD'];

function iso(i: number): string {
  return new Date(Date.UTC(2026, 10, 30, 8) + Math.floor(i / 10))
    .toISOString()
    .replace('Z', `${String(i % 1000).padStart(3, '0')}Z`);
}

/** One venue's message stream: trades and quotes alternating over a few symbols, ids consecutive. */
const VENUES: Record<string, { mapper: () => FeedMapper; message: (i: number) => string }> = {
  coinbase: {
    mapper: () => new CoinbaseMapper({ symbols: SYMBOLS, channels: ['trades', 'quotes'] }),
    message: (i) => {
      const product_id = SYMBOLS[i % SYMBOLS.length]!;
      const n = Math.floor(i / SYMBOLS.length);
      return i % 2 === 0
        ? JSON.stringify({
            type: 'match',
            trade_id: n + 1,
            sequence: 2 * n + 1,
            maker_order_id: 'ac928c66-ca53-498f-9c13-a110027a60e8',
            taker_order_id: '132fb6ae-456b-4654-b4e0-d681ac05cea1',
            time: iso(i),
            product_id,
            size: '0.01234567',
            price: (40_000 + (i % 997) / 100).toFixed(2),
            side: 'sell',
          })
        : JSON.stringify({
            type: 'ticker',
            sequence: 2 * n + 2,
            product_id,
            price: '40000.01',
            open_24h: '39000',
            volume_24h: '1234.5',
            low_24h: '38000',
            high_24h: '41000',
            volume_30d: '99999',
            best_bid: '40000.00',
            best_bid_size: '0.5',
            best_ask: '40000.02',
            best_ask_size: '1.25',
            side: 'buy',
            time: iso(i),
            trade_id: n,
            last_size: '0.01',
          });
    },
  },
  binance: {
    mapper: () =>
      new BinanceMapper({ symbols: SYMBOLS.map((s) => s.replace('-', '')), channels: ['trades', 'quotes'] }),
    message: (i) => {
      const s = SYMBOLS[i % SYMBOLS.length]!.replace('-', '');
      const n = Math.floor(i / SYMBOLS.length);
      const T = 1_796_026_767_000_000 + i;
      return i % 2 === 0
        ? JSON.stringify({
            stream: `${s.toLowerCase()}@trade`,
            data: {
              e: 'trade',
              E: T + 1,
              s,
              t: n + 1,
              p: '91234.56000000',
              q: '0.00100000',
              T,
              m: true,
              M: true,
            },
          })
        : JSON.stringify({
            stream: `${s.toLowerCase()}@bookTicker`,
            data: { u: i, s, b: '91234.56000000', B: '31.21000000', a: '91234.57000000', A: '40.66000000' },
          });
    },
  },
  kraken: {
    mapper: () =>
      new KrakenMapper({ symbols: SYMBOLS.map((s) => s.replace('-', '/')), channels: ['trades', 'quotes'] }),
    message: (i) => {
      const symbol = SYMBOLS[i % SYMBOLS.length]!.replace('-', '/');
      const n = Math.floor(i / SYMBOLS.length);
      return i % 2 === 0
        ? JSON.stringify({
            channel: 'trade',
            type: 'update',
            data: [
              {
                symbol,
                side: 'buy',
                price: 91234.5,
                qty: 0.00125,
                ord_type: 'market',
                trade_id: n + 1,
                timestamp: iso(i),
              },
            ],
          })
        : JSON.stringify({
            channel: 'ticker',
            type: 'update',
            data: [
              {
                symbol,
                bid: 91234.4,
                bid_qty: 0.83,
                ask: 91234.5 + (i % 7),
                ask_qty: 1.25,
                last: 91234.5,
                volume: 997.9,
                vwap: 91000.1,
                low: 89979,
                high: 92285,
                change: -17,
                change_pct: -0.02,
                timestamp: iso(i),
              },
            ],
          });
    },
  },
  alpaca: {
    mapper: () =>
      new AlpacaMapper({
        symbols: ['AAPL', 'MSFT'],
        channels: ['trades', 'quotes'],
        feed: 'iex',
        keyId: 'k',
        secretKey: 's',
      }),
    message: (i) =>
      i % 2 === 0
        ? JSON.stringify([
            {
              T: 't',
              i: i + 1,
              S: i % 4 === 0 ? 'AAPL' : 'MSFT',
              x: 'V',
              p: 226.55,
              s: 100,
              t: iso(i),
              c: ['@'],
              z: 'C',
            },
          ])
        : JSON.stringify([
            {
              T: 'q',
              S: i % 4 === 1 ? 'AAPL' : 'MSFT',
              bx: 'V',
              bp: 226.54,
              bs: 2,
              ax: 'V',
              ap: 226.56 + (i % 5) / 100,
              as: 4,
              t: iso(i),
              c: ['R'],
              z: 'C',
            },
          ]),
  },
};

/**
 * The frames of `messages` as a venue's server writes them (RFC 6455 section 5.2: FIN + text opcode, unmasked,
 * 7/16/64-bit length), back to back in one buffer.
 */
function preframed(messages: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of messages) {
    const payload = Buffer.from(m, 'utf8');
    const n = payload.length;
    const head = Buffer.alloc(n < 126 ? 2 : n < 65_536 ? 4 : 10);
    head[0] = 0x81;
    if (n < 126) head[1] = n;
    else if (n < 65_536) {
      head[1] = 126;
      head.writeUInt16BE(n, 2);
    } else {
      head[1] = 127;
      head.writeBigUInt64BE(BigInt(n), 2);
    }
    parts.push(head, payload);
  }
  return Buffer.concat(parts);
}

/**
 * A stand-in venue that pushes pre-built frames as fast as the socket takes them. Hand-rolled rather than a
 * `ws` server on purpose: ws frames and writes each message on its own (a writev system call per message),
 * which on these 2 shared cores cost as much CPU as the producer under test, so the benchmark measured the
 * stand-in as much as the producer. A venue sends frames back to back in full TCP segments; writing pre-built
 * frames in 1 MiB slices does the same at next to no CPU, so the figure is the producer's own. ws offers no
 * public API to write pre-built frames, and the handshake (RFC 6455 section 4.2.2) is a few lines.
 */
class BulkStandIn {
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(frames: Buffer): Promise<BulkStandIn> {
    const server = createServer((_req, res) => res.writeHead(426).end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const standIn = new BulkStandIn(server, (server.address() as { port: number }).port);
    server.on('upgrade', (req, socket: Socket) => {
      standIn.sockets.add(socket);
      socket.on('close', () => standIn.sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      const accept = acceptKey(String(req.headers['sec-websocket-key']));
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      // The client's frames are pings and, at the end, its close frame: answer that one and hang up.
      socket.on('data', (chunk: Buffer) => {
        if (hasCloseFrame(chunk)) socket.end(Buffer.from([0x88, 0]));
      });
      let offset = 0;
      const push = () => {
        while (offset < frames.length && !socket.destroyed) {
          const slice = frames.subarray(offset, offset + (1 << 20));
          offset += slice.length;
          if (!socket.write(slice)) return void socket.once('drain', push);
        }
      };
      push();
    });
    return standIn;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** Whether a chunk of client frames (masked, RFC 6455 section 5.2) holds a close frame. */
function hasCloseFrame(chunk: Buffer): boolean {
  let i = 0;
  while (i + 2 <= chunk.length) {
    if ((chunk[i]! & 0x0f) === 0x8) return true;
    const len7 = chunk[i + 1]! & 0x7f;
    const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
    const len =
      len7 === 126 ? chunk.readUInt16BE(i + 2) : len7 === 127 ? Number(chunk.readBigUInt64BE(i + 2)) : len7;
    i += 2 + ext + 4 + len;
  }
  return false;
}

function parseRate(messages: readonly string[]): number {
  const t0 = performance.now();
  let keep = 0;
  for (const m of messages) keep += (JSON.parse(m) as unknown) === null ? 0 : 1;
  if (keep !== messages.length) throw new Error('parse');
  return messagesPerSecond(messages.length, t0);
}

function mapRate(venue: string, mapper: FeedMapper, messages: readonly string[]): number {
  const rx = nowNs();
  let ticks = 0;
  const t0 = performance.now();
  for (const m of messages) ticks += mapper.map(JSON.parse(m), rx).ticks.length;
  const rate = messagesPerSecond(messages.length, t0);
  if (ticks !== messages.length) throw new Error(`${venue}: ${ticks} ticks from ${messages.length} messages`);
  return rate;
}

function messagesPerSecond(n: number, started: number): number {
  return n / ((performance.now() - started) / 1000);
}

export default async function bench(): Promise<BenchReport> {
  const measurements: Measurement[] = [];
  const summary: Record<string, string | number> = {};
  for (const [venue, v] of Object.entries(VENUES)) {
    const messages = Array.from({ length: MESSAGES }, (_, i) => v.message(i));
    const parseOnly: number[] = [];
    const mapped: number[] = [];
    // The baseline and the mapping alternate, so that on a shared machine both see the same load.
    for (let r = 0; r < RUNS; r++) {
      parseOnly.push(parseRate(messages));
      mapped.push(mapRate(venue, v.mapper(), messages));
    }
    measurements.push(measurement(`${venue}: JSON.parse alone (baseline)`, 'msg/s', parseOnly));
    measurements.push(measurement(`${venue}: JSON.parse + map + validate`, 'msg/s', mapped));
    summary[`${venue} mapping vs JSON.parse`] = `${Math.round((median(mapped) / median(parseOnly)) * 100)}%`;
    summary[`${venue} mapping (target >= 200k msg/s)`] = Math.round(median(mapped));
  }

  // The whole producer: a loopback stand-in pushing Binance trades as fast as the socket takes them.
  const config = loadConfig({
    env: { ...process.env, TICKSTREAM_STREAM_PREFIX: `bench-feed-${process.pid}` },
  });
  const redis = createRedis(config, { log: silentLogger() });
  const total = MESSAGES;
  const messages = Array.from({ length: total }, (_, i) => VENUES.binance!.message(2 * i));
  const frames = preframed(messages);
  const besideProducer: number[] = [];
  const inThread: number[] = [];
  const producerRun = async (threads: boolean): Promise<number> => {
    const standIn = await BulkStandIn.start(frames);
    const port = standIn.port;
    const source = new FeedSource({
      mapper: new BinanceMapper({
        symbols: SYMBOLS.map((s) => s.replace('-', '')),
        channels: ['trades'],
        url: `ws://127.0.0.1:${port}`,
      }),
      settings: { ...config.feed, minConnectIntervalMs: 0, minSendIntervalMs: 0, threads },
      log: silentLogger(),
    });
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: { ...config.producer, highWater: 0 },
      log: silentLogger(),
    });
    // Timed from the first batch on, which is not counted: connecting, and a worker's start (loading its
    // modules, through tsx when run from the sources), are not the throughput measured.
    let t0 = 0;
    let n = 0;
    let counted = 0;
    const got = (k: number): boolean => {
      if (t0 === 0) t0 = performance.now();
      else counted += k;
      n += k;
      return n >= total;
    };
    if (source.threaded) {
      for await (const batch of source.encoded(config.streams.shards)) {
        await publisher.publishEncoded(batch);
        if (got(batch.rows.length)) break;
      }
    } else {
      for await (const batch of source.batches()) {
        await publisher.publish(batch);
        if (got(batch.length)) break;
      }
    }
    await publisher.flush();
    const rate = messagesPerSecond(counted, t0);
    await source.close();
    await standIn.close();
    await deleteByPrefix(redis, config.streams.prefix);
    return rate;
  };
  const producer = await repeat(RUNS, async () => {
    // The mapping of the very messages the stand-in sends, measured just before, under the same load.
    besideProducer.push(mapRate('binance', VENUES.binance!.mapper(), messages));
    inThread.push(await producerRun(false));
    return producerRun(true);
  });
  await closeRedis(redis);
  measurements.push(
    measurement(
      'binance trades: JSON.parse + map + validate (beside each producer run)',
      'msg/s',
      besideProducer,
    ),
    measurement(
      'binance trades: stand-in → FeedSource (feed worker thread) → Publisher → Redis',
      'msg/s',
      producer,
    ),
    measurement(
      'binance trades: stand-in → FeedSource (main thread, TICKSTREAM_FEED_THREADS=false) → Publisher → Redis',
      'msg/s',
      inThread,
    ),
  );
  summary['producer vs binance mapping (target >= 50%)'] =
    `${Math.round((median(producer) / median(besideProducer)) * 100)}%`;
  summary['main-thread producer vs binance mapping'] =
    `${Math.round((median(inThread) / median(besideProducer)) * 100)}%`;
  return {
    name: 'feed',
    measurements,
    summary,
    notes: [
      `${MESSAGES.toLocaleString('en-US')} messages per run, ${RUNS} runs, medians (every run listed)`,
      'the producer run includes the stand-in (in process, writing pre-built frames in bulk: next to no CPU) and Redis on the same 2 cores',
    ],
  };
}
