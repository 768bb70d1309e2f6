import { RateLimiter } from './rate-limiter.ts'

/**
 * Admission of relayed connections (CONNECT), pure logic with an injected clock.
 *
 * Rates: CONNECTs per second per source IP (peer ids cost nothing to make, an IP does) and per destination
 * peer (every circuit costs the reservation holder a STOP and a Noise handshake). Caps on circuits open at once
 * (a STOP handshake under way counts): per source IP, per source peer (fairness between peers behind one NAT)
 * and per destination peer. Destination IPs need no limit of their own: only reservation holders are
 * destinations, and one IP holds at most maxReservationsPerIp of them.
 */
export type CircuitRefusal = 'SOURCE_RATE_LIMITED' | 'DESTINATION_RATE_LIMITED' | 'SOURCE_CIRCUIT_LIMIT' | 'DESTINATION_CIRCUIT_LIMIT'

export interface CircuitLimits {
  maxCircuitsPerIpPerSecond: number
  maxCircuitsToPeerPerSecond: number
  maxCircuitsPerIp: number
  maxCircuitsPerPeer: number
  maxCircuitsToPeer: number
}

/** Places a circuit holds against the caps; release() gives them back (once, however often it is called). */
export interface CircuitPlaces {
  release(): void
}

export type OpenResult = { ok: true; places: CircuitPlaces } | { ok: false; reason: CircuitRefusal; limit: string }

export class CircuitAdmission {
  private readonly limits: CircuitLimits
  private readonly sourceRate: RateLimiter
  private readonly destinationRate: RateLimiter
  private readonly perIp = new Map<string, number>()
  private readonly perPeer = new Map<string, number>()
  private readonly toPeer = new Map<string, number>()

  constructor(limits: CircuitLimits, now: () => number = Date.now) {
    this.limits = limits
    this.sourceRate = new RateLimiter(limits.maxCircuitsPerIpPerSecond, now)
    this.destinationRate = new RateLimiter(limits.maxCircuitsToPeerPerSecond, now)
  }

  /** Counts a CONNECT from the source IP key (before its destination is looked up); false = over the rate. */
  sourceAllowed(ipKey: string): boolean {
    return this.sourceRate.take(ipKey)
  }

  /** Counts a CONNECT to a reservation holder against its rate, then takes a place under every cap. */
  open(source: { peer: string; ipKey: string }, destination: string): OpenResult {
    if (!this.destinationRate.take(destination)) {
      return { ok: false, reason: 'DESTINATION_RATE_LIMITED', limit: 'max-circuits-to-peer-per-second' }
    }
    const l = this.limits
    if ((this.perIp.get(source.ipKey) ?? 0) >= l.maxCircuitsPerIp) {
      return { ok: false, reason: 'SOURCE_CIRCUIT_LIMIT', limit: 'max-circuits-per-ip' }
    }
    if ((this.perPeer.get(source.peer) ?? 0) >= l.maxCircuitsPerPeer) {
      return { ok: false, reason: 'SOURCE_CIRCUIT_LIMIT', limit: 'max-circuits-per-peer' }
    }
    if ((this.toPeer.get(destination) ?? 0) >= l.maxCircuitsToPeer) {
      return { ok: false, reason: 'DESTINATION_CIRCUIT_LIMIT', limit: 'max-circuits-to-peer' }
    }
    const held: Array<[Map<string, number>, string]> = [
      [this.perIp, source.ipKey],
      [this.perPeer, source.peer],
      [this.toPeer, destination],
    ]
    for (const [m, k] of held) m.set(k, (m.get(k) ?? 0) + 1)
    let released = false
    return {
      ok: true,
      places: {
        release: () => {
          if (released) return
          released = true
          for (const [m, k] of held) {
            const n = (m.get(k) ?? 1) - 1
            if (n <= 0) m.delete(k)
            else m.set(k, n)
          }
        },
      },
    }
  }

  /** Circuits holding places now. */
  get size(): number {
    let n = 0
    for (const v of this.perIp.values()) n += v
    return n
  }

  /** Source IPs, source peers and destinations with a place held (zero once every circuit released). */
  get keys(): number {
    return this.perIp.size + this.perPeer.size + this.toPeer.size
  }
}
