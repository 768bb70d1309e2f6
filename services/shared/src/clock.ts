import { type Duration, durationFromMs } from '@bufbuild/protobuf/wkt'

/**
 * Time as the rest of the code sees it: the current instant and one-shot timers. Components that make
 * decisions on time (the router's stagger, cool-downs and backoff; deadlines) take a Clock, so their unit
 * tests drive time with a FakeClock instead of sleeping.
 */
export interface Clock {
  /** The current instant, ms since the Unix epoch. */
  nowMs(): number
  /**
   * Runs fn once after ms, however long (a 30-day deadline fires after 30 days, not at once); the timer never
   * keeps the process alive.
   */
  setTimeout(fn: () => void, ms: number): Timer
}

/** A pending one-shot timer. */
export interface Timer {
  /** Cancels the timer (idempotent). */
  clear(): void
}

/**
 * The longest delay one Node timer takes (2^31−1 ms, about 24.8 days). Node runs a longer one after 1 ms
 * (with a TimeoutOverflowWarning), so a longer delay is waited out in steps of at most this.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** The real clock: Date.now() and unref'd Node timers (re-armed in steps of MAX_TIMER_MS for longer delays). */
export const systemClock: Clock = {
  nowMs: () => Date.now(),
  setTimeout(fn, ms) {
    if (!(ms > MAX_TIMER_MS)) {
      const t = setTimeout(fn, Math.max(0, ms))
      t.unref()
      return { clear: () => clearTimeout(t) }
    }
    let leftMs = ms
    let t: NodeJS.Timeout
    const arm = (): void => {
      const stepMs = Math.min(leftMs, MAX_TIMER_MS)
      leftMs -= stepMs
      t = setTimeout(leftMs > 0 ? arm : fn, stepMs)
      t.unref()
    }
    arm()
    return { clear: () => clearTimeout(t) }
  },
}

interface FakeTimer {
  at: number
  seq: number
  fn: () => void
  cleared: boolean
}

/**
 * A clock for unit tests: time moves only when the test advances it. `advance(ms)` fires every timer that
 * falls due on the way, in order, letting promise continuations run after each one, so code that awaits
 * between timers (a race launching its next attempt, a retry loop sleeping) behaves as it would in real time.
 */
export class FakeClock implements Clock {
  private now: number
  private seq = 0
  private readonly timers: FakeTimer[] = []

  constructor(startMs = 1_700_000_000_000) {
    this.now = startMs
  }

  nowMs(): number {
    return this.now
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const timer: FakeTimer = { at: this.now + Math.max(0, ms), seq: this.seq++, fn, cleared: false }
    this.timers.push(timer)
    return {
      clear: () => {
        timer.cleared = true
      },
    }
  }

  /** Timers not yet fired nor cleared. */
  get pending(): number {
    return this.timers.filter((t) => !t.cleared).length
  }

  /** Moves time forward by ms, firing due timers in order and settling promises after each. */
  async advance(ms: number): Promise<void> {
    const target = this.now + ms
    await settle()
    for (;;) {
      const next = this.nextDue(target)
      if (next == null) break
      this.timers.splice(this.timers.indexOf(next), 1)
      this.now = Math.max(this.now, next.at)
      next.fn()
      await settle()
    }
    this.now = target
    await settle()
  }

  private nextDue(target: number): FakeTimer | undefined {
    for (let i = this.timers.length - 1; i >= 0; i--) if (this.timers[i]!.cleared) this.timers.splice(i, 1)
    let best: FakeTimer | undefined
    for (const t of this.timers) {
      if (t.at > target) continue
      if (best == null || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t
    }
    return best
  }
}

/** Lets pending promise continuations (and the callbacks they schedule) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

/**
 * A google.protobuf.Duration of ms milliseconds, rounded up to whole ms and never negative: the one way a
 * Duration is built from a time that may be fractional (grpc-timeout in u/n units gives fractional ms, and
 * protobuf's nanos must be an int32).
 */
export function durationOfMs(ms: number): Duration {
  return durationFromMs(Math.max(0, Math.ceil(ms)))
}

/** A google.protobuf.Duration (or its init shape) in ms, rounded up: the one conversion used everywhere. */
export function durationToMs(d: { seconds?: bigint; nanos?: number }): number {
  return Number(d.seconds ?? 0n) * 1000 + Math.ceil((d.nanos ?? 0) / 1e6)
}
