/**
 * Polls `check` until it returns a value other than undefined/false, or throws once `timeoutMs` passed
 * (with `what` and the last error in the message). For state that no event announces (another process's
 * metrics, a peer list filling in); where an event exists, wait on the event instead.
 */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const endsAtMs = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v !== undefined && v !== false) return v
    } catch (err: unknown) {
      last = err
    }
    if (Date.now() >= endsAtMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}${last != null ? `: ${String(last)}` : ''}`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
