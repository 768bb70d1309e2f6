import type { CallRequest } from '@stargate/shared/gen/gateway'
import type { InFlight } from './inflight.ts'
import type { CallResponseInit, Exchange, Routed, RouteObserverPlan, RoutePlan, Router } from './router.ts'

/** Wraps an outbound exchange in its trace (telemetry implements it). */
export interface CallTracer {
  traceCall<T>(plan: RouteObserverPlan, run: (traceContext: Record<string, string>) => Promise<T>): Promise<T>
}

/**
 * The one outbound path: every exchange this gateway starts — a Call or a tunnelled gRPC stream, to a peer
 * or to itself — is planned and routed by the router, counted in flight (graceful shutdown waits for it)
 * and traced, in that order.
 */
export class Outbound {
  private readonly router: Router
  private readonly tracer: CallTracer
  private readonly inflight: InFlight

  constructor(router: Router, tracer: CallTracer, inflight: InFlight) {
    this.router = router
    this.tracer = tracer
    this.inflight = inflight
  }

  /** One Call; rejects with a StargateError (INVALID_ARGUMENT for bad options, the remote status, UNAVAILABLE…). */
  call(req: CallRequest, timeoutMs: number, signal: AbortSignal): Promise<CallResponseInit> {
    const plan = this.router.plan(req, timeoutMs)
    return this.inflight.track(() => this.tracer.traceCall(plan, (traceContext) => this.router.call(plan, signal, traceContext)))
  }

  /**
   * One tunnelled stream's exchange, made with the trace context of its span (sent in the StreamOpen, so the
   * callee and the backend join the trace). Rejects with a StargateError.
   */
  stream<T>(plan: RoutePlan, exchange: (traceContext: Record<string, string>) => Exchange<T>, signal: AbortSignal): Promise<Routed<T>> {
    return this.inflight.track(() => this.tracer.traceCall(plan, (traceContext) => this.router.run(plan, exchange(traceContext), signal)))
  }
}
