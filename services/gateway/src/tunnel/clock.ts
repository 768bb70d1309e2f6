/**
 * Time as the tunnel machinery sees it: the current instant and one-shot timers. Production uses
 * `systemClock`; unit tests drive a fake one. Timers take their argument separately so a caller can pass
 * one shared function instead of a closure per timer.
 */
export interface TunnelClock {
  /** Milliseconds since the epoch. */
  now(): number
  /** Calls fn(arg) once after ms; the timer never holds the process open. */
  setTimer<A>(fn: (arg: A) => void, ms: number, arg: A): TimerHandle
  clearTimer(timer: TimerHandle): void
}

/** An opaque timer returned by TunnelClock.setTimer. */
export type TimerHandle = { readonly __timer: unique symbol } | object

/** The real clock: Date.now and unref'd Node timers. */
export const systemClock: TunnelClock = {
  now: Date.now,
  setTimer<A>(fn: (arg: A) => void, ms: number, arg: A): TimerHandle {
    const t = setTimeout(fn, ms, arg)
    t.unref()
    return t
  },
  clearTimer(timer: TimerHandle): void {
    clearTimeout(timer as NodeJS.Timeout)
  },
}
