import { randomUUID } from 'node:crypto'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { durationFromMs, durationMs } from '@bufbuild/protobuf/wkt'
import { Code, isTransportFailure, StargateError } from '@stargate/shared/errors'
import type { PeerResponse } from '@stargate/shared/gen/envelope'
import { AttemptOutcome, type AttemptSchema, type CallRequest, type CallResponseSchema, Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { deadline } from '@stargate/shared/signals'
import type { PeerMetricsTable } from './metrics.ts'
import type { PeerRequestInit, TierLink, TierTransport } from './tiers/tier.ts'

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
  log: Logger
}

/** Observes calls and attempts (telemetry hooks in here); `plan` identifies the call an attempt belongs to. */
export interface RouterObserver {
  attempt?(peerId: string, attempt: AttemptInit, plan: CallPlan): void
  call?(peerId: string, ok: boolean, tier: Tier, durationMs: number, code: Code | undefined, plan: CallPlan): void
}

/** The per-call parts of a Call request, resolved. */
export interface CallPlan {
  peerId: string
  method: string
  payload: CallRequest['payload']
  requestId: string
  maxRetries: number
  backoffFactor: number
  backoffBaseMs: number
  attemptTimeoutMs: number
  allowedTiers: Tier[]
  deadlineMs: number
  traceContext: Record<string, string>
}

const TIER_NAMES: Record<number, string> = { [Tier.DIRECT]: 'direct', [Tier.RELAY]: 'relay', [Tier.NATS]: 'nats' }

export function tierName(t: Tier): string {
  return TIER_NAMES[t] ?? 'unspecified'
}

interface Won {
  transport: TierTransport
  link: TierLink
  startedMs: number
}

/**
 * Routes one call through the tiers: direct → relay → NATS, racing each next tier when the current one
 * has not connected after a stagger, remembering per peer which tier failed (cool-down with background
 * probes), and retrying the whole chain with exponential backoff on transport failures only.
 */
export class Router {
  private readonly o: RouterOptions
  private readonly tiers: TierTransport[]
  private readonly metrics: PeerMetricsTable
  private readonly observer: RouterObserver
  /** peerId → tier → time of the last transport failure. */
  private readonly failedAt = new Map<string, Map<Tier, number>>()
  private readonly probing = new Set<string>()

  constructor(options: RouterOptions, tiers: TierTransport[], metrics: PeerMetricsTable, observer: RouterObserver = {}) {
    this.o = options
    this.tiers = tiers
    this.metrics = metrics
    this.observer = observer
  }

  /** Resolves a Call request against the defaults. Throws INVALID_ARGUMENT on bad options. */
  plan(req: CallRequest, timeoutMs: number, traceContext: Record<string, string> = {}): CallPlan {
    const opts = req.options
    const backoffFactor = opts?.backoffFactor ?? 0
    if (opts?.backoffFactor != null && !(backoffFactor >= 1 && backoffFactor <= 100)) {
      throw new StargateError(Code.InvalidArgument, `options.backoff_factor must be between 1 and 100, got ${backoffFactor}`)
    }
    if (opts?.maxRetries != null && opts.maxRetries > 100) {
      throw new StargateError(Code.InvalidArgument, `options.max_retries must be at most 100, got ${opts.maxRetries}`)
    }
    const allowed = (opts?.allowedTiers ?? []).filter((t) => t !== Tier.UNSPECIFIED)
    for (const t of allowed) {
      if (TIER_NAMES[t] == null) throw new StargateError(Code.InvalidArgument, `options.allowed_tiers has unknown tier ${t}`)
    }
    return {
      peerId: req.peerId,
      method: req.method,
      payload: req.payload,
      requestId: req.idempotencyKey !== '' ? req.idempotencyKey : randomUUID(),
      maxRetries: opts?.maxRetries ?? this.o.maxRetries,
      backoffFactor: opts?.backoffFactor ?? this.o.backoffFactor,
      backoffBaseMs: opts?.backoffBase != null ? durationMs(opts.backoffBase) : this.o.backoffBaseMs,
      attemptTimeoutMs: opts?.attemptTimeout != null ? Math.max(1, durationMs(opts.attemptTimeout)) : this.o.attemptTimeoutMs,
      allowedTiers: allowed,
      deadlineMs: Date.now() + timeoutMs,
      traceContext,
    }
  }

  /** Runs a call to completion; rejects with a StargateError (remote status, UNAVAILABLE or DEADLINE_EXCEEDED). */
  async call(plan: CallPlan, signal: AbortSignal): Promise<CallResponseInit> {
    const started = Date.now()
    const attempts: AttemptInit[] = []
    const lastReason = new Map<Tier, string>()
    const callDeadline = deadline(plan.deadlineMs - started, signal)
    const callSignal = callDeadline.signal
    let finalTier = Tier.UNSPECIFIED
    try {
      for (let round = 0; ; round++) {
        const outcome = await this.round(plan, round, attempts, lastReason, callSignal)
        if (outcome.response != null) {
          finalTier = outcome.tier
          const res = outcome.response
          if (res.result.case === 'error') {
            const status = res.result.value
            throw new StargateError(status.code as Code, status.message, { cause: 'remote' })
          }
          this.metrics.record(plan.peerId, { ok: true, tier: outcome.tier, latencyMs: Date.now() - started })
          this.observer.call?.(plan.peerId, true, outcome.tier, Date.now() - started, undefined, plan)
          return {
            payload: res.result.case === 'data' || res.result.case === 'json' ? res.result : { case: undefined },
            tier: outcome.tier,
            attempts,
            requestId: plan.requestId,
          }
        }
        if (callSignal.aborted) break
        if (round >= plan.maxRetries) break
        const delay = plan.backoffBaseMs * plan.backoffFactor ** round * (1 + this.jitter())
        if (Date.now() + delay >= plan.deadlineMs) break
        this.o.log.info('retrying call', { peerId: plan.peerId, round: round + 1, delayMs: Math.round(delay) })
        await sleep(delay, callSignal)
      }
      throw this.exhausted(plan, lastReason, signal, callSignal)
    } catch (err: unknown) {
      const e = StargateError.from(err)
      this.metrics.record(plan.peerId, { ok: false, tier: finalTier, latencyMs: Date.now() - started })
      this.observer.call?.(plan.peerId, false, finalTier, Date.now() - started, e.code, plan)
      throw e
    } finally {
      callDeadline.dispose()
    }
  }

  /** One pass through the tiers. Resolves with a response (success or remote error) or none (all failed). */
  private async round(
    plan: CallPlan,
    round: number,
    attempts: AttemptInit[],
    lastReason: Map<Tier, string>,
    signal: AbortSignal,
  ): Promise<{ response?: PeerResponse; tier: Tier }> {
    const record = (a: AttemptInit): void => {
      attempts.push(a)
      this.observer.attempt?.(plan.peerId, a, plan)
      if (a.outcome === AttemptOutcome.FAILED || a.outcome === AttemptOutcome.SKIPPED) lastReason.set(a.tier!, a.reason ?? '')
    }
    const candidates: TierTransport[] = []
    const cooled: TierTransport[] = []
    for (const t of this.tiers) {
      if (plan.allowedTiers.length > 0 && !plan.allowedTiers.includes(t.tier)) continue
      const reason = await t.unavailableReason(plan.peerId)
      if (reason != null) {
        record({ tier: t.tier, round, outcome: AttemptOutcome.SKIPPED, reason, duration: durationFromMs(0) })
        continue
      }
      if (round === 0 && this.coolingDown(plan.peerId, t.tier)) cooled.push(t)
      else candidates.push(t)
    }
    // Skip cooled-down tiers only when something else can be tried; probe them in the background.
    if (candidates.length === 0) candidates.push(...cooled)
    else {
      for (const t of cooled) {
        const since = Date.now() - (this.failedAt.get(plan.peerId)?.get(t.tier) ?? 0)
        record({
          tier: t.tier,
          round,
          outcome: AttemptOutcome.SKIPPED,
          reason: `${tierName(t.tier)} failed toward this peer ${Math.round(since / 1000)} s ago; cooling down (probing in the background)`,
          duration: durationFromMs(0),
        })
        this.probe(plan, t)
      }
    }
    candidates.sort((a, b) => this.tiers.indexOf(a) - this.tiers.indexOf(b))
    let remaining = candidates
    while (remaining.length > 0 && !signal.aborted) {
      const won = await this.race(plan, round, remaining, record, signal)
      if (won == null) return { tier: Tier.UNSPECIFIED }
      remaining = remaining.filter((t) => t !== won.transport && !won.failed.includes(t))
      const req: PeerRequestInit = {
        requestId: plan.requestId,
        method: plan.method,
        payload: plan.payload,
        timeout: durationFromMs(Math.max(1, plan.deadlineMs - Date.now())),
        traceContext: plan.traceContext,
        callerPeerId: this.o.selfPeerId,
        tier: won.transport.tier,
      }
      try {
        const response = await won.link.send(req, signal)
        const outcome = response.result.case === 'error' ? AttemptOutcome.REMOTE_ERROR : AttemptOutcome.SUCCESS
        record({
          tier: won.transport.tier,
          round,
          outcome,
          reason: response.result.case === 'error' ? response.result.value.message : '',
          duration: durationFromMs(Date.now() - won.startedMs),
          via: won.link.via,
        })
        this.failedAt.get(plan.peerId)?.delete(won.transport.tier)
        return { response, tier: won.transport.tier }
      } catch (err: unknown) {
        const e = StargateError.from(err, Code.Unavailable)
        record({
          tier: won.transport.tier,
          round,
          outcome: signal.aborted ? AttemptOutcome.CANCELLED : AttemptOutcome.FAILED,
          reason: e.rawMessage,
          duration: durationFromMs(Date.now() - won.startedMs),
          via: won.link.via,
        })
        if (!isTransportFailure(e) && !signal.aborted) throw e
        this.markFailed(plan.peerId, won.transport.tier)
      }
    }
    return { tier: Tier.UNSPECIFIED }
  }

  /**
   * Connects on the candidates in order, starting the next one when the current one fails or has not
   * connected after the stagger. The first to connect wins; the others are cancelled.
   */
  private race(
    plan: CallPlan,
    round: number,
    candidates: TierTransport[],
    record: (a: AttemptInit) => void,
    signal: AbortSignal,
  ): Promise<(Won & { failed: TierTransport[] }) | undefined> {
    return new Promise((resolve) => {
      const controllers = new Map<TierTransport, { ctl: AbortController; startedMs: number }>()
      const failed: TierTransport[] = []
      let next = 0
      let settled = false
      let stagger: NodeJS.Timeout | undefined
      const finish = (won: Won | undefined): void => {
        if (settled) return
        settled = true
        clearTimeout(stagger)
        signal.removeEventListener('abort', onAbort)
        for (const [t, { ctl, startedMs }] of controllers) {
          if (t === won?.transport || failed.includes(t)) continue
          // A loser still connecting is left to finish (within its attempt timeout) so its connection is
          // pooled and the next call can use the better tier; it is only abandoned for this call.
          if (won == null) ctl.abort(new StargateError(Code.Canceled, 'call ended'))
          record({
            tier: t.tier,
            round,
            outcome: AttemptOutcome.CANCELLED,
            reason: won != null ? `cancelled: ${tierName(won.transport.tier)} connected first` : 'cancelled: call ended',
            duration: durationFromMs(Date.now() - startedMs),
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
        const startedMs = Date.now()
        controllers.set(t, { ctl, startedMs })
        const timeoutMs = Math.max(1, Math.min(plan.attemptTimeoutMs, plan.deadlineMs - startedMs))
        // Not linked to the call signal: a call that ends before a winner aborts every attempt through ctl
        // (finish), while a loser still connecting after a winner keeps going so its connection is pooled.
        const attempt = deadline(timeoutMs, ctl.signal)
        clearTimeout(stagger)
        if (next < candidates.length) {
          stagger = setTimeout(launch, this.o.tierStaggerMs)
          stagger.unref()
        }
        t.connect(plan.peerId, attempt.signal).then(
          (link) => {
            attempt.dispose()
            if (settled) return
            finish({ transport: t, link, startedMs })
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
              duration: durationFromMs(Date.now() - startedMs),
            })
            this.markFailed(plan.peerId, t.tier)
            if (failed.length === candidates.length) finish(undefined)
            else if (controllers.size === failed.length) launch()
          },
        )
      }
      launch()
    })
  }

  private coolingDown(peerId: string, tier: Tier): boolean {
    const at = this.failedAt.get(peerId)?.get(tier)
    return at != null && Date.now() - at < this.o.tierCooldownMs
  }

  private markFailed(peerId: string, tier: Tier): void {
    let m = this.failedAt.get(peerId)
    if (m == null) {
      m = new Map()
      this.failedAt.set(peerId, m)
    }
    m.set(tier, Date.now())
  }

  /** Tries to connect on a cooled-down tier in the background; success ends the cool-down. */
  private probe(plan: CallPlan, t: TierTransport): void {
    const key = `${plan.peerId}/${t.tier}`
    if (this.probing.has(key)) return
    this.probing.add(key)
    t.connect(plan.peerId, AbortSignal.timeout(plan.attemptTimeoutMs))
      .then(
        () => {
          this.failedAt.get(plan.peerId)?.delete(t.tier)
          this.o.log.info('tier recovered toward peer', { peerId: plan.peerId, tier: tierName(t.tier) })
        },
        () => {},
      )
      .finally(() => this.probing.delete(key))
  }

  private jitter(): number {
    return Math.random() * this.o.backoffJitter
  }

  private exhausted(plan: CallPlan, reasons: Map<Tier, string>, caller: AbortSignal, call: AbortSignal): StargateError {
    const detail = [...reasons.entries()]
      .sort(([a], [b]) => a - b)
      .map(([t, r]) => `${tierName(t)}: ${r}`)
      .join('; ')
    if (caller.aborted) return new StargateError(Code.Canceled, `call to ${plan.peerId} was cancelled`)
    if (call.aborted) {
      return new StargateError(Code.DeadlineExceeded, `deadline exceeded calling ${plan.peerId} (${detail || 'no tier answered'})`)
    }
    return new StargateError(Code.Unavailable, `peer ${plan.peerId} is unreachable on every tier: ${detail || 'no tier applies'}`)
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    function done(): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}
