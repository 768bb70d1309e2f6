import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { type Clock, systemClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { deadline } from '@stargate/shared/signals'
import type { FailureHistory } from '../failure-history.ts'
import type { PeerBook } from '../peers.ts'
import type { ChannelPool, PooledChannel } from '../pool.ts'
import { type Circuit, type CircuitCandidate, circuitCandidates, raceStaggered, relayOfCircuit } from './circuits.ts'
import { dialTransport, type Libp2pTierComponents, linkFor, openChannel, unavailable } from './libp2p.ts'
import { SingleFlight } from './single-flight.ts'
import type { TierLink, TierTransport } from './tier.ts'

/** What the relay tier needs from relay health monitoring (relays.ts implements it). */
export interface RelaySelector {
  /** Healthy relays, lowest RTT first. */
  usable(): Array<{ addr: string; peerId: string }>
  /** Whether the relay is one of ours that fails its health checks. */
  unhealthy(relayPeerId: string): boolean
  /** The relay itself could not be reached for a relayed call: mark it suspect now (passive detection). */
  reportFailure(relayPeerId: string, reason: string): void
}

/** How the relay tier races and remembers circuits (defaults in GATEWAY_DEFAULTS). */
export interface RelayTierOptions {
  /** Within one attempt, the next circuit starts when the ones started have not opened after this long. */
  staggerMs: number
  /** A background probe of a cooled-down circuit gives up after this long. */
  probeTimeoutMs: number
  /** Failures per (target, relay): a circuit that failed toward a peer is tried last. */
  history: FailureHistory
  clock?: Clock
}

/** How the relay tier opens circuits: over libp2p in the gateway (libp2pCircuits), fake dials in unit tests. */
export interface CircuitDialer {
  /** Dials one circuit and opens the call channel on it; rejects when it cannot. */
  open(circuit: Circuit, signal: AbortSignal): Promise<PooledChannel>
  /** Whether an open connection to the relay itself is held. */
  connectedTo(relayPeerId: string): boolean
}

/** What the relay tier needs. */
export interface RelayTierComponents {
  pool: ChannelPool
  peers: PeerBook
  log: Logger
  circuits: CircuitDialer
}

/** Circuits over libp2p: dialled through the transport manager, a call channel opened on each. */
export function libp2pCircuits(c: Libp2pTierComponents): CircuitDialer {
  return {
    async open(circuit, signal) {
      // Dialled through the transport manager: libp2p's dial queue merges dials to one peer id, so a relay
      // dial would otherwise wait behind a direct dial that a firewall silently drops (or behind another circuit).
      const conn = await dialTransport(c.node, multiaddr(circuit.addr), signal)
      try {
        const channel = await openChannel(conn, true, c, signal)
        return { channel, via: circuit.addr, relayPeerId: circuit.relayPeerId }
      } catch (err: unknown) {
        await conn.close().catch(() => {})
        throw err
      }
    },
    connectedTo(relayPeerId) {
      try {
        return c.node.getConnections(peerIdFromString(relayPeerId)).some((conn) => conn.status === 'open')
      } catch {
        return false
      }
    },
  }
}

/** The relay's own answer to CONNECT, as js-libp2p words a refusal: "failed to connect via relay with status X". */
const RELAY_STATUS = /with status ([A-Z_]+)/

/**
 * Tier 2: a libp2p Circuit Relay v2 connection. Within one attempt the circuits toward the peer are raced
 * with a short stagger (circuits.ts orders them: what the peer announces, our relays' health and RTT,
 * what failed toward this peer); the first to open wins and is pooled. A circuit that fails toward a peer is
 * tried last for that peer only, and probed in the background while it cools down; the relay is reported
 * unhealthy for everybody only when it could not be reached at all.
 */
export class RelayTier implements TierTransport {
  readonly tier = Tier.RELAY
  private readonly c: RelayTierComponents
  private readonly relays: RelaySelector
  private readonly o: RelayTierOptions
  private readonly clock: Clock
  private readonly probing = new Set<string>()
  private readonly opening = new SingleFlight<PooledChannel>()

  constructor(components: RelayTierComponents, relays: RelaySelector, options: RelayTierOptions) {
    this.c = components
    this.relays = relays
    this.o = options
    this.clock = options.clock ?? systemClock
  }

  /** Circuits to try toward peerId, best first. */
  circuits(peerId: string): CircuitCandidate[] {
    return circuitCandidates(peerId, {
      usable: this.relays.usable(),
      unhealthy: (relay) => this.relays.unhealthy(relay),
      announced: this.announced(peerId),
      failedAtMs: (relay) => this.o.history.failedAtMs(peerId, relay),
    })
  }

  async unavailableReason(peerId: string): Promise<string | undefined> {
    if (this.c.pool.has(peerId, this.tier)) return undefined
    // circuits(peerId) is empty exactly when no relay of ours is usable and the peer announces no circuit;
    // asked before every exchange, so without building and ranking the candidates.
    if (this.relays.usable().length === 0 && !this.announced(peerId).some((a) => relayOfCircuit(a) !== '')) {
      return 'no healthy relay and no circuit address known for the peer'
    }
    return undefined
  }

  async connect(peerId: string, signal: AbortSignal): Promise<TierLink> {
    const pooled = this.c.pool.get(peerId, this.tier)
    // A pooled circuit through a relay the peer no longer announces is not preferred: a fresh one is raced.
    if (pooled != null && this.stillAnnounced(peerId, pooled.relayPeerId)) return this.link(peerId, pooled, true)
    try {
      // Concurrent first calls share one race: each opening its own circuit would retire the others'.
      const entry = await this.opening.run(peerId, signal, (s) => this.open(peerId, s))
      return this.link(peerId, entry, false)
    } catch (err: unknown) {
      if (signal.aborted) throw StargateError.from(signal.reason, Code.Canceled)
      // Every fresh circuit failed: the pooled one, though no longer announced, may still work.
      if (pooled?.channel.open === true) return this.link(peerId, pooled, true)
      throw err
    }
  }

  /** Races the circuits toward peerId; the winner is pooled. */
  private async open(peerId: string, signal: AbortSignal): Promise<PooledChannel> {
    const candidates = this.circuits(peerId)
    const reasons: string[] = []
    try {
      const won = await raceStaggered(candidates, {
        staggerMs: this.o.staggerMs,
        signal,
        clock: this.clock,
        dial: (c, s) => this.c.circuits.open(c, s),
        onFailure: (c, err) => {
          const e = unavailable(err)
          reasons.push(`via ${c.relayPeerId}: ${e.rawMessage}`)
          this.circuitFailed(peerId, c.relayPeerId, e.rawMessage)
        },
        release: (entry) => void entry.channel.retire().catch(() => {}),
      })
      this.o.history.succeeded(peerId, won.candidate.relayPeerId)
      this.c.pool.put(peerId, this.tier, won.value)
      for (const c of candidates) if (c.coolingDown && !won.started.includes(c)) this.probe(peerId, c)
      return won.value
    } catch (err: unknown) {
      if (signal.aborted) throw StargateError.from(signal.reason, Code.Canceled)
      throw new StargateError(Code.Unavailable, reasons.length > 0 ? reasons.join('; ') : StargateError.from(err).rawMessage)
    }
  }

  private link(peerId: string, entry: PooledChannel, reused: boolean): TierLink {
    return linkFor(
      entry,
      () => {
        this.c.pool.drop(peerId, this.tier)
        if (entry.relayPeerId != null) this.circuitFailed(peerId, entry.relayPeerId, 'relayed call failed')
      },
      reused,
    )
  }

  /**
   * A circuit through the relay failed toward the peer: tried last for that peer. Only when the relay itself is
   * out of reach (it did not answer with a status and we hold no open connection to it) is it reported, which
   * makes it suspect for every peer; NO_RESERVATION, CONNECTION_FAILED and the like concern this peer alone.
   */
  private circuitFailed(peerId: string, relayPeerId: string, reason: string): void {
    this.o.history.failed(peerId, relayPeerId)
    if (RELAY_STATUS.test(reason) || this.c.circuits.connectedTo(relayPeerId)) return
    this.relays.reportFailure(relayPeerId, reason)
  }

  /** Opens a cooled-down circuit in the background; success ends its cool-down (the connection is not kept). */
  private probe(peerId: string, c: CircuitCandidate): void {
    const key = `${peerId} ${c.relayPeerId}`
    if (this.probing.has(key)) return
    this.probing.add(key)
    const attempt = deadline(this.o.probeTimeoutMs, undefined, this.clock)
    this.c.circuits
      .open(c, attempt.signal)
      .then(
        (entry) => {
          this.o.history.succeeded(peerId, c.relayPeerId)
          this.c.log.info('circuit recovered toward peer', { peerId, relay: c.relayPeerId })
          return entry.channel.retire()
        },
        () => this.o.history.failed(peerId, c.relayPeerId),
      )
      .catch(() => {})
      .finally(() => {
        attempt.dispose()
        this.probing.delete(key)
      })
  }

  /** The circuit addresses the peer announces (presence record or static --peer). */
  private announced(peerId: string): string[] {
    return this.c.peers.get(peerId)?.circuitAddrs ?? []
  }

  /** Whether the peer still announces a circuit through the relay (or announces none, so nothing is known). */
  private stillAnnounced(peerId: string, relayPeerId: string | undefined): boolean {
    const announced = this.announced(peerId)
    return announced.length === 0 || announced.some((a) => relayOfCircuit(a) === relayPeerId)
  }
}
