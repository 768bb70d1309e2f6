import { type Clock, systemClock, type Timer } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'

/**
 * The relay tier's pure parts: which circuits to try toward a peer and in what order (circuitCandidates),
 * and the staggered race that opens the first circuit to answer (raceStaggered). relay.ts wires them to
 * libp2p, with a FailureHistory of what failed toward which peer through which relay.
 */

const CIRCUIT = '/p2p-circuit'

/** A way through a relay to a peer. */
export interface Circuit {
  /** The circuit multiaddr, ending in /p2p-circuit/p2p/<target>. */
  addr: string
  relayPeerId: string
}

/** A circuit to try, with what is known about it. */
export interface CircuitCandidate extends Circuit {
  /** It failed toward this peer within the cool-down: it is tried last (and probed in the background). */
  coolingDown: boolean
}

/** What the ordering knows about the relays. */
export interface CircuitKnowledge {
  /** Our relays that pass their health checks, lowest RTT first. */
  usable: Array<{ addr: string; peerId: string }>
  /** Whether a relay is one of ours that fails its health checks. */
  unhealthy(relayPeerId: string): boolean
  /** The circuit addresses the target announces (its presence record or a static --peer). */
  announced: string[]
  /** When a circuit through this relay last failed toward the target, while that is within the cool-down. */
  failedAtMs(relayPeerId: string): number | undefined
}

/** The relay peer id in a circuit address (/…/p2p/<relay>/p2p-circuit[/p2p/<target>]), or '' when it names none. */
export function relayOfCircuit(addr: string): string {
  if (!addr.includes(CIRCUIT)) return ''
  const relayPart = addr.split(CIRCUIT)[0] ?? ''
  const at = relayPart.lastIndexOf('/p2p/')
  return at < 0 ? '' : relayPart.slice(at + '/p2p/'.length)
}

/**
 * The circuits to try toward a peer, one per relay, best first:
 * 1. relays the peer announces that are ours and healthy (lowest RTT first),
 * 2. relays the peer announces that we know nothing about (in the order announced),
 * 3. our other healthy relays (lowest RTT first): the peer may hold a reservation it has not announced yet,
 * 4. relays the peer announces that are ours but fail their health checks,
 * and after all of these the circuits that failed toward this peer within the cool-down, least recent first.
 */
export function circuitCandidates(peerId: string, k: CircuitKnowledge): CircuitCandidate[] {
  const toTarget = (a: string): string => (a.endsWith(`/p2p/${peerId}`) ? a : `${a}/p2p/${peerId}`)
  const announced = new Map<string, string>()
  for (const a of k.announced) {
    const relay = relayOfCircuit(a)
    if (relay !== '' && !announced.has(relay)) announced.set(relay, toTarget(a))
  }
  const healthy = new Map(k.usable.map((r, i) => [r.peerId, { addr: `${r.addr}${CIRCUIT}/p2p/${peerId}`, rank: i }]))
  const ranked: Array<{ c: Circuit; group: number; order: number }> = []
  for (const [relayPeerId, addr] of announced) {
    const ours = healthy.get(relayPeerId)
    if (ours != null) ranked.push({ c: { addr, relayPeerId }, group: 1, order: ours.rank })
    else ranked.push({ c: { addr, relayPeerId }, group: k.unhealthy(relayPeerId) ? 4 : 2, order: ranked.length })
  }
  for (const [relayPeerId, { addr, rank }] of healthy) {
    if (!announced.has(relayPeerId)) ranked.push({ c: { addr, relayPeerId }, group: 3, order: rank })
  }
  const keyed = ranked.map((r) => {
    const failedAtMs = k.failedAtMs(r.c.relayPeerId)
    return { ...r, failedAtMs: failedAtMs ?? Number.NEGATIVE_INFINITY, coolingDown: failedAtMs != null }
  })
  keyed.sort(
    (x, y) =>
      Number(x.coolingDown) - Number(y.coolingDown) ||
      (x.coolingDown ? x.failedAtMs - y.failedAtMs : 0) ||
      x.group - y.group ||
      x.order - y.order,
  )
  return keyed.map((r) => ({ ...r.c, coolingDown: r.coolingDown }))
}

export interface StaggeredRace<C, T> {
  /** The next candidate starts when the ones started so far have not succeeded after this long. */
  staggerMs: number
  /** Ends the race: every dial still running is cancelled. */
  signal: AbortSignal
  clock?: Clock
  /** Opens one candidate; rejects when it cannot. Its signal aborts when the race no longer needs it. */
  dial(candidate: C, signal: AbortSignal): Promise<T>
  /** A candidate failed (not because the race cancelled it). */
  onFailure?(candidate: C, err: unknown): void
  /** A candidate opened after another had won: its result is not used and must be released. */
  release?(value: T, candidate: C): void
}

/** The race's outcome: the winner, and which candidates were started at all. */
export interface RaceWon<C, T> {
  candidate: C
  value: T
  started: C[]
}

/**
 * Starts the candidates in order, the next one when the ones started have not succeeded after staggerMs, or at
 * once when one fails. The first to open wins; the others are cancelled (their signals abort) and what they
 * open afterwards is released. Rejects with UNAVAILABLE listing every failure when all fail, or with the
 * signal's reason when it aborts first.
 */
export function raceStaggered<C, T>(candidates: C[], o: StaggeredRace<C, T>): Promise<RaceWon<C, T>> {
  const clock = o.clock ?? systemClock
  return new Promise((resolve, reject) => {
    const running = new Map<C, AbortController>()
    const started: C[] = []
    const errors: unknown[] = []
    let settled = false
    let stagger: Timer | undefined
    const finish = (): void => {
      settled = true
      stagger?.clear()
      o.signal.removeEventListener('abort', onAbort)
      for (const ctl of running.values()) ctl.abort(new StargateError(Code.Canceled, 'another circuit opened first'))
      running.clear()
    }
    const onAbort = (): void => {
      if (settled) return
      finish()
      reject(o.signal.reason)
    }
    const next = (): void => {
      stagger?.clear()
      if (settled) return
      const c = candidates[started.length]
      if (c == null) {
        if (running.size === 0) {
          finish()
          reject(new StargateError(Code.Unavailable, errors.length === 0 ? 'no circuit to try' : `${errors.length} circuits failed`))
        }
        return
      }
      started.push(c)
      const ctl = new AbortController()
      running.set(c, ctl)
      if (started.length < candidates.length) stagger = clock.setTimeout(next, o.staggerMs)
      o.dial(c, ctl.signal).then(
        (value) => {
          if (settled) {
            o.release?.(value, c)
            return
          }
          running.delete(c)
          finish()
          resolve({ candidate: c, value, started: [...started] })
        },
        (err: unknown) => {
          if (settled || ctl.signal.aborted) return
          running.delete(c)
          errors.push(err)
          o.onFailure?.(c, err)
          next()
        },
      )
    }
    if (o.signal.aborted) {
      reject(o.signal.reason)
      return
    }
    o.signal.addEventListener('abort', onAbort, { once: true })
    next()
  })
}
