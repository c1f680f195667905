import { describe, expect, it } from 'vitest';
import { decodeEntryFields } from '../../shared/codec.ts';
import { DecodeError } from '../../shared/errors.ts';

describe('decodeEntryFields (stream entry bytes → text, strictly)', () => {
  it('decodes valid UTF-8, multi-byte characters included', () => {
    const raw = ['v', '1', 'd', '["Zürich €"]'].map((s) => Buffer.from(s));
    expect(decodeEntryFields(raw)).toEqual(['v', '1', 'd', '["Zürich €"]']);
  });

  it('refuses invalid bytes with the field named, never rewriting them to U+FFFD', () => {
    const raw = [Buffer.from('v'), Buffer.from('1'), Buffer.from('d'), Buffer.from([0x50, 0xff, 0x5a])];
    expect(() => decodeEntryFields(raw)).toThrow(DecodeError);
    expect(() => decodeEntryFields(raw)).toThrow('field "d" is not valid UTF-8 (3 bytes)');
  });

  it('names a field name that is not valid UTF-8 by its position, and refuses truncated sequences', () => {
    expect(() => decodeEntryFields([Buffer.from([0xc3])])).toThrow(
      'name of field 0 is not valid UTF-8 (1 bytes)',
    );
    expect(() => decodeEntryFields([Buffer.from('d'), Buffer.from([0xe2, 0x82])])).toThrow(
      'field "d" is not valid UTF-8 (2 bytes)',
    );
  });
});
