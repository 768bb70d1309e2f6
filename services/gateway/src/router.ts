import { randomUUID } from 'node:crypto'
import type { MessageInitShape } from '@bufbuild/protobuf'
import type { Duration } from '@bufbuild/protobuf/wkt'
import { type Clock, durationOfMs, durationToMs, systemClock, type Timer } from '@stargate/shared/clock'
import { Code, isTransportFailure, StargateError } from '@stargate/shared/errors'
import type { PeerResponse } from '@stargate/shared/gen/envelope'
import { AttemptOutcome, type AttemptSchema, type CallRequest, type CallResponseSchema, Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { deadline, sleep } from '@stargate/shared/signals'
import { GATEWAY_DEFAULTS, GATEWAY_LIMITS } from './defaults.ts'
import { FailureHistory } from './failure-history.ts'
import { type Purpose, type TierLink, type TierTransport, tierName } from './tiers/tier.ts'

export type AttemptInit = MessageInitShape<typeof AttemptSchema>
export type CallResponseInit = MessageInitShape<typeof CallResponseSchema>

/** The router's settings (defaults in GATEWAY_DEFAULTS). */
export interface RouterOptions {
  selfPeerId: string
  attemptTimeoutMs: number
  maxRetries: number
  backoffFactor: number
  backoffBaseMs: number
  backoffJitter: number
  tierStaggerMs: number
  tierCooldownMs: number
  /** (peer, tier) failures remembered for the cool-down at most; default GATEWAY_DEFAULTS.tierHistoryMaxEntries. */
  tierHistoryMaxEntries?: number
  log: Logger
  clock?: Clock
  /** Source of jitter in [0, 1); Math.random by default. */
  random?: () => number
}

/** What the router reports outcomes to (per-peer metrics). */
export interface RouterMetrics {
  record(peerId: string, outcome: { ok: boolean; tier: Tier; latencyMs: number }): void
}

/** What an observer sees of a plan: enough to name the exchange (the object identifies it). */
export type RouteObserverPlan = Pick<RoutePlan, 'peerId' | 'method' | 'requestId' | 'purpose'>

/** Observes routed exchanges and their attempts (telemetry hooks in here); `plan` identifies the exchange. */
export interface RouterObserver {
  attempt?(peerId: string, attempt: AttemptInit, plan: RouteObserverPlan): void
  call?(peerId: string, ok: boolean, tier: Tier, durationMs: number, code: Code | undefined, plan: RouteObserverPlan): void
}

/** How one exchange with a peer is routed: target, retry policy, tiers, deadline. */
export interface RoutePlan {
  peerId: string
  /** A unary Call or a tunnelled stream: tiers that cannot carry it are skipped with their reason. */
  purpose: Purpose
  /** What is called (a Call method or a tunnelled /package.Service/Method), for telemetry and logs. */
  method: string
  /** The idempotency key the exchange travels under. */
  requestId: string
  maxRetries: number
  backoffFactor: number
  backoffBaseMs: number
  attemptTimeoutMs: number
  /** Tiers that may be tried; empty means all. */
  allowedTiers: Tier[]
  /** The instant the exchange must be over by (Infinity: none, as for a gRPC call without a deadline). */
  deadlineAtMs: number
}

/** A resolved Call request: its route plus what is sent. */
export interface CallPlan extends RoutePlan {
  payload: CallRequest['payload']
}

/** One exchange over an established link; the router picks the link, retries and records attempts. */
export interface Exchange<T> {
  /**
   * Runs the exchange on a link. A transport failure (StargateError with a transport code) means nothing
   * took effect and the router may try another tier or round; mark it with `final()` when it must not be
   * tried again (something may have reached the peer). Any other error ends the exchange as is.
   */
  run(link: TierLink, ctx: ExchangeContext): Promise<T>
  /** The remote error status a result carries (recorded as REMOTE_ERROR, never retried), if any. */
  remoteError?(result: T): { code: Code; message: string } | undefined
}

/** What an exchange knows about the attempt it runs in. */
export interface ExchangeContext {
  tier: Tier
  /** Ends with the exchange (deadline or caller cancellation). */
  signal: AbortSignal
  deadlineAtMs: number
}

/** The outcome of a routed exchange. */
export interface Routed<T> {
  result: T
  tier: Tier
  attempts: AttemptInit[]
}

const FINAL = Symbol('stargate.final')

/** Marks a transport failure as not retryable: the exchange may have reached the peer. */
export function final(err: StargateError): StargateError {
  ;(err as unknown as Record<symbol, boolean>)[FINAL] = true
  return err
}

/** True for a failure marked with `final()`. */
export function isFinal(err: StargateError): boolean {
  return (err as unknown as Record<symbol, boolean>)[FINAL] === true
}

interface Won {
  transport: TierTransport
  link: TierLink
  startedAtMs: number
}

/**
 * Routes exchanges with a peer through the tiers: direct → relay → NATS, racing each next tier when the
 * current one has not connected after a stagger, remembering per peer which tier failed (cool-down with
 * background probes), and retrying the whole chain with exponential backoff on transport failures only.
 * A call to this gateway itself goes through the loopback tier, with the same timeouts, records and hooks.
 */
export class Router {
  private readonly o: RouterOptions
  private readonly clock: Clock
  private readonly random: () => number
  private readonly tiers: TierTransport[]
  private readonly loopback: TierTransport
  private readonly metrics: RouterMetrics
  private readonly observer: RouterObserver
  /** When a tier last failed toward a peer, within the cool-down (bounded: any peer id a client names lands here). */
  private readonly failures: FailureHistory
  private readonly probing = new Set<string>()

  constructor(
    options: RouterOptions,
    parts: { tiers: TierTransport[]; loopback: TierTransport; metrics: RouterMetrics; observer?: RouterObserver },
  ) {
    this.o = options
    this.clock = options.clock ?? systemClock
    this.failures = new FailureHistory({
      cooldownMs: options.tierCooldownMs,
      maxEntries: options.tierHistoryMaxEntries ?? GATEWAY_DEFAULTS.tierHistoryMaxEntries,
      clock: this.clock,
    })
    this.random = options.random ?? Math.random
    this.tiers = parts.tiers
    this.loopback = parts.loopback
    this.metrics = parts.metrics
    this.observer = parts.observer ?? {}
  }

  /** Resolves a Call request against the defaults. Throws INVALID_ARGUMENT on bad options. */
  plan(req: CallRequest, timeoutMs: number): CallPlan {
    const opts = req.options
    const { maxRetries, backoffFactor } = GATEWAY_LIMITS
    if (opts?.backoffFactor != null && !(opts.backoffFactor >= backoffFactor.min && opts.backoffFactor <= backoffFactor.max)) {
      throw new StargateError(
        Code.InvalidArgument,
        `options.backoff_factor must be between ${backoffFactor.min} and ${backoffFactor.max}, got ${opts.backoffFactor}`,
      )
    }
    if (opts?.maxRetries != null && opts.maxRetries > maxRetries.max) {
      throw new StargateError(Code.InvalidArgument, `options.max_retries must be at most ${maxRetries.max}, got ${opts.maxRetries}`)
    }
    const allowed = (opts?.allowedTiers ?? []).filter((t) => t !== Tier.UNSPECIFIED)
    for (const t of allowed) {
      if (t !== Tier.DIRECT && t !== Tier.RELAY && t !== Tier.NATS) {
        throw new StargateError(Code.InvalidArgument, `options.allowed_tiers has unknown tier ${t}`)
      }
    }
    return {
      peerId: req.peerId,
      purpose: 'call',
      method: req.method,
      payload: req.payload,
      requestId: req.idempotencyKey !== '' ? req.idempotencyKey : randomUUID(),
      maxRetries: opts?.maxRetries ?? this.o.maxRetries,
      backoffFactor: opts?.backoffFactor ?? this.o.backoffFactor,
      backoffBaseMs: opts?.backoffBase != null ? durationToMs(opts.backoffBase) : this.o.backoffBaseMs,
      attemptTimeoutMs: opts?.attemptTimeout != null ? Math.max(1, durationToMs(opts.attemptTimeout)) : this.o.attemptTimeoutMs,
      allowedTiers: allowed,
      deadlineAtMs: this.clock.nowMs() + timeoutMs,
    }
  }

  /**
   * A route plan with the gateway's defaults, for exchanges that are not Call requests (tunnelled streams).
   * deadlineAtMs (an instant on the router's clock) may be Infinity (no deadline).
   */
  defaultPlan(peerId: string, purpose: Purpose, method: string, requestId: string, deadlineAtMs: number): RoutePlan {
    return {
      peerId,
      purpose,
      method,
      requestId,
      maxRetries: this.o.maxRetries,
      backoffFactor: this.o.backoffFactor,
      backoffBaseMs: this.o.backoffBaseMs,
      attemptTimeoutMs: this.o.attemptTimeoutMs,
      allowedTiers: [],
      deadlineAtMs,
    }
  }

  /**
   * Runs a unary Call: the request travels in the envelope; the remote answer (or its error status, never
   * retried) comes back. Rejects with a StargateError (remote status, UNAVAILABLE or DEADLINE_EXCEEDED).
   */
  async call(plan: CallPlan, signal: AbortSignal, traceContext: Record<string, string> = {}): Promise<CallResponseInit> {
    const routed = await this.run<PeerResponse>(
      plan,
      {
        run: (link, ctx) =>
          link.send(
            {
              requestId: plan.requestId,
              method: plan.method,
              payload: plan.payload,
              timeout: durationOfMs(Math.max(1, ctx.deadlineAtMs - this.clock.nowMs())),
              traceContext,
              callerPeerId: this.o.selfPeerId,
              tier: ctx.tier,
            },
            ctx.signal,
          ),
        remoteError: (res) =>
          res.result.case === 'error' ? { code: res.result.value.code as Code, message: res.result.value.message } : undefined,
      },
      signal,
    )
    const res = routed.result
    if (res.result.case === 'error') throw new StargateError(res.result.value.code as Code, res.result.value.message, { cause: 'remote' })
    return {
      payload: res.result.case === 'data' || res.result.case === 'json' ? res.result : { case: undefined },
      tier: routed.tier,
      attempts: routed.attempts,
      requestId: plan.requestId,
    }
  }

  /** Runs an exchange over the first tier that connects, with the plan's retries, within its deadline. */
  async run<T>(plan: RoutePlan, exchange: Exchange<T>, signal: AbortSignal): Promise<Routed<T>> {
    const startedAtMs = this.clock.nowMs()
    const attempts: AttemptInit[] = []
    const lastReason = new Map<Tier, string>()
    const exchangeDeadline = deadline(plan.deadlineAtMs - startedAtMs, signal, this.clock)
    const exchangeSignal = exchangeDeadline.signal
    let finalTier = Tier.UNSPECIFIED
    const record = (a: AttemptInit): void => {
      attempts.push(a)
      this.observer.attempt?.(plan.peerId, a, plan)
      if (a.outcome === AttemptOutcome.FAILED || a.outcome === AttemptOutcome.SKIPPED) lastReason.set(a.tier!, a.reason ?? '')
    }
    try {
      for (let round = 0; ; round++) {
        const won = await this.round(plan, round, exchange, record, exchangeSignal)
        if (won != null) {
          finalTier = won.tier
          const remote = exchange.remoteError?.(won.result)
          const latencyMs = this.clock.nowMs() - startedAtMs
          this.metrics.record(plan.peerId, { ok: remote == null, tier: won.tier, latencyMs })
          this.observer.call?.(plan.peerId, remote == null, won.tier, latencyMs, remote?.code, plan)
          return { result: won.result, tier: won.tier, attempts }
        }
        if (exchangeSignal.aborted || round >= plan.maxRetries) break
        const delayMs = plan.backoffBaseMs * plan.backoffFactor ** round * (1 + this.random() * this.o.backoffJitter)
        if (this.clock.nowMs() + delayMs >= plan.deadlineAtMs) break
        this.o.log.info('retrying call', { peerId: plan.peerId, method: plan.method, round: round + 1, delayMs: Math.round(delayMs) })
        await sleep(delayMs, exchangeSignal, this.clock)
      }
      throw this.exhausted(plan, lastReason, signal, exchangeSignal)
    } catch (err: unknown) {
      const e = StargateError.from(err)
      const latencyMs = this.clock.nowMs() - startedAtMs
      this.metrics.record(plan.peerId, { ok: false, tier: finalTier, latencyMs })
      this.observer.call?.(plan.peerId, false, finalTier, latencyMs, e.code, plan)
      throw e
    } finally {
      exchangeDeadline.dispose()
    }
  }

  /** The tiers an exchange with peerId may use, in order. */
  private tiersFor(plan: Pick<RoutePlan, 'peerId' | 'allowedTiers'>): TierTransport[] {
    if (plan.peerId === this.o.selfPeerId) return [this.loopback]
    return this.tiers.filter((t) => plan.allowedTiers.length === 0 || plan.allowedTiers.includes(t.tier))
  }

  /** One pass through the tiers. Resolves with the exchange's result, or undefined when every tier failed. */
  private async round<T>(
    plan: RoutePlan,
    round: number,
    exchange: Exchange<T>,
    record: (a: AttemptInit) => void,
    signal: AbortSignal,
  ): Promise<{ result: T; tier: Tier } | undefined> {
    const candidates: TierTransport[] = []
    const cooled: Array<{ t: TierTransport; failedAtMs: number }> = []
    for (const t of this.tiersFor(plan)) {
      const reason = await t.unavailableReason(plan.peerId, plan.purpose)
      if (reason != null) {
        record({ tier: t.tier, round, outcome: AttemptOutcome.SKIPPED, reason, duration: durationOfMs(0) })
        continue
      }
      const failedAtMs = round === 0 ? this.failures.failedAtMs(plan.peerId, t.tier) : undefined
      if (failedAtMs != null) cooled.push({ t, failedAtMs })
      else candidates.push(t)
    }
    // Skip cooled-down tiers only when something else can be tried; probe them in the background.
    if (candidates.length === 0) candidates.push(...cooled.map((c) => c.t))
    else {
      for (const { t, failedAtMs } of cooled) {
        const sinceMs = this.clock.nowMs() - failedAtMs
        record({
          tier: t.tier,
          round,
          outcome: AttemptOutcome.SKIPPED,
          reason: `${tierName(t.tier)} failed toward this peer ${Math.round(sinceMs / 1000)} s ago; cooling down (probing in the background)`,
          duration: durationOfMs(0),
        })
        this.probe(plan, t)
      }
    }
    let remaining = candidates
    // Tiers whose pooled link failed in this round and that got their one fresh connect.
    const refreshed = new Set<Tier>()
    while (remaining.length > 0 && !signal.aborted) {
      const won = await this.race(plan, round, remaining, record, signal)
      if (won == null) return undefined
      remaining = remaining.filter((t) => t !== won.transport && !won.failed.includes(t))
      const tier = won.transport.tier
      const duration = (): Duration => durationOfMs(this.clock.nowMs() - won.startedAtMs)
      try {
        const result = await exchange.run(won.link, { tier, signal, deadlineAtMs: plan.deadlineAtMs })
        const remote = exchange.remoteError?.(result)
        record({
          tier,
          round,
          outcome: remote != null ? AttemptOutcome.REMOTE_ERROR : AttemptOutcome.SUCCESS,
          reason: remote?.message ?? '',
          duration: duration(),
          via: won.link.via,
        })
        this.failures.succeeded(plan.peerId, tier)
        return { result, tier }
      } catch (err: unknown) {
        const e = StargateError.from(err, Code.Unavailable)
        record({
          tier,
          round,
          outcome: signal.aborted ? AttemptOutcome.CANCELLED : AttemptOutcome.FAILED,
          reason: e.rawMessage,
          duration: duration(),
          via: won.link.via,
        })
        if (signal.aborted) return undefined
        if (!isTransportFailure(e) || isFinal(e)) throw e
        this.failures.failed(plan.peerId, tier)
        // A pooled link that died (its far side went silent) says nothing of a fresh connection on the same
        // tier (another relay, a new dial): connect once more at once instead of waiting for the next round.
        // The request may have reached the peer; its request id makes the peer answer a resend from memory.
        if (won.link.reused === true && !refreshed.has(tier)) {
          refreshed.add(tier)
          remaining = [won.transport, ...remaining]
        }
      }
    }
    return undefined
  }

  /**
   * Connects on the candidates in order, starting the next one when the current one fails or has not
   * connected after the stagger. The first to connect wins; the others are cancelled for this exchange.
   */
  private race(
    plan: RoutePlan,
    round: number,
    candidates: TierTransport[],
    record: (a: AttemptInit) => void,
    signal: AbortSignal,
  ): Promise<(Won & { failed: TierTransport[] }) | undefined> {
    return new Promise((resolve) => {
      const launched = new Map<TierTransport, { ctl: AbortController; startedAtMs: number }>()
      const failed: TierTransport[] = []
      let next = 0
      let settled = false
      let stagger: Timer | undefined
      const finish = (won: Won | undefined): void => {
        if (settled) return
        settled = true
        stagger?.clear()
        signal.removeEventListener('abort', onAbort)
        for (const [t, { ctl, startedAtMs }] of launched) {
          if (t === won?.transport || failed.includes(t)) continue
          // A loser still connecting is left to finish (within its attempt timeout) so its connection is
          // pooled and the next exchange can use the better tier; it is only abandoned for this one.
          if (won == null) ctl.abort(new StargateError(Code.Canceled, 'call ended'))
          record({
            tier: t.tier,
            round,
            outcome: AttemptOutcome.CANCELLED,
            reason: won != null ? `cancelled: ${tierName(won.transport.tier)} connected first` : 'cancelled: call ended',
            duration: durationOfMs(this.clock.nowMs() - startedAtMs),
          })
        }
        resolve(won == null ? undefined : { ...won, failed })
      }
      const onAbort = (): void => finish(undefined)
      signal.addEventListener('abort', onAbort, { once: true })
      const launch = (): void => {
        if (settled || next >= candidates.length) return
        const t = candidates[next++]!
        const ctl = new AbortController()
        const startedAtMs = this.clock.nowMs()
        launched.set(t, { ctl, startedAtMs })
        const timeoutMs = Math.max(1, Math.min(plan.attemptTimeoutMs, plan.deadlineAtMs - startedAtMs))
        // Not linked to the exchange signal: an exchange that ends before a winner aborts every attempt through
        // ctl (finish), while a loser still connecting after a winner goes on so its connection is pooled.
        const attempt = deadline(timeoutMs, ctl.signal, this.clock)
        stagger?.clear()
        if (next < candidates.length) stagger = this.clock.setTimeout(launch, this.o.tierStaggerMs)
        t.connect(plan.peerId, attempt.signal).then(
          (link) => {
            attempt.dispose()
            if (!settled) finish({ transport: t, link, startedAtMs })
          },
          (err: unknown) => {
            attempt.dispose()
            if (settled) return
            const e = attempt.timedOut
              ? new StargateError(Code.DeadlineExceeded, `could not connect within ${timeoutMs} ms`)
              : StargateError.from(err, Code.Unavailable)
            failed.push(t)
            record({
              tier: t.tier,
              round,
              outcome: AttemptOutcome.FAILED,
              reason: e.rawMessage,
              duration: durationOfMs(this.clock.nowMs() - startedAtMs),
            })
            this.failures.failed(plan.peerId, t.tier)
            if (failed.length === candidates.length) finish(undefined)
            else if (launched.size === failed.length) launch()
          },
        )
      }
      launch()
    })
  }

  /** True when some tier failed toward the peer within the cool-down (it is being probed). */
  failing(peerId: string): boolean {
    return this.tiersFor({ peerId, allowedTiers: [] }).some((t) => this.failures.failedAtMs(peerId, t.tier) != null)
  }

  /** Connects on a cooled-down tier in the background; success ends the cool-down. */
  private probe(plan: RoutePlan, t: TierTransport): void {
    const key = `${plan.peerId}/${t.tier}`
    if (this.probing.has(key)) return
    this.probing.add(key)
    const attempt = deadline(plan.attemptTimeoutMs, undefined, this.clock)
    t.connect(plan.peerId, attempt.signal)
      .then(
        () => {
          this.failures.succeeded(plan.peerId, t.tier)
          this.o.log.info('tier recovered toward peer', { peerId: plan.peerId, tier: tierName(t.tier) })
        },
        () => {},
      )
      .finally(() => {
        attempt.dispose()
        this.probing.delete(key)
      })
  }

  private exhausted(plan: RoutePlan, reasons: Map<Tier, string>, caller: AbortSignal, exchange: AbortSignal): StargateError {
    const detail = [...reasons.entries()]
      .sort(([a], [b]) => a - b)
      .map(([t, r]) => `${tierName(t)}: ${r}`)
      .join('; ')
    if (caller.aborted) return new StargateError(Code.Canceled, `call to ${plan.peerId} was cancelled`)
    if (exchange.aborted) {
      return new StargateError(Code.DeadlineExceeded, `deadline exceeded calling ${plan.peerId} (${detail || 'no tier answered'})`)
    }
    return new StargateError(Code.Unavailable, `peer ${plan.peerId} is unreachable on every tier: ${detail || 'no tier applies'}`)
  }
}
