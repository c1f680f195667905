import { FRAME_VERSION } from '../shared/codec.ts';
import { DecodeError } from '../shared/errors.ts';
import type { RedisClient } from '../shared/redis.ts';
import { deadLetterKey, type StreamLayout } from '../shared/streams.ts';

/**
 * The dead-letter stream: what the workers could not deliver, with the reason.
 *
 * Entry fields: reason, stream, id, group, consumer, deliveries, kind ("entry" | "tick" | "kafka"), and either
 * `fields` (the original entry's fields as a JSON array), `index` + `tick` (one tick tuple of a frame), or
 * the Kafka message (`topic`, `partition`, `offset`, `key`, `value`) that the bridge could not map.
 * Requeueing puts the original back on its origin stream, where every group reads it again; sinks are
 * idempotent, so groups that had stored it already store nothing new.
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
  fields?: string[];
}

export async function listDeadLetters(
  redis: RedisClient,
  layout: StreamLayout,
  options: { count?: number; group?: string } = {},
): Promise<DeadLetter[]> {
  const raw = (await redis.call(
    'XRANGE',
    deadLetterKey(layout),
    '-',
    '+',
    'COUNT',
    String(options.count ?? 100),
  )) as [string, string[]][];
  const letters = raw.map(([id, fields]) => toLetter(id, fields));
  return options.group === undefined ? letters : letters.filter((l) => l.group === options.group);
}

/** Count of dead letters per group and reason prefix, for `tickstream status`. */
export async function countDeadLetters(
  redis: RedisClient,
  layout: StreamLayout,
): Promise<{ total: number; byGroup: Record<string, number> }> {
  const key = deadLetterKey(layout);
  const total = await redis.xlen(key);
  const byGroup: Record<string, number> = {};
  let cursor = '-';
  // Walk in pages; the stream is small in a healthy system.
  for (;;) {
    const page = (await redis.call('XRANGE', key, cursor, '+', 'COUNT', '1000')) as [string, string[]][];
    for (const [, fields] of page) {
      const group = fieldOf(fields, 'group') ?? '?';
      byGroup[group] = (byGroup[group] ?? 0) + 1;
    }
    if (page.length < 1000) break;
    cursor = `(${page[page.length - 1]![0]}`;
  }
  return { total, byGroup };
}

/** Put dead letters back on their origin streams and remove them from the dead-letter stream. */
export async function requeueDeadLetters(
  redis: RedisClient,
  layout: StreamLayout,
  select: { ids?: readonly string[]; all?: boolean; group?: string },
): Promise<{ requeued: number; missing: string[]; skipped: DeadLetter[] }> {
  const key = deadLetterKey(layout);
  let letters: DeadLetter[];
  const missing: string[] = [];
  if (select.all === true) {
    letters = await listDeadLetters(redis, layout, {
      count: 1_000_000,
      ...(select.group !== undefined ? { group: select.group } : {}),
    });
  } else {
    letters = [];
    for (const id of select.ids ?? []) {
      const found = (await redis.call('XRANGE', key, id, id)) as [string, string[]][];
      if (found[0] === undefined) missing.push(id);
      else letters.push(toLetter(found[0][0], found[0][1]));
    }
  }
  let requeued = 0;
  const skipped: DeadLetter[] = [];
  for (const letter of letters) {
    // A Kafka message that did not map to a tick has no stream to go back to: fix it at the source (or the
    // mapping) and produce it to the topic again.
    if (letter.kind === 'kafka') {
      skipped.push(letter);
      continue;
    }
    // Requeue first, delete second: a crash in between requeues twice, which idempotent sinks absorb.
    await redis.xadd(letter.stream, '*', ...originalFields(letter));
    await redis.xdel(key, letter.dlqId);
    requeued++;
  }
  return { requeued, missing, skipped };
}

function originalFields(letter: DeadLetter): string[] {
  if (letter.kind === 'tick') {
    if (letter.tick === undefined) throw new DecodeError(`dead letter ${letter.dlqId} has no tick field`);
    return ['v', FRAME_VERSION, 'n', '1', 'd', `[${letter.tick}]`];
  }
  if (letter.fields === undefined) throw new DecodeError(`dead letter ${letter.dlqId} has no fields`);
  return letter.fields;
}

function toLetter(dlqId: string, fields: string[]): DeadLetter {
  const get = (k: string) => fieldOf(fields, k) ?? '';
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
    try {
      letter.fields = JSON.parse(get('fields')) as string[];
    } catch {
      letter.fields = [];
    }
  }
  return letter;
}

function fieldOf(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}
