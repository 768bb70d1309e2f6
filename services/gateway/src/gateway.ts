import { create, toBinary } from '@bufbuild/protobuf'
import { loadApiSecurity } from '@stargate/shared/auth'
import { stargateDescriptorSets } from '@stargate/shared/descriptors'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { messageOf } from '@stargate/shared/errors'
import { type PeerFrame, PeerFrameSchema } from '@stargate/shared/gen/envelope'
import { GatewayService, NatType, PeerSource, Tier } from '@stargate/shared/gen/gateway'
import { ApiServer } from '@stargate/shared/grpc/server'
import type { Logger } from '@stargate/shared/log'
import { sealedCodec } from '@stargate/shared/seal'
import { deadline } from '@stargate/shared/signals'
import { rpcServerSpans } from '@stargate/shared/telemetry-rpc'
import { gatewayServiceImpl } from './api/service.ts'
import { InboundDispatcher } from './inbound.ts'
import { InFlight } from './inflight.ts'
import { PeerMetricsTable } from './metrics.ts'
import { createNatDetector, type NatDetector } from './nat/detector.ts'
import { NatsBus } from './nats.ts'
import { createGatewayNode, type GatewayNode } from './node.ts'
import { type GatewayInit, type GatewayOptions, resolveGatewayOptions } from './options.ts'
import { CALL_PROTOCOL, FRAME_OVERHEAD_BYTES } from './peer/channel.ts'
import { serveCallStream } from './peer/server.ts'
import { PeerBook } from './peers.ts'
import { ChannelPool } from './pool.ts'
import { Presence } from './presence.ts'
import { RelayManager } from './relays.ts'
import { Router } from './router.ts'
import { ServeRegistry } from './serve.ts'
import { GATEWAY_SCOPE, GatewayTelemetry } from './telemetry/gateway-telemetry.ts'
import { DirectTier, RelayTier } from './tiers/libp2p.ts'
import { type NatsCodec, NatsTier } from './tiers/nats.ts'

/** A running Stargate gateway: the libp2p node, the tiers and the local gRPC API. */
export class Gateway {
  readonly options: GatewayOptions
  readonly log: Logger
  readonly startedAt = new Date()
  readonly peers = new PeerBook()
  readonly metrics: PeerMetricsTable
  readonly pool: ChannelPool
  readonly registry: ServeRegistry
  /** Outbound Calls and inbound peer calls in flight (graceful shutdown waits for them). */
  readonly inflight = new InFlight()
  /** NAT detection (GetStatus.nat_status). */
  readonly nat: NatDetector
  /** Spans and metrics (no-ops unless the process started the OpenTelemetry SDK). */
  readonly telemetry: GatewayTelemetry
  private nodeRef?: GatewayNode
  private api?: ApiServer
  private apiAddr?: { host: string; port: number }
  private routerRef?: Router
  private relaysRef?: RelayManager
  private inboundRef?: InboundDispatcher
  nats?: NatsBus
  presence?: Presence

  constructor(init: GatewayInit) {
    this.options = resolveGatewayOptions(init)
    this.log = this.options.log
    this.metrics = new PeerMetricsTable(this.options.latencyEwmaAlpha)
    this.pool = new ChannelPool({ maxPeers: this.options.poolMaxPeers, ttlMs: this.options.poolTtlMs, log: this.log.child('pool') })
    this.registry = new ServeRegistry(this.log.child('serve'), () => void this.presence?.announce())
    this.nat = createNatDetector(this.options, this.log.child('nat'))
    this.telemetry = new GatewayTelemetry({
      poolConnections: () => this.pool.channelCount(),
      relays: () => this.relaysRef?.all() ?? [],
      inboundStats: () => this.inboundRef?.stats ?? { handled: 0, replayed: 0, rejectedBusy: 0, malformed: 0 },
      dedupeBytes: () => this.inboundRef?.rememberedPayloadBytes ?? 0,
      journal: () => this.inboundRef?.journalUsage(),
    })
  }

  get node(): GatewayNode {
    if (this.nodeRef == null) throw new Error('gateway not started')
    return this.nodeRef
  }

  get router(): Router {
    if (this.routerRef == null) throw new Error('gateway not started')
    return this.routerRef
  }

  get relays(): RelayManager {
    if (this.relaysRef == null) throw new Error('gateway not started')
    return this.relaysRef
  }

  get inbound(): InboundDispatcher {
    if (this.inboundRef == null) throw new Error('gateway not started')
    return this.inboundRef
  }

  get peerId(): string {
    return this.node.peerId.toString()
  }

  /** The bound API address (after start). */
  get apiAddress(): { host: string; port: number } {
    if (this.apiAddr == null) throw new Error('gateway not started')
    return this.apiAddr
  }

  /** Direct (non-circuit) multiaddrs this gateway can be dialled on. */
  directAddrs(): string[] {
    return this.node
      .getMultiaddrs()
      .map(String)
      .filter((a) => !a.includes('/p2p-circuit'))
  }

  circuitAddrs(): string[] {
    return this.node
      .getMultiaddrs()
      .map(String)
      .filter((a) => a.includes('/p2p-circuit'))
  }

  async start(): Promise<void> {
    const o = this.options
    // Read token and PEM files before anything starts: a bad file stops start-up cleanly.
    const apiSecurity = await loadApiSecurity(o)
    const maxFrameBytes = o.maxPayloadBytes + FRAME_OVERHEAD_BYTES
    // NATS payloads are sealed end to end: encrypted to the recipient, signed by the sender.
    const codec = sealedCodec(o.privateKey)
    const node = await createGatewayNode({
      privateKey: o.privateKey,
      listen: o.p2pListen,
      announce: o.p2pAnnounce,
      maxConnections: o.poolMaxPeers * 2 + o.relays.length + 64,
    })
    this.nodeRef = node
    const peerId = node.peerId.toString()
    for (const p of o.staticPeers) {
      this.peers.upsert(p.peerId, { source: PeerSource.STATIC, directAddrs: p.addr.includes('/p2p-circuit') ? [] : [p.addr] })
      if (p.addr.includes('/p2p-circuit')) this.peers.upsert(p.peerId, { source: PeerSource.STATIC, circuitAddrs: [p.addr] })
    }
    node.addEventListener('peer:identify', (evt) => {
      const id = evt.detail.peerId.toString()
      if (o.relays.some((r) => r.endsWith(`/p2p/${id}`))) return
      if (evt.detail.protocols.includes(CALL_PROTOCOL) && this.peers.get(id) == null) {
        this.peers.upsert(id, { source: PeerSource.CONNECTION })
      }
    })

    this.inboundRef = new InboundDispatcher(
      {
        peerId,
        maxInboundCallsPerPeer: o.maxInboundCallsPerPeer,
        maxPayloadBytes: o.maxPayloadBytes,
        dedupeWindowMs: o.dedupeWindowMs,
        dedupeMaxEntries: o.dedupeMaxEntries,
        dedupeMaxEntriesPerCaller: o.dedupeMaxEntriesPerCaller,
        dedupeMaxBytes: o.dedupeMaxBytes,
        dedupeMaxBytesPerCaller: o.dedupeMaxBytesPerCaller,
        maxRequestIdBytes: o.maxRequestIdBytes,
        maxMethodBytes: o.maxMethodBytes,
        journal:
          o.requestJournalDir != null
            ? { dir: o.requestJournalDir, maxBytes: o.requestJournalMaxBytes, syncIntervalMs: o.requestJournalSyncIntervalMs }
            : undefined,
        log: this.log.child('inbound'),
      },
      this.registry,
      this.telemetry,
    )
    const inbound = this.inboundRef
    await node.handle(
      CALL_PROTOCOL,
      (stream, connection) =>
        serveCallStream(stream, connection, inbound, this.inflight, maxFrameBytes, this.log.child('peer'), o.frameStallTimeoutMs),
      { runOnLimitedConnection: true, maxInboundStreams: 4096, maxOutboundStreams: 4096 },
    )

    this.relaysRef = new RelayManager(
      node,
      {
        relays: o.relays,
        healthIntervalMs: o.relayHealthIntervalMs,
        healthTimeoutMs: o.relayHealthTimeoutMs,
        unhealthyAfterFailures: o.relayUnhealthyAfterFailures,
        maxReservedRelays: o.maxReservedRelays,
        log: this.log.child('relays'),
      },
      this.telemetry,
      () => void this.presence?.announce(),
    )

    if (o.natsUrl != null) {
      this.nats = new NatsBus({ url: o.natsUrl, peerId, subjectPrefix: o.natsSubjectPrefix, log: this.log.child('nats') })
      this.subscribeNatsCalls(this.nats, inbound, codec)
      this.presence = new Presence({
        bus: this.nats,
        peers: this.peers,
        key: o.privateKey,
        peerId,
        intervalMs: o.presenceIntervalMs,
        ttlMs: o.presenceTtlMs,
        log: this.log.child('presence'),
        current: () => ({
          directAddrs: this.directAddrs(),
          circuitAddrs: this.circuitAddrs(),
          capabilities: [...new Set([...o.capabilities, ...this.registry.capabilities()])].sort(),
          natType: this.nat.status().natType ?? NatType.UNSPECIFIED,
        }),
      })
      this.presence.start()
    }

    const tierDeps = { node, pool: this.pool, peers: this.peers, maxFrameBytes, log: this.log.child('tiers') }
    this.routerRef = new Router(
      {
        selfPeerId: peerId,
        attemptTimeoutMs: o.attemptTimeoutMs,
        maxRetries: o.maxRetries,
        backoffFactor: o.backoffFactor,
        backoffBaseMs: o.backoffBaseMs,
        backoffJitter: o.backoffJitter,
        tierStaggerMs: o.tierStaggerMs,
        tierCooldownMs: o.tierCooldownMs,
        log: this.log.child('router'),
      },
      [new DirectTier(tierDeps), new RelayTier(tierDeps, this.relaysRef), new NatsTier(this.nats, codec, () => o.attemptTimeoutMs)],
      this.metrics,
      this.telemetry,
    )
    this.pool.start()

    // Connect NATS and the relays in parallel; neither being down stops the gateway from starting.
    await Promise.all([this.nats?.start(), this.relaysRef.start()])
    node.addEventListener('self:peer:update', () => void this.presence?.announce())
    await this.presence?.announce(true)

    this.api = new ApiServer({
      ...apiSecurity,
      services: [{ service: GatewayService, impl: gatewayServiceImpl(this) }],
      descriptorSets: stargateDescriptorSets(),
      log: this.log.child('api'),
      middleware: [rpcServerSpans(GATEWAY_SCOPE), ...(apiSecurity.middleware ?? [])],
      maxReceiveMessageBytes: maxFrameBytes,
    })
    this.apiAddr = await this.api.listen(o.apiHost, o.apiPort)
    // NAT detection runs in the background; a change is re-announced in the presence record.
    this.nat.onChange(() => void this.presence?.announce())
    this.nat.start()
    this.log.info('gateway started', {
      peerId,
      api: `${this.apiAddr.host}:${this.apiAddr.port}`,
      p2p: node.getMultiaddrs().map(String),
    })
  }

  private subscribeNatsCalls(bus: NatsBus, inbound: InboundDispatcher, codec: NatsCodec): void {
    bus.subscribe(bus.callSubject(this.peerId), (data, reply) => {
      let frame: PeerFrame
      let sender: string | undefined
      try {
        const opened = codec.open(data)
        sender = opened.senderPeerId
        frame = decodePeerFrame(opened.frame)
      } catch (err: unknown) {
        inbound.stats.malformed++
        this.log.warn('dropped malformed NATS message', { err: messageOf(err) })
        return
      }
      if (frame.kind.case !== 'request') {
        inbound.stats.malformed++
        this.log.warn('dropped NATS message that is not a request')
        return
      }
      const req = frame.kind.value
      if (sender != null && req.callerPeerId !== '' && req.callerPeerId !== sender) {
        inbound.stats.malformed++
        this.log.warn('dropped NATS request whose caller_peer_id differs from its verified sender', { sender })
        return
      }
      const caller = sender ?? req.callerPeerId
      const callDeadline = deadline(this.options.callDeadlineMs)
      this.inflight
        .track(() => inbound.handle(req, { callerPeerId: caller, tier: Tier.NATS }, callDeadline.signal).finally(callDeadline.dispose))
        .then((res) => {
          const bytes = toBinary(PeerFrameSchema, create(PeerFrameSchema, { kind: { case: 'response', value: res } }))
          reply(codec.seal(bytes, caller))
        })
        .catch((err: unknown) => this.log.warn('NATS reply failed', { err: messageOf(err) }))
    })
  }

  /** Graceful: stop accepting, let in-flight calls finish within shutdownGraceMs, close everything. */
  async stop(): Promise<void> {
    const until = Date.now() + this.options.shutdownGraceMs
    this.api?.drain()
    const idle = await this.inflight.idle(this.options.shutdownGraceMs)
    if (!idle) this.log.warn('grace period over with calls still in flight', { inflight: this.inflight.count })
    // Journal closed first: calls the closing Serve sessions drop stay "started", never journaled as done.
    this.inboundRef?.close()
    this.registry.closeAll()
    await this.api?.stop(Math.max(0, until - Date.now()))
    this.presence?.stop()
    // Independent parts stop together; none may keep the process from exiting.
    await Promise.allSettled([this.relaysRef?.stop(), this.pool.stop(), this.nats?.stop(), this.nat.stop()])
    await this.nodeRef?.stop()
  }
}
