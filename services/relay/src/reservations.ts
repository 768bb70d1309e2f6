/**
 * Reservation bookkeeping of the relay (pure logic, injected clock).
 *
 * A reservation belongs to a peer *on one connection*: the relay can only reach the peer through that
 * connection, so the reservation ends when the connection closes (or its TTL passes without renewal).
 * A RESERVE on a connection that already holds a reservation renews it and never counts against a limit.
 * `maxPerPeer` bounds how many connections of one peer id hold reservations at once (the same identity
 * running twice), `maxPerIp` how many reservations one IP address holds, `maxReservations` the total.
 */
export type ReserveRefusal = 'RESERVATION_LIMIT' | 'PER_PEER_LIMIT' | 'PER_IP_LIMIT'

export interface ReservationLimits {
  maxReservations: number
  maxPerPeer: number
  maxPerIp: number
  ttlMs: number
}

export interface Slot<C> {
  peer: string
  ip: string
  connectionId: string
  connection: C
  createdAt: number
  expiresAt: number
}

export type ReserveResult<C> = { ok: true; slot: Slot<C>; renewed: boolean } | { ok: false; reason: ReserveRefusal }

export class ReservationStore<C> {
  private readonly limits: ReservationLimits
  private readonly now: () => number
  private readonly slots = new Map<string, Slot<C>>()
  private readonly byPeer = new Map<string, Set<string>>()
  private readonly byIp = new Map<string, number>()

  constructor(limits: ReservationLimits, now: () => number = Date.now) {
    this.limits = limits
    this.now = now
  }

  reserve(peer: string, ip: string, connectionId: string, connection: C): ReserveResult<C> {
    const t = this.now()
    this.sweep(t)
    const existing = this.slots.get(connectionId)
    if (existing != null && existing.peer === peer) {
      existing.expiresAt = t + this.limits.ttlMs
      return { ok: true, slot: existing, renewed: true }
    }
    if (this.slots.size >= this.limits.maxReservations) return { ok: false, reason: 'RESERVATION_LIMIT' }
    if ((this.byPeer.get(peer)?.size ?? 0) >= this.limits.maxPerPeer) return { ok: false, reason: 'PER_PEER_LIMIT' }
    if ((this.byIp.get(ip) ?? 0) >= this.limits.maxPerIp) return { ok: false, reason: 'PER_IP_LIMIT' }
    const slot: Slot<C> = { peer, ip, connectionId, connection, createdAt: t, expiresAt: t + this.limits.ttlMs }
    this.slots.set(connectionId, slot)
    let set = this.byPeer.get(peer)
    if (set == null) {
      set = new Set()
      this.byPeer.set(peer, set)
    }
    set.add(connectionId)
    this.byIp.set(ip, (this.byIp.get(ip) ?? 0) + 1)
    return { ok: true, slot, renewed: false }
  }

  /** The peer's newest live reservation. */
  get(peer: string): Slot<C> | undefined {
    const t = this.now()
    let best: Slot<C> | undefined
    for (const id of this.byPeer.get(peer) ?? []) {
      const s = this.slots.get(id)
      if (s == null) continue
      if (s.expiresAt <= t) {
        this.remove(id)
        continue
      }
      if (best == null || s.createdAt >= best.createdAt) best = s
    }
    return best
  }

  /** Drops the reservation held on a connection (the connection closed). */
  remove(connectionId: string): boolean {
    const s = this.slots.get(connectionId)
    if (s == null) return false
    this.slots.delete(connectionId)
    const set = this.byPeer.get(s.peer)
    set?.delete(connectionId)
    if (set?.size === 0) this.byPeer.delete(s.peer)
    const n = (this.byIp.get(s.ip) ?? 1) - 1
    if (n <= 0) this.byIp.delete(s.ip)
    else this.byIp.set(s.ip, n)
    return true
  }

  /** Removes expired reservations; returns how many. */
  sweep(t: number = this.now()): number {
    let n = 0
    for (const [id, s] of this.slots) {
      if (s.expiresAt <= t) {
        this.remove(id)
        n++
      }
    }
    return n
  }

  get size(): number {
    this.sweep()
    return this.slots.size
  }

  clear(): void {
    this.slots.clear()
    this.byPeer.clear()
    this.byIp.clear()
  }
}
