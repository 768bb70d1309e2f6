/**
 * Fixed one-second windows per key (an IP address): at most `perSecond` events per key per window.
 * No timers: stale keys are swept lazily, so the limiter never keeps the process alive.
 */
export class RateLimiter {
  private readonly perSecond: number
  private readonly now: () => number
  private readonly windows = new Map<string, { start: number; count: number }>()
  private lastSweep = 0

  constructor(perSecond: number, now: () => number = Date.now) {
    if (perSecond < 1) throw new RangeError('perSecond must be at least 1')
    this.perSecond = perSecond
    this.now = now
  }

  /** Counts one event for key; false if the key is over its rate in the current window. */
  take(key: string): boolean {
    const t = this.now()
    this.sweep(t)
    let w = this.windows.get(key)
    if (w == null || t - w.start >= 1000) {
      w = { start: t, count: 0 }
      this.windows.set(key, w)
    }
    if (w.count >= this.perSecond) return false
    w.count++
    return true
  }

  /** Keys with a live window (for tests). */
  get size(): number {
    return this.windows.size
  }

  private sweep(t: number): void {
    if (t - this.lastSweep < 1000) return
    this.lastSweep = t
    for (const [k, w] of this.windows) if (t - w.start >= 1000) this.windows.delete(k)
  }
}
