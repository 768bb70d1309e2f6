import { create, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import { durationFromMs, timestampFromDate, timestampFromMs, ValueSchema } from '@bufbuild/protobuf/wkt'
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect'
import { Code, StargateError } from '@stargate/shared/errors'
import {
  type CallRequest,
  type CallResponse,
  CallResponseSchema,
  type DiscoverResponse,
  DiscoverResponseSchema,
  type GatewayService,
  type GetPeerMetricsResponse,
  GetPeerMetricsResponseSchema,
  type GetPoolStatsResponse,
  GetPoolStatsResponseSchema,
  type GetRelayHealthResponse,
  GetRelayHealthResponseSchema,
  type GetStatusResponse,
  GetStatusResponseSchema,
  type ListPeersResponse,
  ListPeersResponseSchema,
  type NatsState,
  type PeerInfoSchema,
  type ServeRequest,
  type ServeResponseSchema,
} from '@stargate/shared/gen/gateway'
import { STARGATE_VERSION } from '@stargate/shared/version'
import { type PeerMetricsRecord, PeerMetricsTable } from '../metrics.ts'
import type { NatStatusInit } from '../nat/detector.ts'
import { parsePeerId } from '../peer-ids.ts'
import type { KnownPeer } from '../peers.ts'
import type { PoolStats } from '../pool.ts'
import type { RelayState } from '../relays.ts'
import type { CallResponseInit } from '../router.ts'
import { type ServeRegistry, ServeSession } from '../serve.ts'

/** One configured relay as GetStatus and GetRelayHealth show it. */
export interface RelayView extends RelayState {
  connected: boolean
  reserved: boolean
  circuitAddrs: string[]
}

/** What GetStatus reports, read from the gateway's parts. */
export interface StatusView {
  listenAddrs: string[]
  announcedAddrs: string[]
  natStatus: NatStatusInit
  nats: {
    state: NatsState
    url: string
    subject: string
    connectedServer: string
    connectedServerName: string
    knownServers: string[]
  }
}

/**
 * What the API handlers need of the gateway, and nothing more (wired in gateway.ts). The handlers validate
 * requests and shape answers; calls go to `call`, the gateway's one outbound call path.
 */
export interface GatewayApi {
  readonly peerId: string
  readonly startedAt: Date
  readonly maxPayloadBytes: number
  /** Deadline of a Call without a client deadline. */
  readonly callDeadlineMs: number
  /** Plans, routes, tracks and traces one Call; rejects with a StargateError. */
  call(req: CallRequest, timeoutMs: number, signal: AbortSignal): Promise<CallResponseInit>
  readonly serve: Pick<ServeRegistry, 'add' | 'remove' | 'changed' | 'methods'>
  status(): StatusView
  relays(): RelayView[]
  peerMetrics(): { all(): PeerMetricsRecord[]; get(peerId: string): PeerMetricsRecord | undefined }
  poolStats(): PoolStats
  peers(): { all(): KnownPeer[]; withCapability(capability: string): KnownPeer[] }
}

/** The payload's size on the wire (the JSON form is sent as a google.protobuf.Value). */
function payloadBytes(p: CallRequest['payload']): number {
  if (p.case === 'data') return p.value.byteLength
  if (p.case === 'json') return toBinary(ValueSchema, p.value).byteLength
  return 0
}

function peerInfo(p: KnownPeer): MessageInitShape<typeof PeerInfoSchema> {
  return {
    peerId: p.peerId,
    directAddrs: p.directAddrs,
    circuitAddrs: p.circuitAddrs,
    capabilities: p.capabilities,
    natType: p.natType,
    source: p.source,
    lastSeen: timestampFromMs(p.lastSeenMs),
  }
}

/** The GatewayService API over a gateway. */
export function gatewayServiceImpl(gw: GatewayApi): ServiceImpl<typeof GatewayService> {
  async function call(req: CallRequest, ctx: HandlerContext): Promise<CallResponse> {
    if (req.peerId === '') throw new StargateError(Code.InvalidArgument, 'peer_id is required (the target gateway peer id, 12D3KooW...)')
    try {
      parsePeerId(req.peerId)
    } catch {
      throw new StargateError(Code.InvalidArgument, `peer_id "${req.peerId}" is not a valid libp2p peer id`)
    }
    if (req.method === '')
      throw new StargateError(Code.InvalidArgument, 'method is required (e.g. "ping" or a method a Serve client registered)')
    const size = payloadBytes(req.payload)
    if (size > gw.maxPayloadBytes) {
      throw new StargateError(Code.ResourceExhausted, `payload of ${size} bytes exceeds the maximum of ${gw.maxPayloadBytes} bytes`)
    }
    return create(CallResponseSchema, await gw.call(req, ctx.timeoutMs() ?? gw.callDeadlineMs, ctx.signal))
  }

  async function* serve(
    requests: AsyncIterable<ServeRequest>,
    ctx: HandlerContext,
  ): AsyncGenerator<MessageInitShape<typeof ServeResponseSchema>> {
    const session = new ServeSession()
    gw.serve.add(session)
    const pump = (async () => {
      for await (const r of requests) {
        if (r.kind.case === 'register') {
          const bad = r.kind.value.methods.find((m) => m.trim() === '' || m === 'ping')
          if (bad != null) {
            throw new StargateError(Code.InvalidArgument, `cannot register method "${bad}" (empty, or the built-in ping)`)
          }
          for (const m of r.kind.value.methods) session.methods.add(m)
          for (const c of r.kind.value.capabilities) session.capabilities.add(c)
          gw.serve.changed()
          session.push({ kind: { case: 'registered', value: { methods: [...session.methods], peerId: gw.peerId } } })
        } else if (r.kind.case === 'reply') {
          session.reply(r.kind.value)
        }
      }
    })()
    let failure: unknown
    pump.then(
      () => session.close(),
      (err: unknown) => {
        failure = err
        session.close()
      },
    )
    try {
      yield* session.outgoing(ctx.signal)
      if (failure != null) throw failure
    } finally {
      session.close()
      gw.serve.remove(session)
    }
  }

  return {
    call,
    serve,
    getStatus(): GetStatusResponse {
      const st = gw.status()
      return create(GetStatusResponseSchema, {
        peerId: gw.peerId,
        listenAddrs: st.listenAddrs,
        announcedAddrs: st.announcedAddrs,
        natStatus: st.natStatus,
        relays: gw.relays().map((r) => ({
          addr: r.addr,
          peerId: r.peerId,
          connected: r.connected,
          reserved: r.reserved,
          circuitAddrs: r.circuitAddrs,
        })),
        nats: st.nats,
        version: STARGATE_VERSION,
        startedAt: timestampFromDate(gw.startedAt),
        methods: ['ping', ...gw.serve.methods()],
      })
    },
    getPeerMetrics(req): GetPeerMetricsResponse {
      const metrics = gw.peerMetrics()
      const rows = req.peerId === '' ? metrics.all() : [metrics.get(req.peerId)].filter((m) => m != null)
      if (req.peerId !== '' && rows.length === 0) {
        throw new StargateError(Code.NotFound, `no calls were made to peer ${req.peerId} yet`)
      }
      return create(GetPeerMetricsResponseSchema, {
        peers: rows.map((m) => ({
          peerId: m.peerId,
          connectionType: m.connectionType,
          latencyMs: m.latencyMs,
          successRate: PeerMetricsTable.successRate(m),
          totalRequests: BigInt(m.totalRequests),
          failedRequests: BigInt(m.failedRequests),
          lastCallAt: timestampFromMs(m.lastCallAtMs),
        })),
      })
    },
    getRelayHealth(req): GetRelayHealthResponse {
      const all = gw.relays()
      const rows = req.relay === '' ? all : all.filter((r) => r.addr === req.relay || r.peerId === req.relay)
      if (req.relay !== '' && rows.length === 0) {
        throw new StargateError(Code.NotFound, `relay "${req.relay}" is not configured (give its multiaddr or peer id)`)
      }
      return create(GetRelayHealthResponseSchema, {
        relays: rows.map((r) => ({
          relayAddr: r.addr,
          relayPeerId: r.peerId,
          isHealthy: r.healthy && !r.suspect,
          consecutiveFailures: r.consecutiveFailures,
          lastSuccess: r.lastSuccessMs != null ? timestampFromMs(r.lastSuccessMs) : undefined,
          lastCheck: r.lastCheckMs != null ? timestampFromMs(r.lastCheckMs) : undefined,
          rttMs: r.rttMs,
          reserved: r.reserved,
          lastError: r.lastError,
        })),
      })
    },
    getPoolStats(): GetPoolStatsResponse {
      const s = gw.poolStats()
      return create(GetPoolStatsResponseSchema, {
        size: s.size,
        maxSize: s.maxSize,
        ttl: durationFromMs(s.ttlMs),
        hits: BigInt(s.hits),
        misses: BigInt(s.misses),
        evictions: BigInt(s.evictions),
        expirations: BigInt(s.expirations),
      })
    },
    listPeers(): ListPeersResponse {
      return create(ListPeersResponseSchema, { peers: gw.peers().all().map(peerInfo) })
    },
    discover(req): DiscoverResponse {
      return create(DiscoverResponseSchema, { peers: gw.peers().withCapability(req.capability).map(peerInfo) })
    },
  }
}
