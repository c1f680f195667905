import { describe, expect, it } from 'vitest';
import { clientFrame, FrameReader, WebSocketProtocolError } from '../../producers/feeds/websocket.ts';

// FrameReader (the feed's WebSocket client's frame parser) on bytes built here by RFC 6455 section 5.2;
// test/int/websocket.int.test.ts runs the client against ws's server and against servers that break the rules.

/** A server frame: unmasked unless `mask` says otherwise. */
function frame(
  opcode: number,
  payload: Buffer | string,
  o: { fin?: boolean; rsv?: number; mask?: boolean } = {},
) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const n = body.length;
  const head = n < 126 ? 2 : n < 65_536 ? 4 : 10;
  const out = Buffer.alloc(head + (o.mask === true ? 4 : 0) + n);
  out[0] = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  const maskBit = o.mask === true ? 0x80 : 0;
  if (n < 126) out[1] = maskBit | n;
  else if (n < 65_536) {
    out[1] = maskBit | 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = maskBit | 127;
    out.writeBigUInt64BE(BigInt(n), 2);
  }
  body.copy(out, head + (o.mask === true ? 4 : 0));
  return out;
}

interface Seen {
  messages: string[];
  controls: [number, string][];
}

function reader(maxPayload = 1 << 20): { r: FrameReader; seen: Seen } {
  const seen: Seen = { messages: [], controls: [] };
  const r = new FrameReader(maxPayload, {
    message: (data, start, end) => seen.messages.push(data.toString('utf8', start, end)),
    control: (op, payload) => seen.controls.push([op, payload.toString('hex')]),
  });
  return { r, seen };
}

const text = (s: string, o?: { fin?: boolean }) => frame(0x1, s, o);
const mid = 'm'.repeat(300); // a 16-bit length
const big = 'b'.repeat(70_000); // a 64-bit length

describe('FrameReader', () => {
  it('reads every frame of one chunk, with 7-, 16- and 64-bit lengths, binary as well as text', () => {
    const { r, seen } = reader();
    r.push(Buffer.concat([text('{"a":1}'), text(mid), frame(0x2, 'bin'), text(big), text('')]));
    expect(seen.messages).toEqual(['{"a":1}', mid, 'bin', big, '']);
  });

  it('reads the same messages however the bytes are split across reads, down to one byte a read', () => {
    const bytes = Buffer.concat([
      text('first'),
      frame(0x9, 'p'),
      text(mid),
      text('x', { fin: false }),
      frame(0xa, 'q'),
      frame(0x0, 'y'),
      text(big),
    ]);
    for (const size of [1, 2, 3, 7, 126, 1000, 65_536]) {
      const { r, seen } = reader();
      for (let i = 0; i < bytes.length; i += size) r.push(bytes.subarray(i, i + size));
      expect(seen.messages, `reads of ${size} bytes`).toEqual(['first', mid, 'xy', big]);
      expect(seen.controls).toEqual([
        [0x9, Buffer.from('p').toString('hex')],
        [0xa, Buffer.from('q').toString('hex')],
      ]);
    }
  });

  it('joins a fragmented message, with control frames between its fragments handled as they come', () => {
    const { r, seen } = reader();
    r.push(
      Buffer.concat([
        text('{"a":', { fin: false }),
        frame(0x9, 'hb'),
        frame(0x0, '1', { fin: false }),
        frame(0xa, ''),
        frame(0x0, '}'),
      ]),
    );
    expect(seen.messages).toEqual(['{"a":1}']);
    expect(seen.controls.map(([op]) => op)).toEqual([0x9, 0xa]);
  });

  it('hands a close frame over with its code and reason', () => {
    const { r, seen } = reader();
    const payload = Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]);
    r.push(frame(0x8, payload));
    expect(seen.controls).toEqual([[0x8, payload.toString('hex')]]);
  });

  const violations: [string, Buffer, number, RegExp][] = [
    ['a masked server frame', frame(0x1, 'x', { mask: true }), 1002, /masked/],
    ['reserved bits (compression nobody agreed to)', frame(0x1, 'x', { rsv: 4 }), 1002, /reserved bits/],
    ['an unknown data opcode', frame(0x3, 'x'), 1002, /unknown data opcode 3/],
    ['an unknown control opcode', frame(0xb, 'x'), 1002, /unknown control opcode 11/],
    ['a fragmented control frame', frame(0x9, 'x', { fin: false }), 1002, /fragmented control/],
    ['a control frame over 125 bytes', frame(0x9, 'p'.repeat(126)), 1002, /longer than 125/],
    ['a continuation with nothing to continue', frame(0x0, 'x'), 1002, /continuation/],
    [
      'a new message inside a fragmented one',
      Buffer.concat([text('a', { fin: false }), text('b')]),
      1002,
      /before the fragmented one ended/,
    ],
    ['a message over the payload limit', text('z'.repeat(101)), 1009, /larger than 100 bytes/],
    [
      'fragments together over the payload limit',
      Buffer.concat([text('z'.repeat(60), { fin: false }), frame(0x0, 'z'.repeat(60))]),
      1009,
      /larger than 100/,
    ],
  ];
  it.each(violations)('refuses %s with close code %i', (_what, bytes, code, message) => {
    const { r, seen } = reader(100);
    let error: unknown;
    try {
      r.push(bytes);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(WebSocketProtocolError);
    expect(error).toMatchObject({ code, message: expect.stringMatching(message) });
    expect(seen.messages).toEqual([]);
  });

  it('refuses a frame header announcing more than the payload limit before its bytes arrive', () => {
    const { r } = reader(100);
    const head = Buffer.alloc(10);
    head[0] = 0x81;
    head[1] = 127;
    head.writeBigUInt64BE(1n << 40n, 2);
    expect(() => r.push(head)).toThrow(/larger than 100 bytes/);
    head.writeBigUInt64BE(1n << 60n, 2);
    expect(() => reader(100).r.push(head)).toThrow(/frame length out of range/);
  });
});

describe('clientFrame', () => {
  it('masks what it sends, and the mask undoes to the payload (RFC 6455 section 5.3)', () => {
    for (const payload of ['', 'subscribe', mid, big]) {
      const f = clientFrame(0x1, Buffer.from(payload));
      expect(f[0]).toBe(0x81);
      expect(f[1]! & 0x80).toBe(0x80);
      const len7 = f[1]! & 0x7f;
      const head = len7 === 126 ? 4 : len7 === 127 ? 10 : 2;
      const length = len7 === 126 ? f.readUInt16BE(2) : len7 === 127 ? Number(f.readBigUInt64BE(2)) : len7;
      expect(length).toBe(Buffer.byteLength(payload));
      const mask = f.subarray(head, head + 4);
      const body = Buffer.from(f.subarray(head + 4).map((b, i) => b ^ mask[i & 3]!));
      expect(body.toString()).toBe(payload);
    }
  });
});
