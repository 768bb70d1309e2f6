import { Code, isTransportFailure, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { type Exchange, type ExchangeContext, final, isFinal, type Routed, type RoutePlan } from '../router.ts'
import { type TierLink, tierName } from '../tiers/tier.ts'
import type { ClientStreamEvents, OpenInit, TunnelClientStream, TunnelVia } from './client.ts'
import { STATUS_OK, type TunnelStatus } from './endpoint.ts'
import { OPEN_CREDIT_BYTES } from './frames.ts'
import type { TunnelCallStream } from './ingress.ts'
import { KeptChunks, type ReplayBudget } from './replay.ts'

/**
 * A tunnelled call routed like a Call: opening its stream is an exchange run by the router (tier racing,
 * cool-downs, the pool, relay health, telemetry), toward each candidate peer in turn.
 *
 * - Before the StreamOpen was handed to a link, a failure is the router's to retry: on the next tier, in the
 *   next round, and then on the next candidate peer (discovery failover).
 * - After it, a failure of the link ends the call UNAVAILABLE and is never replayed — unless the call is
 *   idempotent (stargate-idempotency-key), its whole request so far is kept (within the replay budget) and
 *   no response byte reached the client: then the request goes again on another tier, and the callee, which
 *   runs a call at most once per key, answers it from the first run.
 * - Once any StreamOpen left, the call never moves to another peer.
 *
 * Request data written before a link is won waits here (at most the opening credit, then the client is
 * paused); afterwards it goes to the tunnel stream, uncopied.
 */

/** How the gateway routes exchanges (the one outbound path: plan, in flight, trace, router). */
export interface StreamRouting {
  /** The plan of an exchange with a peer; the last candidate gets the gateway's retries, others one round. */
  plan(peerId: string, method: string, requestId: string, deadlineAtMs: number, last: boolean): RoutePlan
  /** Runs the exchange (made with the trace context of its span) through the router, traced and in flight. */
  run<T>(plan: RoutePlan, exchange: (traceContext: Record<string, string>) => Exchange<T>, signal: AbortSignal): Promise<Routed<T>>
}

/** Counts tunnelled calls (telemetry implements it). */
export interface TunnelCallObserver {
  /** A call ended: its service, the tier of its last attempt (UNSPECIFIED when none connected), its status code. */
  tunnelled(service: string, tier: Tier, code: number): void
}

export interface RoutedStreamParts {
  routing: StreamRouting
  /** Bounds the requests kept to retry idempotent calls. */
  budget: ReplayBudget
  observer?: TunnelCallObserver
  log: Logger
}

/** The outcome of one attempt's tunnel stream. */
type Settle = (status: TunnelStatus) => void

/** One tunnelled call from the ingress, routed to its candidate peers (best first). */
export class RoutedStream implements TunnelCallStream, ClientStreamEvents {
  private readonly init: OpenInit
  private readonly events: ClientStreamEvents
  private readonly targets: readonly string[]
  private readonly parts: RoutedStreamParts
  private readonly ctl = new AbortController()
  /** The request so far, kept to send it again (idempotent calls only). */
  private readonly kept?: KeptChunks
  /** Request data not yet handed to the current tunnel stream. */
  private pending: Uint8Array[] = []
  private pendingBytes = 0
  /**
   * Request data handed to the current tunnel stream before the peer answered anything on it: given back to
   * `pending` when the stream fails knowing it never reached the peer, so the next attempt sends it again.
   * At most the opening credit and one chunk (no more is taken before the peer grants credit).
   */
  private unconfirmed: Uint8Array[] = []
  private requestEnded = false
  private endHanded = false
  /** The ingress was told to wait (write returned false). */
  private wantWritable = false
  private inner?: TunnelClientStream
  private settle?: Settle
  /** True once a StreamOpen left for some peer: the call never moves to another peer after. */
  private openSent = false
  private responseStarted = false
  private closed = false
  /** The tier of the latest attempt. */
  private tier = Tier.UNSPECIFIED

  constructor(init: OpenInit, events: ClientStreamEvents, targets: readonly string[], parts: RoutedStreamParts) {
    this.init = init
    this.events = events
    this.targets = targets
    this.parts = parts
    if (init.idempotent === true) this.kept = new KeptChunks(parts.budget)
  }

  /** Starts routing (the result arrives as events). */
  start(): this {
    this.route().catch((err: unknown) => this.parts.log.warn('tunnelled call routing failed', { err }))
    return this
  }

  private async route(): Promise<void> {
    const deadlineAtMs = this.init.deadlineAtMs ?? Number.POSITIVE_INFINITY
    for (let i = 0; i < this.targets.length; i++) {
      const last = i === this.targets.length - 1
      const plan = this.parts.routing.plan(this.targets[i]!, this.init.method, this.init.requestId, deadlineAtMs, last)
      try {
        const routed = await this.parts.routing.run(plan, (traceContext) => this.exchange(traceContext), this.ctl.signal)
        this.close(routed.result)
        return
      } catch (err: unknown) {
        const e = StargateError.from(err, Code.Unavailable)
        if (!last && !this.openSent && !this.closed && isTransportFailure(e) && !isFinal(e) && e.code === Code.Unavailable) {
          this.parts.log.info('tunnelled call moves to the next peer exposing its service', {
            method: this.init.method,
            from: plan.peerId,
            reason: e.rawMessage,
          })
          continue
        }
        this.close({ code: e.code, message: e.rawMessage, trailers: [] })
        return
      }
    }
  }

  /** The exchange of one plan: runs the call's tunnel stream on a link the router won. */
  private exchange(traceContext: Record<string, string>): Exchange<TunnelStatus> {
    return {
      run: (link, ctx) => this.attempt(link, ctx, traceContext),
      remoteError: (status) => (status.code !== STATUS_OK ? { code: status.code as Code, message: status.message } : undefined),
    }
  }

  private attempt(link: TierLink, ctx: ExchangeContext, traceContext: Record<string, string>): Promise<TunnelStatus> {
    return new Promise<TunnelStatus>((resolve, reject) => {
      if (this.closed) {
        reject(new StargateError(Code.Canceled, 'the client cancelled the call'))
        return
      }
      if (link.openStream == null) {
        reject(new StargateError(Code.Unavailable, `the ${tierName(ctx.tier)} tier carries no tunnelled streams`))
        return
      }
      if (this.openSent && !this.replayable) {
        reject(final(new StargateError(Code.Unavailable, 'the call reached the peer before and cannot be sent again')))
        return
      }
      this.tier = ctx.tier
      const init: OpenInit = { ...this.init, traceContext }
      if (Number.isFinite(ctx.deadlineAtMs)) init.deadlineAtMs = ctx.deadlineAtMs
      else delete init.deadlineAtMs
      // A link may fail the stream while it is being opened: its status waits until the stream is known.
      let early: TunnelStatus | undefined
      this.settle = (status) => {
        early = status
      }
      let inner: TunnelClientStream
      try {
        inner = link.openStream(init, this)
      } catch (err: unknown) {
        // Nothing left: the router may try another tier.
        this.settle = undefined
        reject(StargateError.from(err, Code.Unavailable))
        return
      }
      if (this.openSent) {
        // A retry of an idempotent call: the whole request again, from its first byte.
        this.pending = [...this.kept!.chunks]
        this.pendingBytes = this.kept!.byteLength
      }
      this.inner = inner
      this.unconfirmed = []
      this.endHanded = false
      const onAbort = (): void => {
        inner.reset(Code.Canceled, 'the call ended')
        done()
        reject(StargateError.from(ctx.signal.reason, Code.Canceled))
      }
      const done = (reached = inner.openSent): void => {
        ctx.signal.removeEventListener('abort', onAbort)
        if (this.inner === inner) this.inner = undefined
        this.settle = undefined
        if (reached) this.openSent = true
      }
      this.settle = (status) => {
        // A link that knows its StreamOpen reached no one (nobody listened) leaves the call free to move on.
        const sent = inner.openSent && status.undelivered !== true
        done(sent)
        if (!sent && !inner.reached) this.takeBackUnconfirmed()
        if (status.from === 'link') {
          const e = new StargateError(Code.Unavailable, status.message)
          // Before the open left nothing reached the peer; after it, only an idempotent call may go again.
          reject(!sent || this.replayable ? e : final(e))
        } else if (status.from === 'local') {
          reject(final(new StargateError(status.code as Code, status.message)))
        } else {
          resolve(status)
        }
      }
      if (early != null) {
        this.settle(early)
        return
      }
      ctx.signal.addEventListener('abort', onAbort, { once: true })
      this.flush()
    })
  }

  /** The request data the failed stream took goes first in what the next attempt sends. */
  private takeBackUnconfirmed(): void {
    if (this.unconfirmed.length === 0) return
    const back = this.unconfirmed
    this.unconfirmed = []
    this.pending = [...back, ...this.pending]
    for (const c of back) this.pendingBytes += c.byteLength
  }

  /** Hands request data to the tunnel stream, remembering it until the peer answered on the stream. */
  private hand(inner: TunnelClientStream, chunk: Uint8Array): boolean {
    if (inner.reached) {
      if (this.unconfirmed.length > 0) this.unconfirmed = []
    } else {
      this.unconfirmed.push(chunk)
    }
    return inner.write(chunk)
  }

  /** True when the call may be sent again: idempotent, its request kept whole, no response delivered. */
  private get replayable(): boolean {
    return this.kept?.complete === true && !this.responseStarted && !this.closed
  }

  private close(status: TunnelStatus): void {
    if (this.closed) return
    this.closed = true
    this.kept?.drop()
    this.counted(status.code)
    this.events.onClose(status)
  }

  private counted(code: number): void {
    const m = this.init.method
    this.parts.observer?.tunnelled(m.slice(1, m.indexOf('/', 1)), this.tier, code)
  }

  /** Hands waiting request data to the tunnel stream, then the end; tells the ingress when it may write again. */
  private flush(): void {
    const inner = this.inner
    if (inner == null) return
    while (this.pending.length > 0) {
      const chunk = this.pending.shift()!
      this.pendingBytes -= chunk.byteLength
      // The stream keeps what it cannot send yet (uncopied); onWritable follows.
      if (!this.hand(inner, chunk)) return
    }
    if (this.requestEnded && !this.endHanded) {
      this.endHanded = true
      inner.end()
    }
    if (this.wantWritable && this.inner === inner) {
      this.wantWritable = false
      this.events.onWritable()
    }
  }

  // The ingress's side (TunnelCallStream).

  write(data: Uint8Array): boolean {
    if (this.closed || this.requestEnded) return false
    this.kept?.add(data)
    const inner = this.inner
    if (inner != null && this.pending.length === 0) {
      if (this.hand(inner, data)) return true
      this.wantWritable = true
      return false
    }
    this.pending.push(data)
    this.pendingBytes += data.byteLength
    if (this.pendingBytes < OPEN_CREDIT_BYTES) return true
    this.wantWritable = true
    return false
  }

  end(): void {
    if (this.closed || this.requestEnded) return
    this.requestEnded = true
    if (this.pending.length === 0 && this.inner != null) {
      this.endHanded = true
      this.inner.end()
    }
  }

  resume(): void {
    this.inner?.resume()
  }

  /** The client went away (or the ingress gave up): ends routing and the tunnel stream; nothing more is reported. */
  reset(code: Code, message: string): void {
    if (this.closed) return
    this.closed = true
    this.kept?.drop()
    this.counted(code)
    this.ctl.abort(new StargateError(code, message))
    this.inner?.reset(code, message)
  }

  // The tunnel stream's side (ClientStreamEvents).

  onHeaders(metadata: MetadataEntry[], via: TunnelVia): void {
    this.responseStarted = true
    this.kept?.drop()
    this.events.onHeaders(metadata, via)
  }

  onData(data: Uint8Array): boolean {
    this.responseStarted = true
    this.kept?.drop()
    return this.events.onData(data)
  }

  onWritable(): void {
    this.flush()
    if (this.pending.length === 0 && this.wantWritable) {
      this.wantWritable = false
      this.events.onWritable()
    }
  }

  onClose(status: TunnelStatus): void {
    this.settle?.(status)
  }
}
