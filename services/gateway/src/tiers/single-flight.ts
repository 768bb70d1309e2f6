import { Code, StargateError } from '@stargate/shared/errors'

interface Flight<V> {
  promise: Promise<V>
  ctl: AbortController
  waiters: number
}

/**
 * Concurrent callers asking for the same key share one in-flight operation. Used for opening a peer channel:
 * when several first calls to a peer start together, each opening its own channel would make the pool retire
 * the others' channels with their calls in flight.
 *
 * Each caller waits with its own signal and gives up alone; the operation is aborted only when every caller
 * waiting for it has given up. An operation that completes after that still completes (its channel is pooled
 * by the operation itself, for the next call).
 */
export class SingleFlight<V> {
  private readonly flights = new Map<string, Flight<V>>()

  /** Operations under way. */
  get size(): number {
    return this.flights.size
  }

  run(key: string, signal: AbortSignal, start: (signal: AbortSignal) => Promise<V>): Promise<V> {
    if (signal.aborted) return Promise.reject(StargateError.from(signal.reason, Code.Canceled))
    let flight = this.flights.get(key)
    if (flight == null) {
      const ctl = new AbortController()
      const created: Flight<V> = { promise: Promise.resolve().then(() => start(ctl.signal)), ctl, waiters: 0 }
      created.promise.then(
        () => this.end(key, created),
        () => this.end(key, created),
      )
      this.flights.set(key, created)
      flight = created
    }
    const joined = flight
    joined.waiters++
    return new Promise<V>((resolve, reject) => {
      let done = false
      const onAbort = (): void => {
        if (done) return
        done = true
        joined.waiters--
        if (joined.waiters === 0) joined.ctl.abort(signal.reason)
        reject(StargateError.from(signal.reason, Code.Canceled))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      joined.promise.then(
        (v) => {
          if (done) return
          done = true
          signal.removeEventListener('abort', onAbort)
          resolve(v)
        },
        (err: unknown) => {
          if (done) return
          done = true
          signal.removeEventListener('abort', onAbort)
          reject(err)
        },
      )
    })
  }

  private end(key: string, flight: Flight<V>): void {
    if (this.flights.get(key) === flight) this.flights.delete(key)
  }
}
