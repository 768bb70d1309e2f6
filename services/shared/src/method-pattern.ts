/**
 * Method patterns, as the caller policy (`--allow-caller PEER_ID=PATTERN`) and scoped API tokens
 * (`TOKEN methods=serve:a.*,call:*`) write them. A pattern is one of:
 *
 * - `*`: every method;
 * - `PREFIX.*`: every method whose name starts with `PREFIX.` (`db.*` matches `db.get` and `db.v1.get`,
 *   not `db` nor `dbx.get`);
 * - a method name, matched exactly.
 *
 * A tunnelled gRPC method is matched by its full name: the path `/pkg.Service/Method` as
 * `pkg.Service.Method`, so `pkg.Service.*` covers one service and `pkg.*` a whole package.
 */

/** A parsed method pattern. */
export interface MethodPattern {
  /** The pattern as written. */
  readonly text: string
  /** Whether the method (a name, or a gRPC path `/pkg.Service/Method`) matches. */
  matches(method: string): boolean
}

/** The pattern that matches every method. */
export const EVERY_METHOD: MethodPattern = { text: '*', matches: () => true }

/**
 * The name a method is matched by: a gRPC path `/pkg.Service/Method` becomes `pkg.Service.Method`; any
 * other name is itself.
 */
export function methodName(method: string): string {
  if (!method.startsWith('/')) return method
  const slash = method.indexOf('/', 1)
  return slash < 0 ? method.slice(1) : `${method.slice(1, slash)}.${method.slice(slash + 1)}`
}

/** Parses a pattern; throws a RangeError saying what is wrong (the caller names the flag or line). */
export function parseMethodPattern(text: string): MethodPattern {
  if (text === '*') return EVERY_METHOD
  if (text === '') throw new RangeError('empty method pattern (give a method name, PREFIX.* or *)')
  if (/[\s,=]/.test(text)) throw new RangeError(`method pattern "${text}" contains whitespace, "," or "="`)
  if (text.endsWith('.*')) {
    const prefix = text.slice(0, -1)
    if (prefix === '.' || prefix.slice(0, -1).includes('*')) {
      throw new RangeError(`method pattern "${text}": only a trailing ".*" may be a wildcard (e.g. "db.*")`)
    }
    return { text, matches: (m) => methodName(m).startsWith(prefix) }
  }
  if (text.includes('*')) {
    throw new RangeError(`method pattern "${text}": "*" is allowed only as the whole pattern or as a trailing ".*" (e.g. "db.*")`)
  }
  const name = methodName(text)
  return { text, matches: (m) => methodName(m) === name }
}

/** Whether any of the patterns matches the method. */
export function anyMatches(patterns: readonly MethodPattern[], method: string): boolean {
  for (const p of patterns) if (p.matches(method)) return true
  return false
}
