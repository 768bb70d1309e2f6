import type { Connection } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { Code, StargateError } from '@stargate/shared/errors'
import type { Logger } from '@stargate/shared/log'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import { type GatewayNode, transportManagerOf } from '../node.ts'
import type { ConnectionBudgets } from '../peer/budget.ts'
import { PeerChannel, type PeerChannelOptions } from '../peer/channel.ts'
import { CALL_PROTOCOL, type FrameReaderOptions } from '../peer/frames.ts'
import { type RequestSink, type StreamSink, serveCallStream } from '../peer/server.ts'
import type { PeerBook } from '../peers.ts'
import type { ChannelPool, PooledChannel } from '../pool.ts'
import type { TierInbound, TierLink } from './tier.ts'

/**
 * What the two libp2p tiers (direct and relay) share: opening a call channel on a connection, the link a
 * pooled channel gives the router, and the one inbound handler that serves calls arriving on either.
 */

/** What the libp2p tiers need. */
export interface Libp2pTierComponents {
  node: GatewayNode
  pool: ChannelPool
  peers: PeerBook
  channel: PeerChannelOptions
  log: Logger
}

const CIRCUIT = '/p2p-circuit'

export function isCircuit(ma: Multiaddr | string): boolean {
  return ma.toString().includes(CIRCUIT)
}

/** Opens the long-lived call stream on a connection (relayed connections are "limited" in libp2p terms). */
export async function openChannel(conn: Connection, limited: boolean, c: Libp2pTierComponents, signal: AbortSignal): Promise<PeerChannel> {
  const stream = await conn.newStream(CALL_PROTOCOL, { signal, runOnLimitedConnection: limited })
  stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, c.channel.maxFrameBytes * 2)
  return new PeerChannel(stream, conn, c.channel, c.log)
}

/** Dials one address with its transport directly (no per-peer dial queue); the connection is tracked as usual. */
export async function dialTransport(node: GatewayNode, ma: Multiaddr, signal: AbortSignal): Promise<Connection> {
  return transportManagerOf(node).dial(ma, { signal })
}

/**
 * The link over a pooled channel: calls and tunnelled streams. A failed send (not a cancelled one), or a
 * stream that cannot be opened because the channel failed, reports the channel broken. `reused`: the channel
 * was already pooled (not opened for this exchange).
 */
export function linkFor(pooled: PooledChannel, onFailure: () => void, reused: boolean): TierLink {
  return {
    via: pooled.via,
    reused,
    send: async (req, signal) => {
      try {
        return await pooled.channel.call(req, signal)
      } catch (err: unknown) {
        if (!signal.aborted) onFailure()
        throw err
      }
    },
    openStream: (init, events) => {
      const tunnel = pooled.channel.tunnel
      if (!tunnel.usable) onFailure()
      return tunnel.open(init, events)
    },
  }
}

/** Wraps anything a dial or stream open threw as UNAVAILABLE (unless it maps to a better code). */
export function unavailable(err: unknown): StargateError {
  return StargateError.from(err, Code.Unavailable)
}

/**
 * The callee side of both libp2p tiers: one handler for /stargate/call/1.0.0 streams, on direct and on
 * relayed connections alike, feeding the inbound dispatcher. Each connection's streams and buffered bytes
 * are bounded by its budget (our limit, counted, below libp2p's own stream limit).
 */
export function libp2pInbound(
  c: Libp2pTierComponents,
  sink: RequestSink,
  streams: StreamSink,
  reader: FrameReaderOptions,
  budgets: ConnectionBudgets,
): TierInbound {
  const log = c.log.child('peer')
  return {
    start: () =>
      c.node.handle(
        CALL_PROTOCOL,
        (stream, connection) => serveCallStream(stream, connection, sink, streams, reader, budgets.of(connection), log),
        {
          runOnLimitedConnection: true,
          maxInboundStreams: Math.max(budgets.maxStreams + 1, GATEWAY_DEFAULTS.maxStreamsPerConnection),
          maxOutboundStreams: GATEWAY_DEFAULTS.maxStreamsPerConnection,
        },
      ),
    stop: () => c.node.unhandle(CALL_PROTOCOL),
  }
}
