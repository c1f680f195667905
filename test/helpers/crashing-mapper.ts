import { NONE, type FeedMapper, type MapResult, type MapperSpec } from '../../producers/feeds/mapper.ts';

/**
 * A mapper with a bug: a message `{"crash": true}` makes `map` throw a plain Error (not a MappingError),
 * which nothing in the feed catches. In a feed worker that ends the thread; the tests check it ends the
 * iteration with an error. Everything else is ignored. It has a `spec`, so it runs in a worker.
 */
export class CrashingMapper implements FeedMapper {
  readonly venue = 'crashing';

  constructor(private readonly o: { url: string }) {}

  get spec(): MapperSpec {
    return { module: import.meta.url, name: 'CrashingMapper', options: this.o };
  }

  url(): string {
    return this.o.url;
  }

  onOpen(): string[] {
    return [];
  }

  onClose(): string[] {
    return [];
  }

  map(message: unknown): MapResult {
    if ((message as { crash?: boolean }).crash === true) throw new Error('a bug in the mapper');
    return NONE;
  }
}
