import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '@stargate/shared/log'
import { noiseCrypto } from '@stargate/shared/noise-crypto'
import { createLibp2p, type Libp2p } from 'libp2p'
import { installAdmission } from './admission.ts'
import type { CircuitLimits } from './circuit-limits.ts'
import { RELAY_DEFAULTS } from './defaults.ts'
import { HopServer } from './hop.ts'
import type { SpliceEnd } from './splice.ts'
import { type RefusalReasonName, RelayStats } from './stats.ts'

/** Options of a relay; every field has a default in RELAY_DEFAULTS. */
export interface RelayOptions extends CircuitLimits {
  privateKey: PrivateKey
  host: string
  port: number
  announce: string[]
  maxConnections: number
  maxReservations: number
  reservationTtlMs: number
  maxCircuitBytes: number
  maxCircuitDurationMs: number
  maxReservationsPerPeer: number
  maxReservationsPerIp: number
  maxConnectionsPerIpPerSecond: number
  maxReservationsPerIpPerSecond: number
  stopTimeoutMs: number
  maxStopFailures: number
  /** Peer ids allowed to reserve and relay; empty allows everyone. */
  allowlist: string[]
  shutdownGraceMs: number
  log: Logger
}

export type RelayInit = Pick<RelayOptions, 'privateKey' | 'log'> & Partial<RelayOptions>

/** Fills defaults and validates. */
export function resolveRelayOptions(init: RelayInit): RelayOptions {
  const o: RelayOptions = {
    host: RELAY_DEFAULTS.host,
    port: RELAY_DEFAULTS.port,
    announce: [],
    maxConnections: RELAY_DEFAULTS.maxConnections,
    maxReservations: init.maxReservations ?? init.maxConnections ?? RELAY_DEFAULTS.maxReservations,
    reservationTtlMs: RELAY_DEFAULTS.reservationTtlMs,
    maxCircuitBytes: RELAY_DEFAULTS.maxCircuitBytes,
    maxCircuitDurationMs: RELAY_DEFAULTS.maxCircuitDurationMs,
    maxReservationsPerPeer: RELAY_DEFAULTS.maxReservationsPerPeer,
    maxReservationsPerIp: RELAY_DEFAULTS.maxReservationsPerIp,
    maxConnectionsPerIpPerSecond: RELAY_DEFAULTS.maxConnectionsPerIpPerSecond,
    maxReservationsPerIpPerSecond: RELAY_DEFAULTS.maxReservationsPerIpPerSecond,
    maxCircuitsPerIpPerSecond: RELAY_DEFAULTS.maxCircuitsPerIpPerSecond,
    maxCircuitsToPeerPerSecond: RELAY_DEFAULTS.maxCircuitsToPeerPerSecond,
    maxCircuitsPerIp: RELAY_DEFAULTS.maxCircuitsPerIp,
    maxCircuitsPerPeer: RELAY_DEFAULTS.maxCircuitsPerPeer,
    maxCircuitsToPeer: RELAY_DEFAULTS.maxCircuitsToPeer,
    stopTimeoutMs: RELAY_DEFAULTS.stopTimeoutMs,
    maxStopFailures: RELAY_DEFAULTS.maxStopFailures,
    allowlist: [],
    shutdownGraceMs: RELAY_DEFAULTS.shutdownGraceMs,
    ...stripUndefined(init),
  } as RelayOptions
  for (const a of o.announce) multiaddr(a)
  if (o.maxConnections < 1) throw new RangeError('maxConnections must be at least 1')
  if (o.maxReservations < 1) throw new RangeError('maxReservations must be at least 1')
  if (o.maxReservationsPerPeer < 1) throw new RangeError('maxReservationsPerPeer must be at least 1')
  if (o.maxReservationsPerIp < 1) throw new RangeError('maxReservationsPerIp must be at least 1')
  if (o.maxConnectionsPerIpPerSecond < 1) throw new RangeError('maxConnectionsPerIpPerSecond must be at least 1')
  if (o.maxReservationsPerIpPerSecond < 1) throw new RangeError('maxReservationsPerIpPerSecond must be at least 1')
  for (const k of [
    'maxCircuitsPerIpPerSecond',
    'maxCircuitsToPeerPerSecond',
    'maxCircuitsPerIp',
    'maxCircuitsPerPeer',
    'maxCircuitsToPeer',
    'stopTimeoutMs',
    'maxStopFailures',
  ] as const) {
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new RangeError(`${k} must be a whole number of at least 1`)
  }
  if (o.reservationTtlMs < 1000) throw new RangeError('reservationTtlMs must be at least 1000')
  if (o.maxCircuitBytes < 0 || o.maxCircuitDurationMs < 0 || o.shutdownGraceMs < 0) {
    throw new RangeError('limits and grace periods cannot be negative')
  }
  return o
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** Live relay numbers. */
export interface RelaySnapshot {
  reservations: number
  activeCircuits: number
  totalCircuits: number
  totalReservations: number
  reservationsReplaced: number
  reservationsDropped: number
  bytesFromInitiator: bigint
  bytesToInitiator: bigint
  refusals: Map<RefusalReasonName, number>
  circuitEnds: Map<SpliceEnd, number>
  connections: number
  uptimeMs: number
}

/** At most this many refusal log lines per reason and second; the rest are counted in `suppressed`. */
const REFUSAL_LOG_LINES_PER_SECOND = 10

/** A Circuit Relay v2 hop node: libp2p (TCP, Noise, Yamux, identify, ping) plus our hop server. */
export class Relay {
  readonly options: RelayOptions
  readonly startedAt = new Date()
  readonly stats = new RelayStats()
  private node?: Libp2p
  private hop?: HopServer
  private closing = false
  private listenAddrs: string[] = []
  private readonly refusalLog = new Map<RefusalReasonName, { second: number; lines: number; suppressed: number }>()

  constructor(init: RelayInit) {
    this.options = resolveRelayOptions(init)
  }

  get peerId(): PeerId {
    if (this.node == null) throw new Error('relay not started')
    return this.node.peerId
  }

  /** Advertised multiaddrs, each ending in /p2p/<peer id>. */
  get multiaddrs(): string[] {
    return this.node?.getMultiaddrs().map((m) => m.toString()) ?? []
  }

  async start(): Promise<void> {
    const o = this.options
    const admission = {
      maxConnections: o.maxConnections,
      maxConnectionsPerIpPerSecond: o.maxConnectionsPerIpPerSecond,
      closing: () => this.closing,
      refuse: (reason: RefusalReasonName, fields: Record<string, unknown>) => this.refuse(reason, fields),
    }
    const node = await createLibp2p({
      start: false,
      privateKey: o.privateKey,
      addresses: {
        listen: [`/${o.host.includes(':') ? 'ip6' : 'ip4'}/${o.host}/tcp/${o.port}`],
        announce: o.announce,
      },
      transports: [tcp()],
      connectionEncrypters: [noise({ crypto: noiseCrypto })],
      streamMuxers: [yamux()],
      connectionManager: {
        maxConnections: o.maxConnections,
        // The per-IP connection rate (o.maxConnectionsPerIpPerSecond) is enforced and counted by our admission
        // wrapper (admission.ts), which runs first; libp2p's own limiter (default 5/s) is switched off explicitly.
        inboundConnectionThreshold: Number.MAX_SAFE_INTEGER,
        maxIncomingPendingConnections: RELAY_DEFAULTS.maxIncomingPendingConnections,
      },
      connectionMonitor: {
        pingInterval: RELAY_DEFAULTS.connectionPingIntervalMs,
        pingTimeout: { minTimeout: RELAY_DEFAULTS.connectionPingTimeoutMs },
      },
      services: {
        identify: identify(),
        ping: ping({ maxInboundStreams: RELAY_DEFAULTS.maxInboundPingStreams }),
        admission: (components) => {
          installAdmission(components.connectionManager, admission)
          return {}
        },
      },
    })
    node.addEventListener('transport:listening', (evt) => {
      this.listenAddrs.push(...evt.detail.getAddrs().map((a) => a.toString()))
    })
    await node.start()
    this.node = node
    this.hop = new HopServer({
      node,
      privateKey: o.privateKey,
      stats: this.stats,
      log: o.log.child('hop'),
      refuse: (reason, fields) => this.refuse(reason, fields),
      options: {
        ...o,
        hopTimeoutMs: RELAY_DEFAULTS.hopTimeoutMs,
        maxInboundHopStreams: RELAY_DEFAULTS.maxInboundHopStreams,
        maxOutboundStopStreams: RELAY_DEFAULTS.maxOutboundStopStreams,
      },
    })
    await this.hop.start()
    o.log.info('relay started', {
      peerId: node.peerId.toString(),
      multiaddrs: this.multiaddrs,
      listenAddrs: this.listenAddrs,
      maxConnections: o.maxConnections,
      maxReservations: o.maxReservations,
      maxCircuitBytes: o.maxCircuitBytes,
      maxCircuitDurationMs: o.maxCircuitDurationMs,
      allowlist: o.allowlist.length,
    })
  }

  /** Counts and logs a refusal (log lines throttled per reason). */
  refuse(reason: RefusalReasonName, fields: Record<string, unknown>): void {
    this.stats.refuse(reason)
    const second = Math.floor(Date.now() / 1000)
    let l = this.refusalLog.get(reason)
    if (l == null || l.second !== second) {
      l = { second, lines: 0, suppressed: l?.suppressed ?? 0 }
      this.refusalLog.set(reason, l)
    }
    if (l.lines >= REFUSAL_LOG_LINES_PER_SECOND) {
      l.suppressed++
      return
    }
    l.lines++
    const suppressed = l.suppressed
    l.suppressed = 0
    this.options.log.info('refused', { reason, ...fields, ...(suppressed > 0 ? { suppressed } : {}) })
  }

  snapshot(): RelaySnapshot {
    const s = this.stats
    return {
      reservations: this.hop?.reservations.size ?? 0,
      activeCircuits: s.activeCircuits,
      totalCircuits: s.totalCircuits,
      totalReservations: s.totalReservations,
      reservationsReplaced: s.reservationsReplaced,
      reservationsDropped: s.reservationsDropped,
      bytesFromInitiator: s.bytesFromInitiator,
      bytesToInitiator: s.bytesToInitiator,
      refusals: new Map(s.refusals),
      circuitEnds: new Map(s.circuitEnds),
      connections: this.node?.getConnections().length ?? 0,
      uptimeMs: Date.now() - this.startedAt.getTime(),
    }
  }

  /**
   * Graceful stop: refuse new connections, reservations and circuits at once, let active circuits finish for
   * up to graceMs (default options.shutdownGraceMs), then end the rest and stop libp2p.
   */
  async stop(graceMs: number = this.options.shutdownGraceMs): Promise<void> {
    if (this.node == null) return
    this.closing = true
    const active = this.stats.activeCircuits
    if (active > 0) this.options.log.info('draining circuits', { activeCircuits: active, graceMs })
    await this.hop?.drain(graceMs)
    if (this.stats.activeCircuits > 0) {
      this.options.log.warn('grace period over, closing circuits', { activeCircuits: this.stats.activeCircuits })
    }
    await this.hop?.stop()
    await this.node.stop()
    this.node = undefined
    this.hop = undefined
  }
}
