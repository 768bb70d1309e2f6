import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { type Identify, identify } from '@libp2p/identify'
import type { Connection, PrivateKey } from '@libp2p/interface'
import { FaultTolerance } from '@libp2p/interface'
import { type Ping, ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import type { Multiaddr } from '@multiformats/multiaddr'
import { noiseCrypto } from '@stargate/shared/noise-crypto'
import { createLibp2p, type Libp2p } from 'libp2p'
import { GATEWAY_DEFAULTS } from './defaults.ts'

/** The libp2p services every gateway runs. */
export interface GatewayServices {
  identify: Identify
  ping: Ping
  [key: string]: unknown
}

export type GatewayNode = Libp2p<GatewayServices>

export interface GatewayNodeOptions {
  privateKey: PrivateKey
  listen: string[]
  announce: string[]
  maxConnections: number
  /** A reservation request that gets no answer within this long fails. */
  reservationTimeoutMs: number
  inboundConnectionsPerSecond: number
  dialTimeoutMs: number
  yamuxMaxMessageBytes: number
}

/** A libp2p node (not started) with tcp, noise, yamux, identify, ping and the circuit relay transport. */
export async function createGatewayNode(o: GatewayNodeOptions): Promise<GatewayNode> {
  return createLibp2p({
    start: false,
    privateKey: o.privateKey,
    // --p2p-announce adds to what libp2p announces (listen and circuit addresses); it does not replace them.
    addresses: { listen: o.listen, appendAnnounce: o.announce },
    // Reservations on relays are made after start by relay health (relays.ts); a failing listen is not fatal.
    transportManager: { faultTolerance: FaultTolerance.NO_FATAL },
    transports: [tcp(), circuitRelayTransport({ reservationCompletionTimeout: o.reservationTimeoutMs })],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux({ maxMessageSize: o.yamuxMaxMessageBytes })],
    connectionManager: {
      maxConnections: o.maxConnections,
      inboundConnectionThreshold: o.inboundConnectionsPerSecond,
      dialTimeout: o.dialTimeoutMs,
    },
    services: {
      identify: identify(),
      // Room for every pinger of a connection at once: with libp2p's one outbound ping stream, the connection
      // monitor's heartbeat fails while a liveness probe or relay health check is in flight, and aborts the
      // connection with every call, tunnelled stream and circuit on it.
      ping: ping({
        maxOutboundStreams: GATEWAY_DEFAULTS.maxPingStreamsPerConnection,
        maxInboundStreams: GATEWAY_DEFAULTS.maxPingStreamsPerConnection,
      }),
    },
  })
}

/** The parts of libp2p's transport manager the gateway uses (listen on a relay later; dial one address). */
export interface TransportManagerLike {
  listen(addrs: Multiaddr[]): Promise<void>
  dial(ma: Multiaddr, options: { signal: AbortSignal }): Promise<Connection>
}

/**
 * libp2p has no public API to listen on a relay after start, nor to dial one address without the per-peer
 * dial queue (which merges a relay dial into a pending direct dial to the same peer). Its transport
 * manager does both; this is the one place that reaches for it.
 */
export function transportManagerOf(node: GatewayNode): TransportManagerLike {
  return (node as unknown as { components: { transportManager: TransportManagerLike } }).components.transportManager
}
