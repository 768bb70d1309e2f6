/** How `eventually` polls. */
export interface EventuallyOptions {
  /** Give up after this long (default 20 s). */
  timeoutMs?: number
  /** Pause between tries (default 50 ms). */
  intervalMs?: number
  /** Checked before each try: a reason to give up at once (e.g. a process the state depends on exited). */
  giveUp?: () => string | undefined
  /** Appended to the error when it gives up (e.g. the processes' recent output). */
  context?: () => string
}

/**
 * Polls `check` until it returns a value other than undefined/false, or throws once the timeout passed
 * (with `what` and the last error in the message); a check that throws is tried again. `options` is the
 * timeout in ms, or EventuallyOptions. For state that no event announces (another process's metrics, a
 * peer list filling in); where an event exists (an output line, an emitted event), wait on the event instead.
 */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: number | EventuallyOptions = {},
): Promise<T> {
  const { timeoutMs = 20_000, intervalMs = 50, giveUp, context } = typeof options === 'number' ? { timeoutMs: options } : options
  const endsAtMs = Date.now() + timeoutMs
  let last: unknown
  const fail = (why: string): Error =>
    new Error(`${why} waiting until ${what}${last != null ? `: ${String(last)}` : ''}${context != null ? `\n${context()}` : ''}`)
  for (;;) {
    const reason = giveUp?.()
    if (reason != null) throw fail(`gave up (${reason})`)
    try {
      const v = await check()
      if (v !== undefined && v !== false) return v
    } catch (err: unknown) {
      last = err
    }
    if (Date.now() >= endsAtMs) throw fail(`timed out after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
