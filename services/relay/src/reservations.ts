/**
 * Reservation bookkeeping of the relay (pure logic, injected clock).
 *
 * A reservation belongs to a peer *on one connection*: the relay can only reach the peer through that
 * connection, so the reservation ends when the connection closes (or its TTL passes without renewal).
 * A RESERVE on a connection that already holds a reservation renews it and never counts against a limit.
 * `maxPerPeer` bounds how many connections of one peer id hold reservations at once: past it, a RESERVE on a
 * new connection replaces the peer's oldest reservation (only the key's owner can make one, and a peer that
 * reconnects with a new NAT mapping leaves its old connection silent but open: the newest connection of a key
 * wins, as in DERP and go-libp2p). `maxPerIp` bounds how many reservations one IP key holds, `maxReservations`
 * the total; a replacement is checked against both as if the replaced reservation were gone already.
 * A holder that leaves `maxStopFailures` STOP handshakes in a row unanswered loses its reservation.
 */
export type ReserveRefusal = 'RESERVATION_LIMIT' | 'PER_IP_LIMIT'

export interface ReservationLimits {
  maxReservations: number
  maxPerPeer: number
  maxPerIp: number
  ttlMs: number
  maxStopFailures: number
}

export interface Slot<C> {
  peer: string
  ip: string
  connectionId: string
  connection: C
  createdAt: number
  expiresAt: number
  /** STOP handshakes in a row the holder left unanswered. */
  stopFailures: number
}

export type ReserveResult<C> =
  | { ok: true; slot: Slot<C>; renewed: boolean /** The peer's older reservation this one replaced. */; replaced?: Slot<C> }
  | { ok: false; reason: ReserveRefusal }

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
    const replaced = this.oldestBeyondLimit(peer)
    const freed = replaced == null ? 0 : 1
    if (this.slots.size - freed >= this.limits.maxReservations) return { ok: false, reason: 'RESERVATION_LIMIT' }
    const sameIp = replaced?.ip === ip ? 1 : 0
    if ((this.byIp.get(ip) ?? 0) - sameIp >= this.limits.maxPerIp) return { ok: false, reason: 'PER_IP_LIMIT' }
    if (replaced != null) this.remove(replaced.connectionId)
    const slot: Slot<C> = { peer, ip, connectionId, connection, createdAt: t, expiresAt: t + this.limits.ttlMs, stopFailures: 0 }
    this.slots.set(connectionId, slot)
    let set = this.byPeer.get(peer)
    if (set == null) {
      set = new Set()
      this.byPeer.set(peer, set)
    }
    set.add(connectionId)
    this.byIp.set(ip, (this.byIp.get(ip) ?? 0) + 1)
    return replaced == null ? { ok: true, slot, renewed: false } : { ok: true, slot, renewed: false, replaced }
  }

  /** The peer's oldest reservation when it holds maxPerPeer of them already (the one a new one replaces). */
  private oldestBeyondLimit(peer: string): Slot<C> | undefined {
    const ids = this.byPeer.get(peer)
    if (ids == null || ids.size < this.limits.maxPerPeer) return undefined
    let oldest: Slot<C> | undefined
    for (const id of ids) {
      const s = this.slots.get(id)
      if (s != null && (oldest == null || s.createdAt < oldest.createdAt)) oldest = s
    }
    return oldest
  }

  /**
   * The holder of the reservation on connectionId left a STOP handshake unanswered. Returns the reservation
   * if this was its maxStopFailures-th in a row: it is then removed (the caller closes its connection).
   */
  stopFailed(connectionId: string): Slot<C> | undefined {
    const s = this.slots.get(connectionId)
    if (s == null) return undefined
    s.stopFailures++
    if (s.stopFailures < this.limits.maxStopFailures) return undefined
    this.remove(connectionId)
    return s
  }

  /** The holder answered a STOP handshake: its count of failures in a row starts again. */
  stopAnswered(connectionId: string): void {
    const s = this.slots.get(connectionId)
    if (s != null) s.stopFailures = 0
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
