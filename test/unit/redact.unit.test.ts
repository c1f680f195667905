import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/logger.ts';
import { redactError, redactText } from '../../shared/redact.ts';

/** A logger writing JSON lines into a string, as the process logger writes them to stderr. */
function capture(level = 'info'): { log: ReturnType<typeof createLogger>; lines: () => string[] } {
  let out = '';
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  });
  const log = createLogger({ log: { level: level as 'info', format: 'json' } }, dest);
  return { log, lines: () => out.split('\n').filter((l) => l !== '') };
}

/** An error shaped like ioredis' ReplyError for a refused AUTH. */
function authError(...args: string[]): Error {
  return Object.assign(new Error('WRONGPASS invalid username-password pair or user is disabled.'), {
    name: 'ReplyError',
    command: { name: 'auth', args },
  });
}

describe('redaction', () => {
  it('masks URL userinfo and key=value secrets in text', () => {
    expect(redactText('redis://user:S3cret@h:6379/0')).toBe('redis://user:***@h:6379/0');
    expect(redactText('connect to rediss://:S3cret@h:6380 failed')).toBe(
      'connect to rediss://:***@h:6380 failed',
    );
    expect(redactText('postgres://S3cret@db/x')).toBe('postgres://***@db/x');
    expect(redactText('http::addr=h:9000;username=admin;password=S3cret;')).toBe(
      'http::addr=h:9000;username=admin;password=***;',
    );
    expect(redactText('token=abc.def&x=1')).toBe('token=***&x=1');
    expect(redactText('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    // Unencoded '/', '@' and ':' in a password: everything up to the last '@' before the host is masked.
    expect(redactText('REDIS_URL=redis://u:pa/ss@host:6379 is invalid')).toBe(
      'REDIS_URL=redis://u:***@host:6379 is invalid',
    );
    expect(redactText('redis://u:p@ss:w/d@host:6379/0')).toBe('redis://u:***@host:6379/0');
    expect(redactText('postgres://pa/ss@db/x')).toBe('postgres://***@db/x');
  });

  it('masks the arguments of AUTH, HELLO ... AUTH, and CONFIG SET', () => {
    expect(redactError(authError('S3cret'))).toMatchObject({ command: { name: 'auth', args: ['***'] } });
    const hello = Object.assign(new Error('WRONGPASS'), {
      command: { name: 'hello', args: ['3', 'AUTH', 'default', 'S3cret', 'SETNAME', 'x'] },
    });
    expect(JSON.stringify(redactError(hello))).not.toContain('S3cret');
    expect(redactError(hello)).toMatchObject({
      command: { args: ['3', 'AUTH', '***', '***', '***', '***'] },
    });
    const config = Object.assign(new Error('ERR'), {
      command: { name: 'config', args: ['SET', 'requirepass', 'S3cret'] },
    });
    expect(JSON.stringify(redactError(config))).not.toContain('S3cret');
  });

  it('follows causes, nested errors and secret-named properties', () => {
    const inner = authError('S3cret');
    const outer = new Error('cannot connect to redis://:S3cret@h:1', { cause: inner });
    Object.assign(outer, { password: 'S3cret', lastNodeError: authError('S3cret') });
    const text = JSON.stringify(redactError(outer));
    expect(text).not.toContain('S3cret');
    expect(text).toContain('WRONGPASS');
  });
});

describe('process logger', () => {
  it('never writes a password carried by a logged error', () => {
    const { log, lines } = capture();
    log.warn({ err: authError('S3cret') }, 'redis connection error');
    log.error(
      { err: new Error('fetch redis://u:S3cret@h failed', { cause: authError('u', 'S3cret') }) },
      'x',
    );
    expect(lines()).toHaveLength(2);
    for (const line of lines()) expect(line).not.toContain('S3cret');
    expect(JSON.parse(lines()[0]!).err.command).toEqual({ name: 'auth', args: ['***'] });
  });

  it('writes each binding once when a child rebinds a key (component, name), innermost value winning', () => {
    const { log, lines } = capture('debug');
    const replay = log.child({ component: 'replay', name: 'r1' });
    const inner = replay.child({ component: 'replay.sink', name: 'r1', sink: 'quotes' });
    inner.child({ group: 'g' }).debug('hello');
    replay.info('outer');
    const [first, second] = lines();
    for (const key of ['component', 'name', 'sink', 'group']) {
      expect(first!.match(new RegExp(`"${key}":`, 'g')) ?? [], key).toHaveLength(1);
    }
    expect(JSON.parse(first!)).toMatchObject({
      component: 'replay.sink',
      name: 'r1',
      sink: 'quotes',
      group: 'g',
    });
    expect(JSON.parse(second!)).toMatchObject({ component: 'replay', name: 'r1' });
  });

  it('keeps the parent level for a child made from the root', () => {
    const { log, lines } = capture('info');
    const child = log.child({ component: 'a' });
    child.level = 'warn';
    child.child({ component: 'b' }).info('dropped');
    child.child({ component: 'b' }).warn('kept');
    expect(lines().map((l) => JSON.parse(l).msg)).toEqual(['kept']);
  });
});
