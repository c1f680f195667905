/**
 * Every error the pipeline raises says whether retrying can help.
 *
 * - retriable: the condition is transient (a store is down, a timeout). The worker leaves the stream entries
 *   pending and retries with backoff; another consumer may claim them if this one dies.
 * - not retriable: the input itself is wrong (undecodable entry, schema violation, a row the store rejects).
 *   The worker moves the offending tick or entry to the dead-letter stream with this error's message, then
 *   acknowledges it, so one bad tick never blocks the ones behind it.
 */
export class TickstreamError extends Error {
  override name = 'TickstreamError';
  readonly retriable: boolean;

  constructor(message: string, options: { retriable: boolean; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retriable = options.retriable;
  }
}

/** A configuration value is missing or malformed. The message names the variable. */
export class ConfigError extends TickstreamError {
  override name = 'ConfigError';
  constructor(message: string, cause?: unknown) {
    super(message, { retriable: false, cause });
  }
}

/** Bytes that do not decode into the message model (a broken stream entry, a malformed file row). */
export class DecodeError extends TickstreamError {
  override name = 'DecodeError';
  constructor(message: string, cause?: unknown) {
    super(message, { retriable: false, cause });
  }
}

/**
 * A sink could not write. `retriable` decides between "leave pending and retry" and "dead-letter".
 * A sink that knows which ticks of a batch the store refused lists their indexes in `rejected`;
 * otherwise the worker isolates them by splitting the batch.
 */
export class SinkError extends TickstreamError {
  override name = 'SinkError';
  constructor(message: string, options: { retriable: boolean; cause?: unknown }) {
    super(message, options);
  }
}

/** Decide retriability for anything thrown, including driver errors that are not ours. */
export function isRetriable(err: unknown): boolean {
  if (err instanceof TickstreamError) return err.retriable;
  // Unknown failures (socket resets, driver bugs) are treated as transient: retrying is safe because every
  // sink is idempotent, whereas dead-lettering a good tick because of a network blip would be wrong.
  return true;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** A value no store can hold (out of range for a bar, say): a fact about the data, so never retriable. */
export class DataError extends TickstreamError {
  override name = 'DataError';
  constructor(message: string, cause?: unknown) {
    super(message, { retriable: false, cause });
  }
}

const PROGRAM_ERRORS = [RangeError, TypeError, SyntaxError, URIError, EvalError];

/**
 * Whether a failure comes from computing with the data rather than from a store's state: somewhere along its
 * `cause` chain is a plain RangeError, TypeError or the like, with no system or driver code. Retrying such a
 * failure gives the same result, so the worker stops after TICKSTREAM_MAX_DELIVERIES attempts and isolates the
 * ticks at fault; a store outage (socket errors, SQLSTATEs, HTTP statuses) is retried for as long as it lasts.
 */
export function isProgramFault(err: unknown): boolean {
  const seen = new Set<unknown>();
  for (let e: unknown = err; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e);
    if (typeof (e as { code?: unknown }).code === 'string') return false;
    if (PROGRAM_ERRORS.some((c) => e instanceof c)) return true;
  }
  return false;
}
