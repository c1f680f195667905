import { createHash } from 'node:crypto';
import { FRAME_VERSION } from '../shared/codec.ts';
import { DecodeError } from '../shared/errors.ts';
import { batch, orThrow, Script, type Command, type RedisClient } from '../shared/redis.ts';
import { deadLetterBlobKey, deadLetterKey, retryStreamKey, type StreamLayout } from '../shared/streams.ts';

/**
 * The dead-letter stream: what the workers could not deliver, with the reason (ADR 0006).
 *
 * Entry fields: reason, stream, id, group, consumer, deliveries, kind ("entry" | "tick" | "kafka"), then
 * - kind "entry": the original entry's fields as they were, byte for byte: `nfields` and `f0`, `f1`, … (names
 *   and values alternating, as XADD took them), or, for an entry larger than DLQ_INLINE_MAX_BYTES, `blob` (a
 *   key holding those fields once however many groups dead-letter the entry), `bytes` and `nfields`.
 *   Letters written before this format carry `fields` (a JSON array of strings) instead; both are read.
 * - kind "tick": `index` and `tick` (one tick tuple of a frame, JSON);
 * - kind "kafka": the Kafka message (`topic`, `partition`, `offset`, `key`, `value`) the bridge could not map.
 * Requeueing puts the original on the retry stream of the group that dead-lettered it, which only that group
 * reads; a letter without a group (written by older versions) goes back to its origin stream.
 */
export interface DeadLetter {
  dlqId: string;
  reason: string;
  stream: string;
  id: string;
  group: string;
  consumer: string;
  deliveries: number;
  kind: 'entry' | 'tick' | 'kafka';
  index?: number;
  tick?: string;
  /** The entry's fields as text (invalid UTF-8 shown as U+FFFD: look at `raw` for the bytes). */
  fields?: string[];
  /** Whether some field of the entry is not valid UTF-8. */
  invalidUtf8?: boolean;
  /** Size of the entry's fields in bytes. */
  bytes?: number;
  /** Number of fields (names and values) of the entry. */
  nfields?: number;
  /** Key of the shared copy of a large entry. */
  blob?: string;
  /** The entry's original fields, exact (absent for a blob until it is loaded for a requeue). */
  raw?: Buffer[];
}

/** Entries larger than this are stored once in a blob key rather than copied into each group's letter. */
export const DLQ_INLINE_MAX_BYTES = 64 * 1024;

/** What the worker knows of a letter it is about to write. */
export interface NewDeadLetter {
  reason: string;
  stream: string;
  id: string;
  group: string;
  consumer: string;
  deliveries: number;
  /** The whole entry, as read from Redis. */
  entry?: readonly Buffer[];
  /** One tick of a frame. */
  tick?: { index: number; raw: string };
}

// Shared by every group that dead-letters the same large entry: stored on first use, counted, deleted with
// the last letter that refers to it. One key per script call, so it also runs under Cluster.
const storeBlob = new Script(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 1, #ARGV do redis.call('HSET', KEYS[1], 'f' .. (i - 1), ARGV[i]) end
end
return redis.call('HINCRBY', KEYS[1], 'refs', 1)
`);
const releaseBlob = new Script(`
local n = redis.call('HINCRBY', KEYS[1], 'refs', -1)
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
`);

/**
 * XADD commands for dead letters, after storing the blobs of large entries. A crash between the two leaves
 * a blob with one reference too many (kept until deleted by hand), never a letter without its payload.
 */
export async function deadLetterCommands(
  redis: RedisClient,
  layout: StreamLayout,
  letters: readonly NewDeadLetter[],
): Promise<Command[]> {
  const blobs: [string, ...Buffer[]][] = [];
  const commands = letters.map((d): Command => {
    const fields: (string | Buffer)[] = [
      'reason',
      d.reason,
      'stream',
      d.stream,
      'id',
      d.id,
      'group',
      d.group,
      'consumer',
      d.consumer,
      'deliveries',
      String(d.deliveries),
    ];
    if (d.tick !== undefined) {
      fields.push('kind', 'tick', 'index', String(d.tick.index), 'tick', d.tick.raw);
    } else {
      const raw = d.entry ?? [];
      const bytes = raw.reduce((n, b) => n + b.length, 0);
      fields.push('kind', 'entry', 'nfields', String(raw.length));
      if (bytes > DLQ_INLINE_MAX_BYTES) {
        const key = deadLetterBlobKey(layout, digestOf(raw));
        blobs.push([key, ...raw]);
        fields.push('blob', key, 'bytes', String(bytes));
      } else {
        raw.forEach((b, i) => fields.push(`f${i}`, b));
      }
    }
    return ['XADD', deadLetterKey(layout), '*', ...fields];
  });
  if (blobs.length > 0) orThrow(await storeBlob.runMany(redis, blobs));
  return commands;
}

function digestOf(raw: readonly Buffer[]): string {
  const h = createHash('sha256');
  for (const b of raw) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    h.update(len).update(b);
  }
  return h.digest('hex');
}

type RawEntry = [Buffer, Buffer[]];

/** Dead letters oldest first, `count` at most (after the group filter), read in pages. */
export async function listDeadLetters(
  redis: RedisClient,
  layout: StreamLayout,
  options: { count?: number; group?: string } = {},
): Promise<DeadLetter[]> {
  const count = options.count ?? 100;
  const out: DeadLetter[] = [];
  for await (const page of pages(redis, deadLetterKey(layout))) {
    for (const [id, fields] of page) {
      const letter = toLetter(id.toString(), fields);
      if (options.group !== undefined && letter.group !== options.group) continue;
      out.push(letter);
      if (out.length >= count) return out;
    }
  }
  return out;
}

async function* pages(redis: RedisClient, key: string, size = 500): AsyncGenerator<RawEntry[]> {
  let cursor = '-';
  for (;;) {
    const page = (await redis.callBuffer('XRANGE', key, cursor, '+', 'COUNT', String(size))) as RawEntry[];
    if (page.length > 0) yield page;
    if (page.length < size) return;
    cursor = `(${page[page.length - 1]![0].toString()}`;
  }
}

/** Count of dead letters per group, for `tickstream status`. */
export async function countDeadLetters(
  redis: RedisClient,
  layout: StreamLayout,
): Promise<{ total: number; byGroup: Record<string, number> }> {
  const key = deadLetterKey(layout);
  const total = await redis.xlen(key);
  const byGroup: Record<string, number> = {};
  // The stream is small in a healthy system; large payloads live in blobs, not here.
  for await (const page of pages(redis, key, 1000)) {
    for (const [, fields] of page) {
      const group = fieldOf(fields, 'group')?.toString() || '?';
      byGroup[group] = (byGroup[group] ?? 0) + 1;
    }
  }
  return { total, byGroup };
}

export interface RequeueResult {
  requeued: number;
  missing: string[];
  /** Kafka letters (no stream to go back to) and letters of another group than the one asked for. */
  skipped: DeadLetter[];
}

/**
 * Put dead letters back, each on the retry stream of the group that failed it, and remove them from the
 * dead-letter stream. `group` restricts both `--all` and explicit ids to that group's letters.
 */
export async function requeueDeadLetters(
  redis: RedisClient,
  layout: StreamLayout,
  select: { ids?: readonly string[]; all?: boolean; group?: string },
): Promise<RequeueResult> {
  const key = deadLetterKey(layout);
  let letters: DeadLetter[];
  const missing: string[] = [];
  if (select.all === true) {
    letters = await listDeadLetters(redis, layout, {
      count: Number.MAX_SAFE_INTEGER,
      ...(select.group !== undefined ? { group: select.group } : {}),
    });
  } else {
    letters = [];
    for (const id of select.ids ?? []) {
      const found = (await redis.callBuffer('XRANGE', key, id, id)) as RawEntry[];
      if (found[0] === undefined) missing.push(id);
      else letters.push(toLetter(found[0][0].toString(), found[0][1]));
    }
  }
  let requeued = 0;
  const skipped: DeadLetter[] = [];
  for (const letter of letters) {
    // A Kafka message that did not map to a tick has no stream to go back to: fix it at the source (or the
    // mapping) and produce it to the topic again.
    if (letter.kind === 'kafka' || (select.group !== undefined && letter.group !== select.group)) {
      skipped.push(letter);
      continue;
    }
    const target = letter.group === '' ? letter.stream : retryStreamKey(layout, letter.group);
    // Requeue first, delete second: a crash in between requeues twice, which idempotent sinks absorb.
    orThrow(await batch(redis, [['XADD', target, '*', ...(await originalFields(redis, letter))]]));
    await redis.xdel(key, letter.dlqId);
    if (letter.blob !== undefined) orThrow(await releaseBlob.runMany(redis, [[letter.blob]]));
    requeued++;
  }
  return { requeued, missing, skipped };
}

async function originalFields(redis: RedisClient, letter: DeadLetter): Promise<(string | Buffer)[]> {
  if (letter.kind === 'tick') {
    if (letter.tick === undefined) throw new DecodeError(`dead letter ${letter.dlqId} has no tick field`);
    return ['v', FRAME_VERSION, 'n', '1', 'd', `[${letter.tick}]`];
  }
  if (letter.raw !== undefined) return letter.raw;
  if (letter.blob === undefined) throw new DecodeError(`dead letter ${letter.dlqId} has no fields`);
  const stored = (await redis.callBuffer('HGETALL', letter.blob)) as Buffer[];
  const blob = new Map<string, Buffer>();
  for (let i = 0; i + 1 < stored.length; i += 2) blob.set(stored[i]!.toString(), stored[i + 1]!);
  const raw: Buffer[] = [];
  for (let i = 0; blob.has(`f${i}`); i++) raw.push(blob.get(`f${i}`)!);
  if (raw.length === 0 || raw.length !== letter.nfields) {
    throw new DecodeError(
      `dead letter ${letter.dlqId}: its payload ${letter.blob} is missing or incomplete (${raw.length} fields)`,
    );
  }
  return raw;
}

const lossy = (b: Buffer) => b.toString('utf8');
const strict = new TextDecoder('utf-8', { fatal: true });
function isUtf8(b: Buffer): boolean {
  try {
    strict.decode(b);
    return true;
  } catch {
    return false;
  }
}

function toLetter(dlqId: string, fields: readonly Buffer[]): DeadLetter {
  const get = (k: string) => fieldOf(fields, k)?.toString() ?? '';
  const rawKind = get('kind');
  const kind = rawKind === 'tick' || rawKind === 'kafka' ? rawKind : 'entry';
  const letter: DeadLetter = {
    dlqId,
    reason: get('reason'),
    stream: get('stream'),
    id: get('id'),
    group: get('group'),
    consumer: get('consumer'),
    deliveries: Number(get('deliveries') || 0),
    kind,
  };
  if (kind === 'tick') {
    letter.index = Number(get('index'));
    letter.tick = get('tick');
  } else if (kind === 'entry') {
    const nfields = fieldOf(fields, 'nfields');
    const blob = fieldOf(fields, 'blob');
    if (blob !== undefined) {
      letter.blob = blob.toString();
      letter.bytes = Number(get('bytes'));
      letter.nfields = Number(get('nfields'));
    } else if (nfields !== undefined) {
      const raw: Buffer[] = [];
      for (let i = 0; i < Number(nfields.toString()); i++)
        raw.push(fieldOf(fields, `f${i}`) ?? Buffer.alloc(0));
      letter.raw = raw;
      letter.nfields = raw.length;
      letter.fields = raw.map(lossy);
      letter.invalidUtf8 = !raw.every(isUtf8);
      letter.bytes = raw.reduce((n, b) => n + b.length, 0);
    } else {
      try {
        letter.fields = JSON.parse(get('fields')) as string[];
      } catch {
        letter.fields = [];
      }
      letter.raw = letter.fields.map((f) => Buffer.from(f));
      letter.nfields = letter.raw.length;
    }
  }
  return letter;
}

function fieldOf(fields: readonly Buffer[], name: string): Buffer | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]!.toString() === name) return fields[i + 1];
  return undefined;
}
