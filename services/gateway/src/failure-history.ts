import { type Clock, systemClock } from '@stargate/shared/clock'

export interface FailureHistoryOptions {
  /** A part that failed toward a peer stays cooled down for this long (unless a success ends it sooner). */
  cooldownMs: number
  /** (peer, part) failures remembered at most; the oldest failure is forgotten first. */
  maxEntries: number
  clock?: Clock
}

/**
 * What failed toward which peer through which part: a tier for the router, a relay for the relay tier's
 * circuits. A failure cools the part down toward that peer only, for cooldownMs; a success forgets it, and
 * so does the first look after the cool-down. Bounded whatever peer ids callers name: at most maxEntries
 * pairs, the oldest failure dropped first.
 */
export class FailureHistory {
  private readonly o: FailureHistoryOptions
  private readonly clock: Clock
  /** `<peer> <part>` → instant of the last failure, oldest first (re-inserted on each failure). */
  private readonly failures = new Map<string, number>()

  constructor(options: FailureHistoryOptions) {
    this.o = options
    this.clock = options.clock ?? systemClock
  }

  failed(peerId: string, part: string | number): void {
    const key = `${peerId} ${part}`
    this.failures.delete(key)
    this.failures.set(key, this.clock.nowMs())
    for (const [oldest] of this.failures) {
      if (this.failures.size <= this.o.maxEntries) break
      this.failures.delete(oldest)
    }
  }

  succeeded(peerId: string, part: string | number): void {
    this.failures.delete(`${peerId} ${part}`)
  }

  /** When the part last failed toward the peer, while within the cool-down (an older failure is forgotten). */
  failedAtMs(peerId: string, part: string | number): number | undefined {
    const key = `${peerId} ${part}`
    const at = this.failures.get(key)
    if (at == null) return undefined
    if (this.clock.nowMs() - at < this.o.cooldownMs) return at
    this.failures.delete(key)
    return undefined
  }

  /** Pairs remembered (for tests of the bound). */
  get size(): number {
    return this.failures.size
  }
}
