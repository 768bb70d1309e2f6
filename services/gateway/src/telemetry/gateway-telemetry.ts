import {
  type Attributes,
  type Context,
  type Counter,
  context,
  type Histogram,
  metrics,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api'
import { ATTR_RPC_METHOD, ATTR_RPC_METHOD_ORIGINAL, ATTR_RPC_SYSTEM_NAME } from '@opentelemetry/semantic-conventions'
import { durationToMs } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerRequest, StreamOpen } from '@stargate/shared/gen/envelope'
import { AttemptOutcome, NatsState, Tier } from '@stargate/shared/gen/gateway'
import { grpcStatusName, RPC_METHOD_OTHER, rpcCallDuration, rpcStatusAttributes } from '@stargate/shared/telemetry-rpc'
import { STARGATE_VERSION } from '@stargate/shared/version'
import { type InboundMeta, type InboundObserver, type PeerResponseInit, PING_METHOD } from '../inbound.ts'
import type { RelayHealthObserver, RelayState } from '../relays.ts'
import type { AttemptInit, RouteObserverPlan, RouterObserver } from '../router.ts'
import type { HandlerResult } from '../serve.ts'
import type { NatsStreamStats } from '../tiers/nats-streams.ts'
import { tierName } from '../tiers/tier.ts'
import type { TunnelCalleeObserver, TunnelCallTrace } from '../tunnel/callee.ts'

/** Instrumentation scope of the gateway's spans and metrics. */
export const GATEWAY_SCOPE = 'stargate-gateway'

/** Span and metric attribute names used by the gateway. */
export const ATTR = {
  tier: 'stargate.tier',
  attempt: 'stargate.attempt',
  peerId: 'stargate.peer_id',
  outcome: 'stargate.outcome',
  reason: 'stargate.reason',
  via: 'stargate.via',
  method: 'stargate.method',
  requestId: 'stargate.request_id',
  callerPeerId: 'stargate.caller_peer_id',
  replayed: 'stargate.replayed',
  relay: 'stargate.relay.peer_id',
  relayAddr: 'stargate.relay.addr',
  rttMs: 'stargate.relay.rtt_ms',
  errorType: 'error.type',
  service: 'stargate.service',
} as const

/**
 * rpc.system.name of calls between gateways (Call → Serve handler, on any tier). The RPC conventions allow
 * a custom value; with it the caller's call span and the callee's inbound span are an RPC client span and
 * server span, named after rpc.method.
 */
export const RPC_SYSTEM_STARGATE = 'stargate'

/** The counter of tunnelled calls (by stargate.service, stargate.tier, rpc.status_code and error.type), for dashboards. */
export const TUNNEL_CALLS_METRIC = 'stargate.tunnel.calls'

/**
 * rpc.system.name and rpc.method of an outbound exchange: a Call (stargate, the method as called) or a
 * tunnelled gRPC call (grpc, "package.Service/Method").
 */
function rpcOf(plan: RouteObserverPlan): { system: string; method: string } {
  return plan.purpose === 'stream'
    ? { system: 'grpc', method: plan.method.replace(/^\//, '') }
    : { system: RPC_SYSTEM_STARGATE, method: plan.method }
}

/** The rpc.* attributes of an outbound exchange's spans and metrics. */
function rpcAttributes(plan: RouteObserverPlan): Attributes {
  const { system, method } = rpcOf(plan)
  return { [ATTR_RPC_SYSTEM_NAME]: system, [ATTR_RPC_METHOD]: method }
}

/** The service of a "/package.Service/Method" path (stargate.service of tunnel metrics). */
function serviceOf(path: string): string {
  const slash = path.indexOf('/', 1)
  return path.slice(path.startsWith('/') ? 1 : 0, slash > 0 ? slash : undefined)
}

const OUTCOMES: Record<number, string> = {
  [AttemptOutcome.SUCCESS]: 'success',
  [AttemptOutcome.FAILED]: 'failed',
  [AttemptOutcome.SKIPPED]: 'skipped',
  [AttemptOutcome.CANCELLED]: 'cancelled',
  [AttemptOutcome.REMOTE_ERROR]: 'remote_error',
}

function outcomeName(o: AttemptOutcome | undefined): string {
  return OUTCOMES[o ?? AttemptOutcome.UNSPECIFIED] ?? 'unspecified'
}

/** What the gateway telemetry reads on its own (observable gauges). */
export interface GatewayTelemetrySources {
  /** Open pooled connections. */
  poolConnections(): number
  /**
   * Inbound requests not run, by reason (malformed, busy, duplicate, denied, full, ...): counters that only
   * grow, reported as `stargate.inbound.dropped{reason}`.
   */
  inboundDropped?(): Record<string, number>
  /** Bytes of ids and responses held by the duplicate-request memory. */
  dedupeBytes?(): number
  /** Calls and payload bytes waiting in Serve queues (not yet written to their clients). */
  serveQueue?(): { calls: number; bytes: number }
  /** Size and bound of the request journal (undefined when it is off). */
  journal?(): { bytes: number; maxBytes: number } | undefined
  /** The configured relays and their health. */
  relays(): RelayState[]
  /** State of the NATS connection (DISABLED without --nats). */
  natsState?(): NatsState
  /** Sealed NATS messages refused, by reason (stale, replay, forged, full, ...). */
  natsRefusals?(): Readonly<Record<string, number>>
  /** Tunnelled streams on NATS (undefined without --nats). */
  natsStreams?(): NatsStreamStats | undefined
}

/**
 * The gateway's spans and metrics. It observes the router (a span per Call with a child span per tier
 * attempt; attempt and call metrics), relay health checks (a span and metrics per check) and inbound calls
 * (a SERVER span joining the caller's trace through the envelope's trace_context, with a child span for
 * the delivery to a Serve client). Without a configured SDK every instrument is a no-op.
 */
export class GatewayTelemetry implements RouterObserver, RelayHealthObserver, InboundObserver, TunnelCalleeObserver {
  private readonly tracer = trace.getTracer(GATEWAY_SCOPE, STARGATE_VERSION)
  private readonly calls = new WeakMap<RouteObserverPlan, Span>()
  private readonly tunnelCalls: Counter
  private readonly tunnelInbound: Counter
  private readonly attempts: Counter
  private readonly attemptDuration: Histogram
  private readonly callDuration: Histogram
  private readonly healthChecks: Counter
  private readonly relayRtt: Histogram
  private readonly inboundCalls: Counter
  private readonly rpcClientDuration: Histogram
  private readonly rpcServerDuration: Histogram
  /** Inbound requests handed to a Serve client during their handling: their method is one this gateway serves. */
  private readonly delivered = new WeakSet<PeerRequest>()

  constructor(sources: GatewayTelemetrySources) {
    const meter = metrics.getMeter(GATEWAY_SCOPE, STARGATE_VERSION)
    this.attempts = meter.createCounter('stargate.tier.attempts', { description: 'Tier attempts by tier and outcome', unit: '{attempt}' })
    this.attemptDuration = meter.createHistogram('stargate.tier.attempt.duration', {
      description: 'Duration of tier attempts (connect and exchange)',
      unit: 's',
    })
    this.callDuration = meter.createHistogram('stargate.call.duration', { description: 'Duration of outbound Calls', unit: 's' })
    this.healthChecks = meter.createCounter('stargate.relay.health_checks', {
      description: 'Relay health checks by outcome',
      unit: '{check}',
    })
    this.relayRtt = meter.createHistogram('stargate.relay.rtt', { description: 'Round-trip time of relay health pings', unit: 's' })
    this.inboundCalls = meter.createCounter('stargate.inbound.calls', {
      description: 'Calls received from other gateways',
      unit: '{call}',
    })
    this.tunnelCalls = meter.createCounter(TUNNEL_CALLS_METRIC, {
      description: 'Tunnelled gRPC calls made through this gateway, by service, tier and gRPC status',
      unit: '{call}',
    })
    this.tunnelInbound = meter.createCounter('stargate.tunnel.inbound.calls', {
      description: 'Tunnelled gRPC calls received from other gateways (or this one), by service, tier and gRPC status',
      unit: '{call}',
    })
    this.rpcClientDuration = rpcCallDuration(meter, 'client')
    this.rpcServerDuration = rpcCallDuration(meter, 'server')
    meter
      .createObservableGauge('stargate.relay.healthy', { description: '1 when the relay is healthy and usable, else 0' })
      .addCallback((r) => {
        for (const s of sources.relays()) r.observe(s.healthy && !s.suspect ? 1 : 0, { [ATTR.relay]: s.peerId, [ATTR.relayAddr]: s.addr })
      })
    meter
      .createObservableGauge('stargate.nats.connected', {
        description: '1 while the NATS connection is up, 0 while it is down or reconnecting (absent without --nats)',
      })
      .addCallback((r) => {
        const state = sources.natsState?.() ?? NatsState.DISABLED
        if (state !== NatsState.DISABLED) r.observe(state === NatsState.CONNECTED ? 1 : 0)
      })
    meter
      .createObservableCounter('stargate.nats.refused', {
        description: 'Sealed NATS messages refused, by reason (malformed, version, misaddressed, stale, replay, forged, full)',
        unit: '{message}',
      })
      .addCallback((r) => {
        for (const [reason, n] of Object.entries(sources.natsRefusals?.() ?? {})) r.observe(n, { reason })
      })
    meter
      .createObservableGauge('stargate.nats.streams', {
        description: 'Tunnelled gRPC streams open on NATS, by side (caller: made through this gateway; callee: served here)',
        unit: '{stream}',
      })
      .addCallback((r) => {
        const s = sources.natsStreams?.()
        if (s == null) return
        r.observe(s.callerStreams, { side: 'caller' })
        r.observe(s.calleeStreams, { side: 'callee' })
      })
    meter
      .createObservableCounter('stargate.nats.stream.failures', {
        description:
          'Tunnelled streams on NATS ended by the link, by reason (lost: a frame missing or repeated; peer_gone; unanswered; disconnected; too_large; refused)',
        unit: '{stream}',
      })
      .addCallback((r) => {
        for (const [reason, n] of Object.entries(sources.natsStreams?.()?.failures ?? {})) r.observe(n, { reason })
      })
    meter
      .createObservableGauge('stargate.pool.connections', { description: 'Open pooled peer connections', unit: '{connection}' })
      .addCallback((r) => r.observe(sources.poolConnections()))
    meter
      .createObservableCounter('stargate.inbound.dropped', {
        description:
          'Inbound requests not run, by reason: malformed/forged/replayed frames and messages, busy refusals, duplicates answered from memory, callers denied by the caller policy, refusals for a full duplicate memory or journal, full Serve queues, per-connection stream and buffer caps',
        unit: '{request}',
      })
      .addCallback((r) => {
        const dropped = sources.inboundDropped?.()
        if (dropped == null) return
        for (const [reason, count] of Object.entries(dropped)) r.observe(count, { reason })
      })
    meter
      .createObservableGauge('stargate.serve.queue.calls', {
        description: 'Calls waiting in Serve queues, not yet written to their clients (bounded per stream by --serve-queue-max-calls)',
        unit: '{call}',
      })
      .addCallback((r) => r.observe(sources.serveQueue?.().calls ?? 0))
    meter
      .createObservableGauge('stargate.serve.queue.bytes', {
        description: 'Payload bytes waiting in Serve queues (bounded per stream by --serve-queue-max-bytes)',
        unit: 'By',
      })
      .addCallback((r) => r.observe(sources.serveQueue?.().bytes ?? 0))
    meter
      .createObservableGauge('stargate.inbound.dedupe.bytes', {
        description: 'Bytes of request ids and responses held to answer duplicate requests (bounded by --dedupe-max-bytes)',
        unit: 'By',
      })
      .addCallback((r) => r.observe(sources.dedupeBytes?.() ?? 0))
    const journal = (pick: 'bytes' | 'maxBytes') => (r: { observe(v: number): void }) => {
      const j = sources.journal?.()
      if (j != null) r.observe(j[pick])
    }
    meter
      .createObservableGauge('stargate.journal.bytes', { description: 'Disk bytes of the request journal', unit: 'By' })
      .addCallback(journal('bytes'))
    meter
      .createObservableGauge('stargate.journal.max_bytes', {
        description: 'Bound of the request journal (--request-journal-max-bytes)',
        unit: 'By',
      })
      .addCallback(journal('maxBytes'))
  }

  /**
   * Runs one outbound exchange inside its span: the span becomes the parent of the tier-attempt spans, and
   * `run` gets its W3C trace context to send along, so the remote gateway joins the trace on every tier.
   */
  async traceCall<T>(plan: RouteObserverPlan, run: (traceContext: Record<string, string>) => Promise<T>): Promise<T> {
    const span = this.tracer.startSpan(rpcOf(plan).method, {
      kind: SpanKind.CLIENT,
      attributes: {
        ...rpcAttributes(plan),
        [ATTR.peerId]: plan.peerId,
        [ATTR.requestId]: plan.requestId,
      },
    })
    const ctx = trace.setSpan(context.active(), span)
    const carrier: Record<string, string> = {}
    propagation.inject(ctx, carrier)
    this.calls.set(plan, span)
    try {
      return await context.with(ctx, () => run(carrier))
    } finally {
      this.calls.delete(plan)
      span.end()
    }
  }

  attempt(peerId: string, a: AttemptInit, plan: RouteObserverPlan): void {
    const endMs = Date.now()
    const durationMs = a.duration != null ? durationToMs(a.duration) : 0
    const tier = tierName(a.tier ?? Tier.UNSPECIFIED)
    const outcome = outcomeName(a.outcome)
    const parent = this.calls.get(plan)
    const attrs: Attributes = {
      [ATTR.tier]: tier,
      [ATTR.attempt]: a.round ?? 0,
      [ATTR.peerId]: peerId,
      [ATTR.outcome]: outcome,
      ...rpcAttributes(plan),
    }
    if (a.reason) attrs[ATTR.reason] = a.reason
    if (a.via) attrs[ATTR.via] = a.via
    const failed =
      a.outcome === AttemptOutcome.FAILED || a.outcome === AttemptOutcome.CANCELLED || a.outcome === AttemptOutcome.REMOTE_ERROR
    const metricAttrs: Attributes = { [ATTR.tier]: tier, [ATTR.outcome]: outcome }
    if (failed) {
      attrs[ATTR.errorType] = outcome
      metricAttrs[ATTR.errorType] = outcome
    }
    const span = this.tracer.startSpan(
      `stargate.attempt ${tier}`,
      { kind: SpanKind.INTERNAL, startTime: endMs - durationMs, attributes: attrs },
      parent != null ? trace.setSpan(ROOT_CONTEXT, parent) : context.active(),
    )
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: a.reason ?? outcome })
    span.end(endMs)
    this.attempts.add(1, metricAttrs)
    this.attemptDuration.record(durationMs / 1000, metricAttrs)
  }

  call(_peerId: string, ok: boolean, tier: Tier, durationMs: number, code: Code | undefined, plan: RouteObserverPlan): void {
    const status = rpcStatusAttributes(rpcOf(plan).system, ok ? 0 : (code ?? Code.Unknown), 'client')
    const attrs: Attributes = { [ATTR.tier]: tierName(tier), [ATTR.outcome]: ok ? 'success' : 'error' }
    if (!ok) attrs[ATTR.errorType] = status[ATTR.errorType]
    this.callDuration.record(durationMs / 1000, attrs)
    this.rpcClientDuration.record(durationMs / 1000, { ...rpcAttributes(plan), ...status })
    const span = this.calls.get(plan)
    if (span == null) return
    span.setAttributes({ ...attrs, ...status })
    if (!ok) span.setStatus({ code: SpanStatusCode.ERROR, message: String(status[ATTR.errorType]) })
  }

  /**
   * Runs `fn` in the trace the client's request headers carry (traceparent, tracestate), so the spans of a
   * tunnelled call continue the client's trace as the API server's spans do for local methods.
   */
  continueTrace<T>(headers: Record<string, string | string[] | undefined>, fn: () => T): T {
    return context.with(propagation.extract(ROOT_CONTEXT, headers), fn)
  }

  /** A tunnelled call made through this gateway ended (once per client call, whatever peers and tiers it tried). */
  tunnelled(service: string, tier: Tier, code: number): void {
    this.tunnelCalls.add(1, { [ATTR.service]: service, [ATTR.tier]: tierName(tier), ...rpcStatusAttributes('grpc', code, 'client') })
  }

  /**
   * A tunnelled call arrives: a SERVER span joining the caller's trace (through the StreamOpen's trace
   * context), whose own context goes on to the backend request, so the trace runs client → caller gateway
   * → callee gateway → backend.
   */
  start(open: StreamOpen, meta: InboundMeta): TunnelCallTrace {
    const parent: Context = propagation.extract(ROOT_CONTEXT, open.traceContext)
    const tier = tierName(meta.tier)
    // Named once the service and method are known to be served here (UNIMPLEMENTED: not exposed, or not a
    // method of the backend); until then the RPC system's name, as the conventions say.
    const span = this.tracer.startSpan(
      'grpc',
      {
        kind: SpanKind.SERVER,
        attributes: {
          [ATTR_RPC_SYSTEM_NAME]: 'grpc',
          [ATTR.tier]: tier,
          [ATTR.callerPeerId]: meta.callerPeerId,
          [ATTR.requestId]: open.requestId,
        },
      },
      parent,
    )
    const startedAtMs = performance.now()
    const traceContext: Record<string, string> = {}
    propagation.inject(trace.setSpan(parent, span), traceContext)
    return {
      traceContext,
      end: (result, replayed) => {
        const served = result.code !== Code.Unimplemented
        const method = open.method.replace(/^\//, '')
        const named: Attributes = served
          ? { [ATTR_RPC_METHOD]: method }
          : { [ATTR_RPC_METHOD]: RPC_METHOD_OTHER, [ATTR_RPC_METHOD_ORIGINAL]: method }
        const status = rpcStatusAttributes('grpc', result.code, 'server')
        if (served) span.updateName(method)
        span.setAttributes({ ...named, ...status, [ATTR.replayed]: replayed })
        if (status[ATTR.errorType] != null) span.setStatus({ code: SpanStatusCode.ERROR, message: result.message })
        span.end()
        this.rpcServerDuration.record((performance.now() - startedAtMs) / 1000, {
          [ATTR_RPC_SYSTEM_NAME]: 'grpc',
          [ATTR_RPC_METHOD]: named[ATTR_RPC_METHOD],
          ...status,
        })
        this.tunnelInbound.add(1, { [ATTR.service]: served ? serviceOf(open.method) : RPC_METHOD_OTHER, [ATTR.tier]: tier, ...status })
      },
    }
  }

  check(relay: RelayState, ok: boolean, rttMs: number, error: string | undefined): void {
    const endMs = Date.now()
    const outcome = ok ? 'success' : 'failed'
    const attrs: Attributes = { [ATTR.relay]: relay.peerId, [ATTR.relayAddr]: relay.addr, [ATTR.outcome]: outcome }
    if (ok) attrs[ATTR.rttMs] = rttMs
    else attrs[ATTR.errorType] = 'health_check_failed'
    const span = this.tracer.startSpan(
      'stargate.relay.health_check',
      { kind: SpanKind.CLIENT, startTime: relay.lastCheckAtMs ?? endMs, attributes: attrs },
      ROOT_CONTEXT,
    )
    if (!ok) span.setStatus({ code: SpanStatusCode.ERROR, message: error ?? 'failed' })
    span.end(endMs)
    // The configured address names the relay even before its peer id is known (an address without /p2p/).
    this.healthChecks.add(1, { [ATTR.relay]: relay.peerId, [ATTR.relayAddr]: relay.addr, [ATTR.outcome]: outcome })
    if (ok) this.relayRtt.record(rttMs / 1000, { [ATTR.relay]: relay.peerId, [ATTR.relayAddr]: relay.addr })
  }

  async handle(req: PeerRequest, meta: InboundMeta, run: () => Promise<PeerResponseInit>): Promise<PeerResponseInit> {
    const parent: Context = propagation.extract(ROOT_CONTEXT, req.traceContext)
    const tier = tierName(meta.tier)
    // The span is named once the method is known to be served here (a peer may send any method name).
    const span = this.tracer.startSpan(
      RPC_SYSTEM_STARGATE,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [ATTR_RPC_SYSTEM_NAME]: RPC_SYSTEM_STARGATE,
          [ATTR.tier]: tier,
          [ATTR.callerPeerId]: meta.callerPeerId,
          [ATTR.requestId]: req.requestId,
        },
      },
      parent,
    )
    const startedAtMs = performance.now()
    try {
      const res = await context.with(trace.setSpan(parent, span), run)
      const error = res.result?.case === 'error' ? res.result.value : undefined
      const outcome = error != null ? 'error' : 'success'
      const code: Code | 0 = error != null ? ((error.code ?? Code.Unknown) as Code) : 0
      const status = rpcStatusAttributes(RPC_SYSTEM_STARGATE, code, 'server')
      const served = this.delivered.has(req) || (req.method === PING_METHOD && error == null && res.replayed !== true)
      const method: Attributes = served
        ? { [ATTR_RPC_METHOD]: req.method }
        : { [ATTR_RPC_METHOD]: RPC_METHOD_OTHER, [ATTR_RPC_METHOD_ORIGINAL]: req.method }
      if (served) span.updateName(req.method)
      span.setAttributes({ ...method, ...status, [ATTR.outcome]: outcome, [ATTR.replayed]: res.replayed === true })
      if (error != null && status[ATTR.errorType] != null) span.setStatus({ code: SpanStatusCode.ERROR, message: error.message ?? '' })
      const counted: Attributes = { [ATTR.tier]: tier, [ATTR.outcome]: outcome }
      if (error != null) counted[ATTR.errorType] = grpcStatusName(code)
      this.inboundCalls.add(1, counted)
      this.rpcServerDuration.record((performance.now() - startedAtMs) / 1000, {
        [ATTR_RPC_SYSTEM_NAME]: RPC_SYSTEM_STARGATE,
        [ATTR_RPC_METHOD]: method[ATTR_RPC_METHOD],
        ...status,
      })
      return res
    } finally {
      span.end()
    }
  }

  /** The delivery to a Serve client in its own span, whose W3C context the client gets (InboundCall.trace_context). */
  async deliver(req: PeerRequest, run: (traceContext: Record<string, string>) => Promise<HandlerResult>): Promise<HandlerResult> {
    this.delivered.add(req)
    const span = this.tracer.startSpan('stargate.serve.deliver', { kind: SpanKind.INTERNAL, attributes: { [ATTR.method]: req.method } })
    const ctx = trace.setSpan(context.active(), span)
    const carrier: Record<string, string> = {}
    propagation.inject(ctx, carrier)
    try {
      return await context.with(ctx, () => run(carrier))
    } catch (err: unknown) {
      const e = StargateError.from(err)
      span.setAttribute(ATTR.errorType, grpcStatusName(e.code))
      span.setStatus({ code: SpanStatusCode.ERROR, message: e.rawMessage })
      throw err
    } finally {
      span.end()
    }
  }
}
