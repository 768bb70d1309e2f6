import { readFile } from 'node:fs/promises'
import { ANONYMOUS, type ApiSecurity, loadApiSecurity, type TokenAuthenticator } from '@stargate/shared/auth'
import { stargateDescriptorSets } from '@stargate/shared/descriptors'
import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import { GatewayService, NatsState, NatType, PeerSource } from '@stargate/shared/gen/gateway'
import { ApiServer } from '@stargate/shared/grpc/server'
import type { Logger } from '@stargate/shared/log'
import { ReplayGuard, type SealedCodec, sealedCodec } from '@stargate/shared/seal'
import { rpcServerRefusals, rpcServerSpans } from '@stargate/shared/telemetry-rpc'
import { type GatewayApi, gatewayServiceImpl, type RelayView, type StatusView } from './api/service.ts'
import { GATEWAY_DEFAULTS as D } from './defaults.ts'
import { FailureHistory } from './failure-history.ts'
import { InboundDispatcher } from './inbound.ts'
import { InFlight } from './inflight.ts'
import { PeerMetricsTable } from './metrics.ts'
import { createNatDetector, type NatDetector } from './nat/detector.ts'
import { loadNatsSecurity, NatsBus, type NatsSecurity } from './nats.ts'
import { createGatewayNode, type GatewayNode } from './node.ts'
import { type GatewayInit, type GatewayOptions, resolveGatewayOptions } from './options.ts'
import { Outbound } from './outbound.ts'
import { ConnectionBudgets } from './peer/budget.ts'
import { CALL_PROTOCOL } from './peer/frames.ts'
import { PeerBook } from './peers.ts'
import { CallerPolicy } from './policy.ts'
import { ChannelPool } from './pool.ts'
import { Presence } from './presence.ts'
import { RelayManager } from './relays.ts'
import { Router } from './router.ts'
import { ServeRegistry } from './serve.ts'
import { GATEWAY_SCOPE, GatewayTelemetry } from './telemetry/gateway-telemetry.ts'
import { relayOfCircuit } from './tiers/circuits.ts'
import { createTiers } from './tiers/index.ts'
import { LoopbackTier } from './tiers/loopback.ts'
import { NatsStreams } from './tiers/nats-streams.ts'
import type { TierModule } from './tiers/tier.ts'
import { BackendPool } from './tunnel/backends.ts'
import { TunnelCallee } from './tunnel/callee.ts'
import { TunnelEgress } from './tunnel/egress.ts'
import { ExposeTable } from './tunnel/expose.ts'
import { TunnelIngress } from './tunnel/ingress.ts'
import { ReplayBudget } from './tunnel/replay.ts'
import { RoutedStream, type RoutedStreamParts } from './tunnel/routed.ts'
import { RouteTable } from './tunnel/routes.ts'
import { serviceCapability, TunnelTargets } from './tunnel/targets.ts'
import { webIngress } from './tunnel/web.ts'

/** Where a started gateway can be reached. */
export interface GatewayAddresses {
  /** The bound API address. */
  api: { host: string; port: number }
  /** The libp2p multiaddrs (listen and circuit addresses). */
  multiaddrs: string[]
}

/**
 * Builds a gateway: resolves the options, reads its token and PEM files (a bad file stops here, before
 * anything listens) and creates the libp2p node, not yet started. `start()` brings it up.
 */
export async function createGateway(init: GatewayInit): Promise<Gateway> {
  const options = resolveGatewayOptions(init)
  const security = await loadApiSecurity(options)
  const exposeCaPem = options.exposeCaFile != null ? await readPem(options.exposeCaFile, '--expose-ca') : undefined
  const natsSecurity = options.natsServers.length > 0 ? await loadNatsSecurity(options) : {}
  const node = await createGatewayNode({
    privateKey: options.privateKey,
    listen: options.p2pListen,
    announce: options.p2pAnnounce,
    maxConnections: options.poolMaxPeers * 2 + options.relays.length + D.extraConnections,
    reservationTimeoutMs: D.relayReservationTimeoutMs,
    inboundConnectionsPerSecond: D.inboundConnectionsPerSecond,
    dialTimeoutMs: D.dialTimeoutMs,
    yamuxMaxMessageBytes: D.yamuxMaxMessageBytes,
  })
  return new Gateway(options, node, security, { exposeCaPem, nats: natsSecurity })
}

async function readPem(file: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(file)
  } catch (err: unknown) {
    throw new StargateError(Code.InvalidArgument, `cannot read ${flag} ${file}: ${messageOf(err)}`, { cause: err })
  }
}

/** Files the gateway reads before it is built (a bad one stops createGateway, before anything listens). */
export interface GatewayFiles {
  /** --expose-ca: the CA bundle TLS backends must chain to. */
  exposeCaPem?: Uint8Array
  /** NATS credentials and TLS material (--nats-creds, --nats-tls-*, ...). */
  nats?: NatsSecurity
}

/**
 * A Stargate gateway: the libp2p node, the tiers, the router and the local gRPC API, wired in one place
 * (this constructor). Every part gets the narrow interface it needs; nothing reaches back through the gateway.
 * `start()` starts the parts in order and stops what it started when a later part fails; `stop()` is graceful.
 */
export class Gateway {
  readonly peerId: string
  private readonly o: GatewayOptions
  private readonly log: Logger
  private readonly startedAt = new Date()
  private readonly node: GatewayNode
  private readonly peers: PeerBook
  /** Seals and opens NATS messages; its refusal counts feed telemetry. */
  private readonly sealer: SealedCodec
  private readonly metrics: PeerMetricsTable
  private readonly pool: ChannelPool
  private readonly registry: ServeRegistry
  private readonly inflight = new InFlight()
  private readonly nat: NatDetector
  private readonly telemetry: GatewayTelemetry
  private readonly relays: RelayManager
  private readonly nats?: NatsBus
  private readonly natsStreams?: NatsStreams
  private readonly presence?: Presence
  private readonly inbound: InboundDispatcher
  private readonly backends: BackendPool
  private readonly exposed: ExposeTable
  private readonly policy: CallerPolicy
  private readonly budgets: ConnectionBudgets
  private readonly authenticator?: TokenAuthenticator
  /** Whether the warning "serving methods to any peer" was logged. */
  private warnedOpenServe = false
  private readonly tiers: TierModule[]
  private readonly router: Router
  private readonly outbound: Outbound
  private readonly api: ApiServer
  /** Undoes what start() did so far, most recent first. */
  private readonly started: Array<() => Promise<void>> = []
  /** Until when a stopping API server lets calls finish (0: at once, as when start() rolls back). */
  private graceEndsAtMs = 0

  constructor(options: GatewayOptions, node: GatewayNode, security: ApiSecurity, files: GatewayFiles = {}) {
    const o = options
    this.o = o
    this.log = o.log
    this.node = node
    this.peerId = node.peerId.toString()
    const maxFrameBytes = o.maxPayloadBytes + D.frameOverheadBytes
    const announce = (): void => void this.presence?.announce()
    this.peers = new PeerBook({
      presenceTtlMs: o.presenceTtlMs,
      connectionTtlMs: D.connectionPeerTtlMs,
      maxLearnedPeers: D.maxLearnedPeers,
    })
    // NATS payloads are sealed end to end between the two gateway identities (seal.ts).
    this.sealer = sealedCodec(o.privateKey, { replay: new ReplayGuard({ maxSessions: o.natsReplayMaxSessions }) })
    const { authenticator, ...apiSecurity } = security
    this.authenticator = authenticator
    // A policy file that cannot be read or parsed stops the gateway here, naming the file and line.
    this.policy = new CallerPolicy({
      selfPeerId: this.peerId,
      allowCallers: o.allowCallers,
      file: o.callerPolicyFile,
      log: this.log.child('policy'),
    })
    this.budgets = new ConnectionBudgets({
      maxStreams: o.maxInboundStreamsPerConnection,
      maxBufferedBytes: o.maxInboundBufferedBytesPerConnection,
    })

    this.metrics = new PeerMetricsTable({ ewmaAlpha: o.latencyEwmaAlpha, maxPeers: D.peerMetricsMaxEntries })
    this.pool = new ChannelPool({
      maxPeers: o.poolMaxPeers,
      ttlMs: o.poolTtlMs,
      sweepMaxIntervalMs: D.poolSweepMaxIntervalMs,
      log: this.log.child('pool'),
    })
    this.registry = new ServeRegistry(
      this.log.child('serve'),
      () => {
        this.warnIfServingOpen()
        announce()
      },
      { maxQueuedCalls: o.serveQueueMaxCalls, maxQueuedBytes: o.serveQueueMaxBytes },
    )
    this.nat = createNatDetector(o, this.log.child('nat'))
    this.telemetry = new GatewayTelemetry({
      poolConnections: () => this.pool.channelCount(),
      relays: () => this.relays.all(),
      natsState: () => this.nats?.state ?? NatsState.DISABLED,
      natsRefusals: () => this.sealer.refusals,
      inboundDropped: () => {
        const s = this.inbound.stats
        return {
          malformed: s.malformed,
          busy: s.rejectedBusy,
          duplicate: s.replayed,
          denied: this.policy.denied,
          full: s.refusedFull,
          serve_queue_full: this.registry.stats.queueFull,
          connection_streams: this.budgets.stats.streamsRefused,
          connection_bytes: this.budgets.stats.bytesRefused,
        }
      },
      serveQueue: () => this.registry.queued(),
      natsStreams: () => this.natsStreams?.stats,
      dedupeBytes: () => this.inbound.rememberedPayloadBytes,
      journal: () => this.inbound.journalUsage(),
    })
    this.relays = new RelayManager(
      node,
      {
        relays: o.relays,
        healthIntervalMs: o.relayHealthIntervalMs,
        healthTimeoutMs: o.relayHealthTimeoutMs,
        unhealthyAfterFailures: o.relayUnhealthyAfterFailures,
        maxReservedRelays: o.maxReservedRelays,
        reconnectBaseMs: D.relayReconnectBaseMs,
        reconnectMaxMs: D.relayReconnectMaxMs,
        reservationTimeoutMs: D.relayReservationTimeoutMs,
        log: this.log.child('relays'),
      },
      this.telemetry,
      announce,
    )
    if (o.natsServers.length > 0) {
      this.nats = new NatsBus({
        servers: o.natsServers,
        ...files.nats,
        peerId: this.peerId,
        subjectPrefix: o.natsSubjectPrefix,
        firstConnectWaitMs: D.natsFirstConnectWaitMs,
        reconnectWaitMs: D.natsReconnectWaitMs,
        retryConnectMs: D.natsRetryConnectMs,
        pingIntervalMs: D.natsPingIntervalMs,
        maxPingsOut: D.natsMaxPingsOut,
        log: this.log.child('nats'),
      })
      this.presence = new Presence({
        bus: this.nats,
        peers: this.peers,
        key: o.privateKey,
        peerId: this.peerId,
        intervalMs: o.presenceIntervalMs,
        ttlMs: o.presenceTtlMs,
        queryDebounceMs: D.presenceQueryDebounceMs,
        log: this.log.child('presence'),
        current: () => ({
          directAddrs: this.directAddrs(),
          circuitAddrs: this.circuitAddrs(),
          capabilities: [
            ...new Set([...o.capabilities, ...this.registry.capabilities(), ...this.exposed.services.map(serviceCapability)]),
          ].sort(),
          natType: this.nat.status().natType ?? NatType.UNSPECIFIED,
        }),
      })
    }
    this.inbound = new InboundDispatcher(
      {
        peerId: this.peerId,
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
        defaultTimeoutMs: o.callDeadlineMs,
        policy: this.policy,
        log: this.log.child('inbound'),
      },
      this.registry,
      this.inflight,
      this.telemetry,
    )
    const tunnelLimits = { windowBytes: o.tunnelWindowBytes, maxMessageBytes: o.tunnelMaxMessageBytes }
    this.exposed = new ExposeTable(o.expose)
    this.backends = new BackendPool({
      log: this.log.child('backends'),
      windowBytes: o.tunnelWindowBytes,
      ...(files.exposeCaPem != null ? { caPem: files.exposeCaPem } : {}),
    })
    const callee = new TunnelCallee({
      egress: new TunnelEgress({
        expose: this.exposed,
        backends: this.backends,
        maxMessageBytes: o.tunnelMaxMessageBytes,
        log: this.log.child('egress'),
      }),
      memory: this.inbound,
      inflight: this.inflight,
      budget: new ReplayBudget(D.tunnelReplayMaxBytes, D.tunnelReplayMaxBytesPerCall),
      limits: tunnelLimits,
      observer: this.telemetry,
      policy: this.policy,
      log: this.log.child('tunnel'),
    })
    // Tunnelled streams on NATS: the same callee as on libp2p, sealed with the same codec.
    this.natsStreams =
      this.nats != null
        ? new NatsStreams({
            bus: this.nats,
            codec: this.sealer,
            selfPeerId: this.peerId,
            sink: callee,
            limits: tunnelLimits,
            maxStreamsPerPeer: D.tunnelMaxStreamsPerLink,
            maxInboundStreams: D.natsMaxInboundStreams,
            probeMs: D.natsStreamProbeMs,
            probeTimeoutMs: D.natsStreamProbeTimeoutMs,
            log: this.log.child('nats-streams'),
          })
        : undefined
    this.tiers = createTiers({
      libp2p: {
        node,
        pool: this.pool,
        peers: this.peers,
        channel: {
          maxFrameBytes,
          livenessProbeMs: o.livenessProbeMs,
          livenessProbeTimeoutMs: o.livenessProbeTimeoutMs,
          tunnel: { localPeerId: this.peerId, ...tunnelLimits },
        },
        log: this.log.child('tiers'),
      },
      relays: this.relays,
      relay: {
        staggerMs: o.relayStaggerMs,
        probeTimeoutMs: o.attemptTimeoutMs,
        history: new FailureHistory({ cooldownMs: o.circuitCooldownMs, maxEntries: D.circuitHistoryMaxEntries }),
      },
      nats: {
        bus: this.nats,
        codec: this.sealer,
        attemptTimeoutMs: o.attemptTimeoutMs,
        streams: this.natsStreams,
      },
      selfPeerId: this.peerId,
      inbound: this.inbound,
      streams: callee,
      reader: { maxFrameBytes, frameDeadlineMs: o.frameStallTimeoutMs },
      budgets: this.budgets,
    })
    this.router = new Router(
      {
        selfPeerId: this.peerId,
        attemptTimeoutMs: o.attemptTimeoutMs,
        maxRetries: o.maxRetries,
        backoffFactor: o.backoffFactor,
        backoffBaseMs: o.backoffBaseMs,
        backoffJitter: o.backoffJitter,
        tierStaggerMs: o.tierStaggerMs,
        tierCooldownMs: o.tierCooldownMs,
        log: this.log.child('router'),
      },
      {
        tiers: this.tiers.map((t) => t.transport),
        loopback: new LoopbackTier(this.peerId, this.inbound, callee, this.log.child('loopback')),
        metrics: this.metrics,
        observer: this.telemetry,
      },
    )
    this.outbound = new Outbound(this.router, this.telemetry, this.inflight)
    const ingress = this.tunnelIngress(security.gate != null)
    this.api = new ApiServer({
      ...apiSecurity,
      services: [{ service: GatewayService, impl: gatewayServiceImpl(this.apiView()) }],
      descriptorSets: stargateDescriptorSets(),
      log: this.log.child('api'),
      middleware: [rpcServerSpans(GATEWAY_SCOPE)],
      onRefused: rpcServerRefusals(GATEWAY_SCOPE),
      maxReceiveMessageBytes: maxFrameBytes,
      // gRPC requests for services not served here (and reflection naming a stargate-peer) are tunnelled.
      unknownService: (stream, headers, rawHeaders) => void ingress.handle(stream, headers, rawHeaders),
      // gRPC-Web for tunnelled services is translated; Connect, gRPC-Web text and JSON get UNIMPLEMENTED.
      unknownWeb: webIngress(ingress),
      corsAllowOrigins: o.corsAllowOrigins,
    })

    for (const p of o.staticPeers) {
      const circuit = p.addr.includes('/p2p-circuit')
      this.peers.upsert(p.peerId, { source: PeerSource.STATIC, ...(circuit ? { circuitAddrs: [p.addr] } : { directAddrs: [p.addr] }) })
    }
    node.addEventListener('peer:identify', (evt) => {
      const id = evt.detail.peerId.toString()
      if (o.relays.some((r) => r.endsWith(`/p2p/${id}`))) return
      if (evt.detail.protocols.includes(CALL_PROTOCOL)) this.peers.connected(id)
    })
    node.addEventListener('peer:disconnect', (evt) => this.peers.disconnected(evt.detail.toString()))
    node.addEventListener('self:peer:update', announce)
    this.nat.onChange(announce)
  }

  /**
   * Starts every part in order: libp2p, the tiers' inbound sides, the pool, NATS and the relays (neither being
   * down stops the gateway), presence, the API listener, NAT detection. If a part fails to start, the parts
   * already started (and the one that failed, which may have started half-way) are stopped again, most recent
   * first, and the error is rethrown.
   */
  async start(): Promise<GatewayAddresses> {
    // A part's stop is owned before its start runs: a start that fails half-way (NATS connected but the
    // relays' first check threw, presence's timer set but its first announce failed) is stopped too.
    const step = async (start: () => Promise<void> | void, stop: () => Promise<void> | void): Promise<void> => {
      this.started.push(async () => stop())
      await start()
    }
    try {
      await step(
        () => this.node.start(),
        () => this.node.stop(),
      )
      // Backend sessions open on first use; whatever is open is closed when the gateway stops.
      await step(
        () => {},
        () => this.backends.close(),
      )
      for (const t of this.tiers) {
        const inbound = t.inbound
        if (inbound != null) await step(inbound.start, inbound.stop)
      }
      await step(
        () => this.pool.start(),
        () => this.pool.stop(),
      )
      await step(
        async () => {
          await Promise.all([this.nats?.start(), this.relays.start()])
        },
        async () => {
          await Promise.allSettled([this.relays.stop(), this.nats?.stop()])
        },
      )
      await step(
        async () => {
          this.presence?.start()
          await this.presence?.announce(true)
        },
        () => this.presence?.stop(),
      )
      const api = await this.api.listen(this.o.apiHost, this.o.apiPort).catch((err: unknown) => {
        throw new StargateError(
          Code.FailedPrecondition,
          `cannot listen on ${this.o.apiHost}:${this.o.apiPort} (--listen): ${messageOf(err)}`,
          {
            cause: err,
          },
        )
      })
      this.started.push(() => this.api.stop(Math.max(0, this.graceEndsAtMs - Date.now())))
      await step(
        () => this.nat.start(),
        () => this.nat.stop(),
      )
      this.log.info('gateway started', { peerId: this.peerId, api: `${api.host}:${api.port}`, p2p: this.multiaddrs() })
      if (this.policy.mode === 'open' && this.reachable()) {
        this.log.warn(
          'caller policy OPEN: any libp2p or NATS peer that learns this peer id may call the methods served here; restrict it with --allow-caller PEER_ID[=PATTERN] or --caller-policy FILE',
          { peerId: this.peerId },
        )
      } else if (this.policy.mode === 'restricted') {
        this.log.info('caller policy restricted', { rules: this.policy.ruleCount, file: this.policy.policyFile })
      }
      return { api, multiaddrs: this.multiaddrs() }
    } catch (err: unknown) {
      this.log.error('gateway failed to start; stopping what was started', { err: messageOf(err) })
      await this.unwind()
      throw err
    }
  }

  /**
   * Re-reads the caller policy file (SIGHUP). A file that does not parse is logged (naming the line) and the
   * rules in force stay.
   */
  reloadCallerPolicy(): void {
    if (this.policy.policyFile == null) {
      this.log.info('SIGHUP: no --caller-policy file to reload')
      return
    }
    try {
      const rules = this.policy.reload()
      this.log.info('caller policy reloaded', { file: this.policy.policyFile, rules, mode: this.policy.mode })
    } catch (err: unknown) {
      this.log.error('caller policy not reloaded; the rules in force stay', { err: messageOf(err), rules: this.policy.ruleCount })
    }
  }

  /** Graceful: stop accepting, let in-flight calls finish within shutdownGraceMs, then stop every part. */
  async stop(): Promise<void> {
    this.graceEndsAtMs = Date.now() + this.o.shutdownGraceMs
    this.api.drain()
    if (!(await this.inflight.idle(this.o.shutdownGraceMs))) {
      this.log.warn('grace period over with calls still in flight', { inflight: this.inflight.count })
    }
    // Journal closed first: calls the closing Serve sessions drop stay "started", never journaled as done.
    this.inbound.close()
    this.registry.closeAll()
    await this.unwind()
  }

  /** The libp2p multiaddrs this gateway can be reached on (listen and circuit addresses). */
  multiaddrs(): string[] {
    return this.node.getMultiaddrs().map(String)
  }

  private async unwind(): Promise<void> {
    for (let undo = this.started.pop(); undo != null; undo = this.started.pop()) {
      await undo().catch((err: unknown) => this.log.warn('stopping a part failed', { err: messageOf(err) }))
    }
  }

  /** Whether other peers can reach this gateway at all (a libp2p listener, a relay or NATS). */
  private reachable(): boolean {
    return this.o.p2pListen.length > 0 || this.o.relays.length > 0 || this.o.natsServers.length > 0
  }

  /** Warns once when Serve methods are offered to every peer (no caller policy). */
  private warnIfServingOpen(): void {
    if (this.warnedOpenServe || this.policy.mode !== 'open' || !this.reachable()) return
    const methods = this.registry.methods()
    if (methods.length === 0) return
    this.warnedOpenServe = true
    this.log.warn('serving methods to any peer (caller policy OPEN); restrict with --allow-caller or --caller-policy', {
      methods: methods.slice(0, 10),
    })
  }

  /** Direct (non-circuit) multiaddrs this gateway can be dialled on. */
  private directAddrs(): string[] {
    return this.multiaddrs().filter((a) => !a.includes('/p2p-circuit'))
  }

  /**
   * The circuit addresses to announce: those through relays that pass their health checks. A relay that turns
   * unhealthy is dropped from the next presence record (announced at once), so callers stop preferring it.
   */
  private circuitAddrs(): string[] {
    const usable = new Set(this.relays.usable().map((r) => r.peerId))
    return this.multiaddrs().filter((a) => a.includes('/p2p-circuit') && usable.has(relayOfCircuit(a)))
  }

  /**
   * The caller side of tunnelled gRPC: the API port's ingress, whose calls go to the peers that
   * TunnelTargets finds (stargate-peer > --route > discovery), each routed as an exchange of the router
   * through the one outbound path. With API auth on, the authorization header is this gateway's own and is
   * never forwarded.
   */
  private tunnelIngress(authOn: boolean): TunnelIngress {
    const o = this.o
    const targets = new TunnelTargets({
      selfPeerId: this.peerId,
      routes: new RouteTable(o.routes),
      exposes: (service) => this.exposed.lookup(service) != null,
      peersWithCapability: (capability) => this.peers.withCapability(capability).map((p) => p.peerId),
      health: (peerId) => {
        const m = this.metrics.get(peerId)
        const measured = m != null && m.totalRequests > m.failedRequests
        return { failing: this.router.failing(peerId), ...(measured ? { latencyMs: m.latencyMs } : {}) }
      },
    })
    const parts: RoutedStreamParts = {
      routing: {
        plan: (peerId, method, requestId, deadlineAtMs, last) => {
          const plan = this.router.defaultPlan(peerId, 'stream', method, requestId, deadlineAtMs)
          // With more peers to try, each gets one round: an unreachable one is left for the next at once.
          return last ? plan : { ...plan, maxRetries: 0 }
        },
        run: (plan, exchange, signal) => this.outbound.stream(plan, exchange, signal),
      },
      budget: new ReplayBudget(D.tunnelReplayMaxBytes, D.tunnelReplayMaxBytesPerCall),
      observer: this.telemetry,
      log: this.log.child('tunnel'),
    }
    return new TunnelIngress({
      connect: async (request) => {
        const peers = targets.resolve(request.service, request.headers)
        return {
          open: (init, events) => this.telemetry.continueTrace(request.headers, () => new RoutedStream(init, events, peers, parts).start()),
        }
      },
      log: this.log.child('ingress'),
      consumedHeaders: authOn ? ['authorization'] : [],
      maxIdempotencyKeyBytes: o.maxRequestIdBytes,
      maxHeldMessageBytes: o.tunnelWindowBytes,
    })
  }

  /** The narrow view the API handlers get. */
  private apiView(): GatewayApi {
    return {
      peerId: this.peerId,
      startedAt: this.startedAt,
      maxPayloadBytes: this.o.maxPayloadBytes,
      maxRequestIdBytes: this.o.maxRequestIdBytes,
      maxMethodBytes: this.o.maxMethodBytes,
      callDeadlineMs: this.o.callDeadlineMs,
      principalOf: (authorization) => this.authenticator?.check(authorization) ?? ANONYMOUS,
      call: (req, timeoutMs, signal) => this.outbound.call(req, timeoutMs, signal),
      serve: this.registry,
      callerPolicy: () => ({ mode: this.policy.mode, ruleCount: this.policy.ruleCount, policyFile: this.policy.policyFile }),
      status: (): StatusView => ({
        listenAddrs: this.directAddrs(),
        announcedAddrs: this.multiaddrs(),
        natStatus: this.nat.status(),
        nats: {
          state: this.nats?.state ?? NatsState.DISABLED,
          url: this.nats?.url ?? '',
          subject: this.nats?.callSubject(this.peerId) ?? '',
          connectedServer: this.nats?.connectedServer ?? '',
          connectedServerName: this.nats?.connectedServerName ?? '',
          knownServers: this.nats?.knownServers ?? [],
        },
        inflightCalls: this.inflight.count,
      }),
      relays: (): RelayView[] =>
        this.relays.all().map((r) => ({
          ...r,
          connected: this.relays.connected(r.peerId),
          reserved: this.relays.reserved(r.peerId),
          circuitAddrs: this.relays.circuitAddrs(r.peerId),
        })),
      peerMetrics: () => this.metrics,
      poolStats: () => this.pool.stats(),
      peers: () => this.peers,
    }
  }
}
