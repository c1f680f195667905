/**
 * Secrets never reach a log line, an error message or a response. Everything that prints something it did not
 * write itself (a driver's error, a configuration value) passes it through here first.
 *
 * - URL userinfo: `redis://user:pw@host` → `redis://user:***@host` (a lone `redis://pw@host` → `redis://***@host`).
 * - key=value secrets as in QuestDB's client configuration string or a query string: `password=…`, `token=…`.
 * - the arguments of commands that carry credentials (Redis AUTH, HELLO … AUTH, MIGRATE … AUTH, ACL SETUSER,
 *   CONFIG SET requirepass/masterauth), which ioredis attaches to its errors as `command.args`.
 */

const MASK = '***';

/**
 * scheme://[user[:password]]@ → the password (or a lone user part, which may be a password) masked. The
 * userinfo runs to the last '@' of the token: an unencoded password may hold '/', '@' or ':'.
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s"'<>@:]*)(?::([^\s"'<>]*))?@/gi;
/** password=..., token=... up to the next separator (;, &, whitespace, quote). */
const KEY_VALUE =
  /\b((?:[a-z_]*password|passwd|pwd|[a-z_]*secret|[a-z_]*token|auth|api[_-]?key|access[_-]?key)\s*[=:]\s*)([^;&\s"',]+)/gi;

/** Variable or key names whose whole value is a secret. */
const SECRET_NAME = /pass(word)?|secret|token|credential|api[_-]?key|private[_-]?key|sasl/i;

export function isSecretName(name: string): boolean {
  // TLS key *files* are paths, not secrets; a key prefix is a naming setting.
  if (/_FILE$|File$|KEY_PREFIX|keyPrefix/.test(name)) return false;
  return SECRET_NAME.test(name);
}

export function redactText(text: string): string {
  return text
    .replace(URL_USERINFO, (_m, scheme: string, user: string, password: string | undefined) =>
      password === undefined ? `${scheme}${MASK}@` : `${scheme}${user}:${MASK}@`,
    )
    .replace(KEY_VALUE, (_m, key: string) => `${key}${MASK}`);
}

/** Commands whose arguments may hold a password, and from which argument on. */
function redactArgs(name: string, args: readonly unknown[]): unknown[] {
  const cmd = name.toLowerCase();
  const upper = args.map((a) => String(a).toUpperCase());
  if (cmd === 'auth') return args.map(() => MASK);
  if (cmd === 'hello' || cmd === 'migrate') {
    const at = upper.findIndex((a) => a === 'AUTH' || a === 'AUTH2');
    return at < 0 ? [...args] : args.map((a, i) => (i > at ? MASK : a));
  }
  if (cmd === 'acl' || cmd === 'config') {
    return args.map((a, i) => (i === 0 ? a : MASK));
  }
  return args.map((a) => (typeof a === 'string' ? redactText(a) : a));
}

interface WithCommand {
  command?: { name?: unknown; args?: unknown };
}

/**
 * A copy of an error fit for a log: message, stack and string properties redacted, a Redis command's
 * credentials masked, causes (and AggregateError members) done the same way. The original is left alone.
 */
export function redactError(err: unknown, depth = 0): unknown {
  if (!(err instanceof Error) || depth > 5) {
    return typeof err === 'string' ? redactText(err) : err;
  }
  const out: Record<string, unknown> = {
    type: err.constructor?.name ?? err.name,
    message: redactText(err.message),
  };
  if (err.stack !== undefined) out.stack = redactText(err.stack);
  for (const [key, value] of Object.entries(err)) {
    if (key === 'command') continue;
    if (isSecretName(key)) out[key] = MASK;
    else if (typeof value === 'string') out[key] = redactText(value);
    else if (value instanceof Error) out[key] = redactError(value, depth + 1);
    else if (value === null || typeof value !== 'object') out[key] = value;
    else out[key] = redactValue(value, depth + 1);
  }
  const command = (err as WithCommand).command;
  if (command !== undefined && command !== null && typeof command === 'object') {
    const name = String(command.name ?? '');
    out.command = {
      name,
      args: Array.isArray(command.args) ? redactArgs(name, command.args) : [],
    };
  }
  if (err.cause !== undefined) out.cause = redactError(err.cause, depth + 1);
  if (err instanceof AggregateError) out.errors = err.errors.map((e) => redactError(e, depth + 1));
  return out;
}

/** Plain data (objects, arrays) with secret-named keys masked and strings redacted. */
export function redactValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  if (value instanceof Error) return redactError(value, depth);
  if (value === null || typeof value !== 'object' || depth > 5) return value;
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = isSecretName(k) ? MASK : redactValue(v, depth + 1);
  return out;
}
