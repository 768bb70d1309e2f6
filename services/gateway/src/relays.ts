import type { PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { messageOf } from '@stargate/shared/errors'
import type { Logger } from '@stargate/shared/log'
import { type GatewayNode, transportManagerOf } from './node.ts'
import { parsePeerId } from './peer-ids.ts'
import type { RelaySelector } from './tiers/relay.ts'

export interface RelayManagerOptions {
  relays: string[]
  healthIntervalMs: number
  healthTimeoutMs: number
  unhealthyAfterFailures: number
  maxReservedRelays: number
  /** Reconnecting to a relay that went away backs off from this delay, doubling per attempt, up to reconnectMaxMs. */
  reconnectBaseMs: number
  reconnectMaxMs: number
  /** A reservation request without an answer after this long counts as refused. */
  reservationTimeoutMs: number
  log: Logger
}

/** Health of one relay, as GetRelayHealth reports it. */
export interface RelayState {
  /** The configured address, with or without /p2p/<relay peer id>. */
  addr: string
  /**
   * The relay's peer id: the one in the configured address (pinned), or else the one learned in the last
   * handshake with the relay ('' until the first connection). A relay whose identity changes is followed.
   */
  peerId: string
  /** The configured address names the relay's peer id: a relay with another identity is refused. */
  pinned: boolean
  healthy: boolean
  /** A relayed call failed through it; excluded until the next check succeeds. */
  suspect: boolean
  consecutiveFailures: number
  lastSuccessAtMs?: number
  lastCheckAtMs?: number
  rttMs: number
  lastError: string
  reconnectAttempts: number
  nextReconnectAtMs: number
}

/** Observes health checks (telemetry hooks in here). */
export interface RelayHealthObserver {
  check?(relay: RelayState, ok: boolean, rttMs: number, error: string | undefined): void
}

/**
 * Relay health: every relay is pinged over its connection each interval, each check with its own timeout;
 * two consecutive failures (by default) make it unhealthy, a failed relayed call makes it suspect at once.
 * Reservations are kept on up to maxReservedRelays healthy relays; a relay that comes back is reconnected
 * with backoff and used again.
 */
export class RelayManager implements RelaySelector {
  private readonly o: RelayManagerOptions
  private readonly node: GatewayNode
  private readonly states: RelayState[]
  private timer?: NodeJS.Timeout
  private running = false
  private checking?: Promise<void>
  private readonly checks = new Map<RelayState, Promise<void>>()
  private readonly observer: RelayHealthObserver
  /** What this gateway announces about its relays may have changed: a reservation made, a relay turned (un)healthy. */
  private readonly onReservationsChanged: () => void

  constructor(
    node: GatewayNode,
    options: RelayManagerOptions,
    observer: RelayHealthObserver = {},
    onReservationsChanged: () => void = () => {},
  ) {
    this.node = node
    this.o = options
    this.observer = observer
    this.onReservationsChanged = onReservationsChanged
    this.states = options.relays.map((addr) => {
      const pinned = multiaddr(addr)
        .getComponents()
        .findLast((c) => c.name === 'p2p')?.value
      return {
        addr,
        peerId: pinned ?? '',
        pinned: pinned != null,
        healthy: false,
        suspect: false,
        consecutiveFailures: 0,
        rttMs: 0,
        lastError: '',
        reconnectAttempts: 0,
        nextReconnectAtMs: 0,
      }
    })
  }

  async start(): Promise<void> {
    this.running = true
    this.node.addEventListener('peer:disconnect', this.onDisconnect)
    await this.checkAll()
    this.schedule()
  }

  async stop(): Promise<void> {
    this.running = false
    this.node.removeEventListener('peer:disconnect', this.onDisconnect)
    clearTimeout(this.timer)
    await this.checking
  }

  all(): RelayState[] {
    return this.states
  }

  /** Whether this gateway has an open connection to the relay ('' = a relay not reached yet: false). */
  connected(peerId: string): boolean {
    return peerId !== '' && this.node.getConnections(parsePeerId(peerId)).some((c) => c.status === 'open')
  }

  /** Whether this gateway currently holds a reservation (a circuit listen address) on the relay. */
  reserved(peerId: string): boolean {
    return this.circuitAddrs(peerId).length > 0
  }

  /** This gateway's circuit addresses through a relay. */
  circuitAddrs(peerId: string): string[] {
    if (peerId === '') return []
    return this.node
      .getMultiaddrs()
      .map(String)
      .filter((a) => a.includes(`/p2p/${peerId}/p2p-circuit`))
  }

  usable(): Array<{ addr: string; peerId: string }> {
    return this.states
      .filter((s) => s.healthy && !s.suspect)
      .sort((a, b) => a.rttMs - b.rttMs)
      .map((s) => ({ addr: dialAddr(s), peerId: s.peerId }))
  }

  unhealthy(relayPeerId: string): boolean {
    const s = this.states.find((x) => x.peerId === relayPeerId)
    return s != null && (!s.healthy || s.suspect)
  }

  reportFailure(relayPeerId: string, reason: string): void {
    const s = this.states.find((x) => x.peerId === relayPeerId)
    if (s == null || s.suspect) return
    s.suspect = true
    s.lastError = `relayed call failed: ${reason}`
    this.o.log.warn('relay suspect after a failed relayed call', { relay: s.addr, reason })
    this.onReservationsChanged()
    // Check it now instead of waiting for the next interval.
    void this.checkOne(s)
  }

  private schedule(): void {
    if (!this.running) return
    this.timer = setTimeout(() => {
      this.checking = this.checkAll().finally(() => this.schedule())
    }, this.o.healthIntervalMs)
    this.timer.unref()
  }

  private async checkAll(): Promise<void> {
    await Promise.all(this.states.map((s) => this.checkOne(s)))
    await this.ensureReservations()
  }

  /**
   * The last connection to a relay closed (the relay died, restarted or the network dropped): check it now
   * rather than at the next interval, so a dead relay is unhealthy one interval after its death, not two.
   */
  /** A closed relay connection (e.g. a crashed relay) is noticed at once: suspect now, checked now. */
  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    if (!this.running) return
    for (const s of this.states.filter((x) => x.peerId === evt.detail.toString())) {
      s.suspect = true
      s.lastError = 'connection to the relay closed'
      this.onReservationsChanged()
      void this.checkOne(s)
    }
  }

  /** Checks one relay; a check already running for it is joined, not doubled (one outcome, one count). */
  private checkOne(s: RelayState): Promise<void> {
    const running = this.checks.get(s)
    if (running != null) return running
    const check = this.runCheck(s).finally(() => this.checks.delete(s))
    this.checks.set(s, check)
    return check
  }

  private async runCheck(s: RelayState): Promise<void> {
    const now = Date.now()
    s.lastCheckAtMs = now
    try {
      if (!this.connected(s.peerId)) {
        if (now < s.nextReconnectAtMs) throw new Error(s.lastError || 'not connected; waiting to reconnect')
        s.reconnectAttempts++
        s.nextReconnectAtMs = now + Math.min(this.o.reconnectMaxMs, this.o.reconnectBaseMs * 2 ** (s.reconnectAttempts - 1))
        // Dialled by the configured address: without /p2p/ the handshake tells who answers.
        const conn = await this.node.dial(multiaddr(s.addr), { signal: AbortSignal.timeout(this.o.healthTimeoutMs) })
        this.learn(s, conn.remotePeer.toString())
      }
      const peer = parsePeerId(s.peerId)
      // libp2p's ping measures with Date.now() (whole ms, 0 on a fast link); the RTT we report and sort by is
      // timed here with sub-millisecond resolution.
      const pingStartedAt = performance.now()
      await this.node.services.ping.ping(peer, { signal: AbortSignal.timeout(this.o.healthTimeoutMs) })
      const rtt = performance.now() - pingStartedAt
      const wasHealthy = s.healthy && !s.suspect
      s.rttMs = rtt
      s.consecutiveFailures = 0
      s.lastSuccessAtMs = Date.now()
      s.healthy = true
      s.suspect = false
      s.lastError = ''
      s.reconnectAttempts = 0
      s.nextReconnectAtMs = 0
      this.observer.check?.(s, true, rtt, undefined)
      if (!wasHealthy) {
        this.o.log.info('relay healthy', { relay: s.addr, rttMs: rtt })
        this.onReservationsChanged()
        if (this.running) void this.ensureReservations()
      }
    } catch (err: unknown) {
      const wasHealthy = s.healthy
      s.consecutiveFailures++
      s.lastError = messageOf(err)
      if (s.consecutiveFailures >= this.o.unhealthyAfterFailures) s.healthy = false
      this.observer.check?.(s, false, 0, s.lastError)
      if (wasHealthy && !s.healthy) {
        this.o.log.warn('relay unhealthy', { relay: s.addr, failures: s.consecutiveFailures, error: s.lastError })
        this.onReservationsChanged()
        if (this.running) void this.ensureReservations()
      }
    }
  }

  /**
   * Records the peer id that answered on a relay's configured address. A pinned address cannot answer with
   * another id (the Noise handshake refuses it); an unpinned one may: the relay got a new identity (a fresh
   * volume, a replaced pod), and the gateway follows it. The old relay's reservation ended with its connection.
   */
  private learn(s: RelayState, peerId: string): void {
    if (s.peerId === peerId) return
    if (s.peerId === '') this.o.log.info('relay peer id learned', { relay: s.addr, peerId })
    else this.o.log.warn('relay identity changed', { relay: s.addr, from: s.peerId, to: peerId })
    s.peerId = peerId
    s.healthy = false
    s.consecutiveFailures = 0
    s.rttMs = 0
  }

  private reserving = false
  private reserveAgain = false

  /** Keeps reservations on up to maxReservedRelays healthy relays (lowest RTT first). */
  private async ensureReservations(): Promise<void> {
    if (this.reserving) {
      // Asked while a pass is running (e.g. another relay just turned healthy): run once more after it.
      this.reserveAgain = true
      return
    }
    this.reserving = true
    try {
      do {
        this.reserveAgain = false
        await this.reservePass()
      } while (this.reserveAgain && this.running)
    } finally {
      this.reserving = false
    }
  }

  private async reservePass(): Promise<void> {
    const healthy = this.states.filter((s) => s.healthy && !s.suspect).sort((a, b) => a.rttMs - b.rttMs)
    let held = healthy.filter((s) => this.reserved(s.peerId)).length
    for (const s of healthy) {
      if (held >= this.o.maxReservedRelays) break
      if (this.reserved(s.peerId)) continue
      // Still "healthy" after a single failed check (e.g. it was just killed): reserve once a check succeeds again.
      if (s.consecutiveFailures > 0) continue
      try {
        // Bounded: a relay that accepts the connection but never answers must not block the others.
        await withTimeout(transportManagerOf(this.node).listen([multiaddr(`${dialAddr(s)}/p2p-circuit`)]), this.o.reservationTimeoutMs)
        // The transport manager is fault tolerant (node.ts): a listen that failed resolves all the same.
        if (!this.reserved(s.peerId)) throw new Error('no reservation was made (relay unreachable?)')
        held++
        this.o.log.info('reserved on relay', { relay: s.addr, peerId: s.peerId })
        this.onReservationsChanged()
      } catch (err: unknown) {
        s.lastError = `reservation refused: ${messageOf(err)}`
        this.o.log.warn('reservation failed', { relay: s.addr, error: s.lastError })
      }
    }
  }
}

/** The relay's address with its (pinned or learned) peer id, as circuit addresses need it. */
function dialAddr(s: RelayState): string {
  return s.pinned ? s.addr : `${s.addr}/p2p/${s.peerId}`
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}
