import { create, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import { durationFromMs, timestampFromDate, timestampFromMs, ValueSchema } from '@bufbuild/protobuf/wkt'
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect'
import { peerIdFromString } from '@libp2p/peer-id'
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
  NatsState,
  type PeerInfoSchema,
  type ServeRequest,
  type ServeResponseSchema,
  Tier,
} from '@stargate/shared/gen/gateway'
import { STARGATE_VERSION } from '@stargate/shared/version'
import type { Gateway } from '../gateway.ts'
import { PeerMetricsTable } from '../metrics.ts'
import type { KnownPeer } from '../peers.ts'
import { ServeSession } from '../serve.ts'

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
export function gatewayServiceImpl(gw: Gateway): ServiceImpl<typeof GatewayService> {
  const o = gw.options

  async function call(req: CallRequest, ctx: HandlerContext): Promise<CallResponse> {
    if (req.peerId === '') throw new StargateError(Code.InvalidArgument, 'peer_id is required (the target gateway peer id, 12D3KooW...)')
    try {
      peerIdFromString(req.peerId)
    } catch {
      throw new StargateError(Code.InvalidArgument, `peer_id "${req.peerId}" is not a valid libp2p peer id`)
    }
    if (req.method === '')
      throw new StargateError(Code.InvalidArgument, 'method is required (e.g. "ping" or a method a Serve client registered)')
    const size = payloadBytes(req.payload)
    if (size > o.maxPayloadBytes) {
      throw new StargateError(Code.ResourceExhausted, `payload of ${size} bytes exceeds the maximum of ${o.maxPayloadBytes} bytes`)
    }
    const timeoutMs = ctx.timeoutMs() ?? o.callDeadlineMs
    const plan = gw.router.plan(req, timeoutMs)
    if (req.peerId === gw.peerId) {
      // A call to this gateway itself goes straight to its own handlers.
      const res = await gw.inbound.handle(
        {
          ...plan,
          $typeName: 'stargate.v1.PeerRequest',
          exchangeId: 0n,
          callerPeerId: gw.peerId,
          tier: Tier.UNSPECIFIED,
          traceContext: gw.telemetry.currentTraceContext(),
        },
        { callerPeerId: gw.peerId, tier: Tier.UNSPECIFIED },
        ctx.signal,
      )
      if (res.result?.case === 'error') throw new StargateError(res.result.value.code as Code, res.result.value.message ?? '')
      return create(CallResponseSchema, {
        payload: res.result?.case === 'data' || res.result?.case === 'json' ? res.result : undefined,
        tier: Tier.UNSPECIFIED,
        requestId: plan.requestId,
      })
    }
    const res = await gw.inflight.track(() => gw.telemetry.traceCall(plan, () => gw.router.call(plan, ctx.signal)))
    return create(CallResponseSchema, res)
  }

  async function* serve(
    requests: AsyncIterable<ServeRequest>,
    ctx: HandlerContext,
  ): AsyncGenerator<MessageInitShape<typeof ServeResponseSchema>> {
    const session = new ServeSession()
    gw.registry.add(session)
    const pump = (async () => {
      for await (const r of requests) {
        if (r.kind.case === 'register') {
          const bad = r.kind.value.methods.find((m) => m.trim() === '' || m === 'ping')
          if (bad != null) {
            throw new StargateError(Code.InvalidArgument, `cannot register method "${bad}" (empty, or the built-in ping)`)
          }
          for (const m of r.kind.value.methods) session.methods.add(m)
          for (const c of r.kind.value.capabilities) session.capabilities.add(c)
          gw.registry.changed()
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
      gw.registry.remove(session)
    }
  }

  return {
    call,
    serve,
    getStatus(): GetStatusResponse {
      const node = gw.node
      const addrs = node.getMultiaddrs().map(String)
      return create(GetStatusResponseSchema, {
        peerId: gw.peerId,
        listenAddrs: node.getMultiaddrs().length > 0 ? gw.directAddrs() : [],
        announcedAddrs: addrs,
        natStatus: gw.nat.status(),
        relays: gw.relays.all().map((r) => ({
          addr: r.addr,
          peerId: r.peerId,
          connected: node.getConnections(peerIdFromString(r.peerId)).some((c) => c.status === 'open'),
          reserved: gw.relays.reserved(r.peerId),
          circuitAddrs: gw.relays.circuitAddrs(r.peerId),
        })),
        nats: {
          state: gw.nats?.state ?? NatsState.DISABLED,
          url: gw.nats?.url ?? '',
          subject: gw.nats?.callSubject(gw.peerId) ?? '',
        },
        version: STARGATE_VERSION,
        startedAt: timestampFromDate(gw.startedAt),
        methods: ['ping', ...gw.registry.methods()],
      })
    },
    getPeerMetrics(req): GetPeerMetricsResponse {
      const rows = req.peerId === '' ? gw.metrics.all() : [gw.metrics.get(req.peerId)].filter((m) => m != null)
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
      const all = gw.relays.all()
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
          reserved: gw.relays.reserved(r.peerId),
          lastError: r.lastError,
        })),
      })
    },
    getPoolStats(): GetPoolStatsResponse {
      const s = gw.pool.stats()
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
      return create(ListPeersResponseSchema, { peers: gw.peers.all().map(peerInfo) })
    },
    discover(req): DiscoverResponse {
      return create(DiscoverResponseSchema, { peers: gw.peers.withCapability(req.capability).map(peerInfo) })
    },
  }
}
