import { create, type MessageInitShape } from '@bufbuild/protobuf'
import { durationFromMs, timestampFromDate, timestampFromMs } from '@bufbuild/protobuf/wkt'
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect'
import { type ApiPrincipal, scopeAllows, scopeText } from '@stargate/shared/auth'
import { Code, StargateError } from '@stargate/shared/errors'
import {
  CallerPolicyMode,
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
import type { CallerPolicyMode as PolicyMode } from '../policy.ts'
import type { PoolStats } from '../pool.ts'
import type { RelayState } from '../relays.ts'
import type { CallResponseInit } from '../router.ts'
import { payloadBytes, type ServeRegistry } from '../serve.ts'

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
  /** Calls the gateway is working on now (outbound, tunnelled and inbound). */
  inflightCalls: number
}

/**
 * What the API handlers need of the gateway, and nothing more (wired in gateway.ts). The handlers validate
 * requests and shape answers; calls go to `call`, the gateway's one outbound call path.
 */
export interface GatewayApi {
  readonly peerId: string
  readonly startedAt: Date
  readonly maxPayloadBytes: number
  /** Longest idempotency key and method name the remote gateway accepts (checked here first). */
  readonly maxRequestIdBytes: number
  readonly maxMethodBytes: number
  /** Deadline of a Call without a client deadline. */
  readonly callDeadlineMs: number
  /** Who a request comes from, by its authorization header (anonymous when API auth is off). */
  principalOf(authorization: string | null): ApiPrincipal
  /** Plans, routes, tracks and traces one Call; rejects with a StargateError. */
  call(req: CallRequest, timeoutMs: number, signal: AbortSignal): Promise<CallResponseInit>
  readonly serve: Pick<ServeRegistry, 'open' | 'register' | 'remove' | 'methods'>
  /** The caller policy as GetStatus reports it. */
  callerPolicy(): { mode: PolicyMode; ruleCount: number; policyFile?: string }
  status(): StatusView
  relays(): RelayView[]
  peerMetrics(): { all(): PeerMetricsRecord[]; get(peerId: string): PeerMetricsRecord | undefined }
  poolStats(): PoolStats
  peers(): { all(): KnownPeer[]; withCapability(capability: string): KnownPeer[] }
}

function peerInfo(p: KnownPeer): MessageInitShape<typeof PeerInfoSchema> {
  return {
    peerId: p.peerId,
    directAddrs: p.directAddrs,
    circuitAddrs: p.circuitAddrs,
    capabilities: p.capabilities,
    natType: p.natType,
    source: p.source,
    lastSeen: timestampFromMs(p.lastSeenAtMs),
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
    // The same bounds the remote gateway enforces, checked before anything is sent.
    const keyBytes = Buffer.byteLength(req.idempotencyKey)
    if (keyBytes > gw.maxRequestIdBytes) {
      throw new StargateError(
        Code.InvalidArgument,
        `idempotency_key is ${keyBytes} bytes, longer than the limit of ${gw.maxRequestIdBytes} bytes (use a shorter key)`,
      )
    }
    const methodBytes = Buffer.byteLength(req.method)
    if (methodBytes > gw.maxMethodBytes) {
      throw new StargateError(Code.InvalidArgument, `method is ${methodBytes} bytes, longer than the limit of ${gw.maxMethodBytes} bytes`)
    }
    const principal = gw.principalOf(ctx.requestHeader.get('authorization'))
    if (!scopeAllows(principal, 'call', req.method)) {
      throw new StargateError(
        Code.PermissionDenied,
        `this API token may not call "${req.method}": its scope is ${scopeText(principal)} (its line in --auth-token-file)`,
      )
    }
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
    const session = gw.serve.open(gw.principalOf(ctx.requestHeader.get('authorization')))
    const pump = (async () => {
      // Not `for await`: leaving it early (a refused registration) would destroy the request stream, and
      // with it the call, before its error status is sent.
      const incoming = requests[Symbol.asyncIterator]()
      for (let next = await incoming.next(); next.done !== true; next = await incoming.next()) {
        const r = next.value
        if (r.kind.case === 'register') {
          gw.serve.register(session, r.kind.value)
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
        callerPolicy: (() => {
          const p = gw.callerPolicy()
          return {
            mode: p.mode === 'open' ? CallerPolicyMode.OPEN : CallerPolicyMode.RESTRICTED,
            ruleCount: p.ruleCount,
            policyFile: p.policyFile ?? '',
          }
        })(),
        inflightCalls: st.inflightCalls,
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
          lastSuccess: r.lastSuccessAtMs != null ? timestampFromMs(r.lastSuccessAtMs) : undefined,
          lastCheck: r.lastCheckAtMs != null ? timestampFromMs(r.lastCheckAtMs) : undefined,
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
