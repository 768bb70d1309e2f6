import { randomUUID } from 'node:crypto'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { toBinary } from '@bufbuild/protobuf'
import { timestampFromMs, ValueSchema } from '@bufbuild/protobuf/wkt'
import { ANONYMOUS, type ApiPrincipal, scopeAllows, scopeText } from '@stargate/shared/auth'
import { type Clock, systemClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerRequest } from '@stargate/shared/gen/envelope'
import type { ServeRegistration, ServeRequest, ServeResponseSchema, Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'

/** The answer of a Serve client (or of the built-in handler). */
export type HandlerResult =
  | { case: 'data'; value: Uint8Array }
  | { case: 'json'; value: NonNullable<Extract<PeerRequest['payload'], { case: 'json' }>['value']> }

type Outgoing = MessageInitShape<typeof ServeResponseSchema>

/** What a Serve client is told about a call besides its request. */
export interface DeliveryMeta {
  callerPeerId: string
  tier: Tier
  deadlineAtMs: number
  /** W3C trace context (traceparent, tracestate) of the delivery, for the client to continue. */
  traceContext?: Record<string, string>
}

interface PendingCall {
  resolve: (r: HandlerResult) => void
  reject: (e: StargateError) => void
}

/** Bounds of one Serve session's queue of calls not yet written to its client. */
export interface ServeQueueLimits {
  /** Calls waiting at most; more get RESOURCE_EXHAUSTED. */
  maxQueuedCalls: number
  /** Payload bytes waiting at most (a call always fits an empty queue); more get RESOURCE_EXHAUSTED. */
  maxQueuedBytes: number
}

/** Unbounded queues: only for tests of other parts. */
const UNBOUNDED: ServeQueueLimits = { maxQueuedCalls: Number.MAX_SAFE_INTEGER, maxQueuedBytes: Number.MAX_SAFE_INTEGER }

/** A message waiting to be written to the client, and the payload bytes it holds. */
interface Queued {
  msg: Outgoing
  bytes: number
}

/** A payload's size on the wire (JSON is sent as a google.protobuf.Value): what a queued call holds. */
export function payloadBytes(payload: PeerRequest['payload']): number {
  if (payload.case === 'data') return payload.value.byteLength
  if (payload.case === 'json') return toBinary(ValueSchema, payload.value).byteLength
  return 0
}

/**
 * One open Serve stream: the methods it handles, the calls delivered to it, and who opened it (the API
 * token's principal). Calls wait in a bounded queue until the stream takes them; a call that times out or
 * is cancelled while waiting leaves the queue at once, payload included.
 */
export class ServeSession {
  readonly id = randomUUID()
  readonly methods = new Set<string>()
  readonly capabilities = new Set<string>()
  readonly principal: ApiPrincipal
  private readonly limits: ServeQueueLimits
  private readonly stats?: ServeStats
  private readonly clock: Clock
  /** In order; keyed by call id (control messages by a fresh key), so a call leaves it in O(1). */
  private readonly queue = new Map<string, Queued>()
  private queuedCallCount = 0
  private queuedByteCount = 0
  private wake?: () => void
  private closed = false
  private readonly pending = new Map<string, PendingCall>()

  constructor(principal: ApiPrincipal = ANONYMOUS, limits: ServeQueueLimits = UNBOUNDED, stats?: ServeStats, clock: Clock = systemClock) {
    this.principal = principal
    this.limits = limits
    this.stats = stats
    this.clock = clock
  }

  /** Calls waiting for this client's answer (queued or delivered). */
  get inflight(): number {
    return this.pending.size
  }

  /** Calls waiting in the queue, not yet written to the client. */
  get queuedCalls(): number {
    return this.queuedCallCount
  }

  /** Payload bytes of the calls waiting in the queue. */
  get queuedBytes(): number {
    return this.queuedByteCount
  }

  /** Queues a control message (never refused, never counted against the limits). */
  push(msg: Outgoing): void {
    if (this.closed) return
    this.queue.set(randomUUID(), { msg, bytes: 0 })
    this.wake?.()
  }

  /** The messages to send to the client, until the session closes. */
  async *outgoing(signal: AbortSignal): AsyncGenerator<Outgoing> {
    const onAbort = (): void => this.close()
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      for (;;) {
        const next = this.take()
        if (next != null) {
          yield next
          continue
        }
        if (this.closed) return
        await new Promise<void>((resolve) => {
          this.wake = resolve
        })
        this.wake = undefined
      }
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /**
   * Delivers a call and waits for the client's reply (or the deadline / cancellation). `meta.traceContext` is
   * the W3C trace context handed to the client (InboundCall.trace_context). A full queue refuses the call at
   * once with RESOURCE_EXHAUSTED.
   */
  deliver(req: PeerRequest, meta: DeliveryMeta, signal: AbortSignal): Promise<HandlerResult> {
    if (this.closed) return Promise.reject(new StargateError(Code.Unavailable, 'serving client went away'))
    const bytes = payloadBytes(req.payload)
    const full = this.refusal(bytes)
    if (full != null) {
      if (this.stats != null) this.stats.queueFull++
      return Promise.reject(new StargateError(Code.ResourceExhausted, full))
    }
    const callId = randomUUID()
    return new Promise<HandlerResult>((resolve, reject) => {
      const timer = this.clock.setTimeout(
        () => finish(new StargateError(Code.DeadlineExceeded, `serving client did not answer ${req.method} before the deadline`)),
        meta.deadlineAtMs - this.clock.nowMs(),
      )
      const onAbort = (): void => finish(StargateError.from(signal.reason, Code.Canceled))
      const finish = (err?: StargateError, result?: HandlerResult): void => {
        if (!this.pending.delete(callId)) return
        timer.clear()
        signal.removeEventListener('abort', onAbort)
        // Still waiting to be written: it leaves the queue now, and its payload with it.
        this.unqueue(callId)
        if (err != null) reject(err)
        else resolve(result!)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.pending.set(callId, { resolve: (r) => finish(undefined, r), reject: (e) => finish(e) })
      this.queue.set(callId, {
        bytes,
        msg: {
          kind: {
            case: 'call',
            value: {
              callId,
              method: req.method,
              callerPeerId: meta.callerPeerId,
              payload: req.payload,
              deadline: timestampFromMs(meta.deadlineAtMs),
              tier: meta.tier,
              requestId: req.requestId,
              traceContext: meta.traceContext ?? {},
            },
          },
        },
      })
      this.queuedCallCount++
      this.queuedByteCount += bytes
      this.wake?.()
    })
  }

  /** Handles a reply from the client. */
  reply(msg: Extract<ServeRequest['kind'], { case: 'reply' }>['value']): void {
    const p = this.pending.get(msg.callId)
    if (p == null) return
    switch (msg.result.case) {
      case 'data':
        p.resolve({ case: 'data', value: msg.result.value })
        return
      case 'json':
        p.resolve({ case: 'json', value: msg.result.value })
        return
      case 'error': {
        const code = msg.result.value.code
        const valid = code > 0 && code <= 16
        p.reject(new StargateError(valid ? (code as Code) : Code.Unknown, msg.result.value.message || `handler failed with code ${code}`))
        return
      }
      default:
        p.reject(new StargateError(Code.Internal, 'serving client replied with neither a payload nor an error'))
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (const p of this.pending.values()) p.reject(new StargateError(Code.Unavailable, 'serving client went away'))
    this.pending.clear()
    this.queue.clear()
    this.queuedCallCount = 0
    this.queuedByteCount = 0
    this.wake?.()
  }

  private refusal(bytes: number): string | undefined {
    const { maxQueuedCalls, maxQueuedBytes } = this.limits
    if (this.queuedCallCount >= maxQueuedCalls) {
      return `the serving client is not keeping up: ${this.queuedCallCount} calls already wait for it (limit --serve-queue-max-calls ${maxQueuedCalls})`
    }
    if (this.queuedCallCount > 0 && this.queuedByteCount + bytes > maxQueuedBytes) {
      return `the serving client is not keeping up: ${this.queuedByteCount} payload bytes already wait for it, ${bytes} more would pass the limit (--serve-queue-max-bytes ${maxQueuedBytes})`
    }
    return undefined
  }

  private take(): Outgoing | undefined {
    for (const [key, queued] of this.queue) {
      this.queue.delete(key)
      if (queued.msg.kind?.case === 'call') this.unqueued(queued)
      return queued.msg
    }
    return undefined
  }

  private unqueue(callId: string): void {
    const queued = this.queue.get(callId)
    if (queued == null) return
    this.queue.delete(callId)
    this.unqueued(queued)
  }

  private unqueued(queued: Queued): void {
    this.queuedCallCount--
    this.queuedByteCount -= queued.bytes
  }
}

/** Who serves a method: fixed by its first registration while any session serves it. */
interface Claim {
  /** The first registrant's principal id (undefined: anonymous, API auth off). */
  owner?: string
  /** Whether the first registration let any client join. */
  shared: boolean
  sessions: number
}

/** Refusals counted by the registry. */
export interface ServeStats {
  /** Calls refused because the chosen session's queue was full. */
  queueFull: number
}

/**
 * Which Serve sessions handle which methods. A method belongs to its first registration while any session
 * serves it: another session may join (and share the load) only with the same API token, or when that first
 * registration said `shared`. A scoped token may register only the methods its scope allows.
 */
export class ServeRegistry {
  readonly stats: ServeStats = { queueFull: 0 }
  private readonly sessions = new Set<ServeSession>()
  private readonly claims = new Map<string, Claim>()
  private readonly cursor = new Map<string, number>()
  private readonly log: Logger
  private readonly onChange: () => void
  private readonly limits: ServeQueueLimits
  private readonly clock: Clock

  /** `clock` times the calls' deadlines while they wait for a session's answer. */
  constructor(log: Logger, onChange: () => void = () => {}, limits: ServeQueueLimits = UNBOUNDED, clock: Clock = systemClock) {
    this.log = log
    this.onChange = onChange
    this.limits = limits
    this.clock = clock
  }

  /** Opens a session for a Serve stream of the principal (queues bounded by the registry's limits). */
  open(principal: ApiPrincipal = ANONYMOUS): ServeSession {
    const session = new ServeSession(principal, this.limits, this.stats, this.clock)
    this.sessions.add(session)
    return session
  }

  /**
   * Registers methods (and capabilities) on a session, all or none. Throws INVALID_ARGUMENT for an empty
   * name or the built-in ping, PERMISSION_DENIED for a method outside the token's scope, ALREADY_EXISTS for
   * a method another client serves without sharing it.
   */
  register(session: ServeSession, registration: Pick<ServeRegistration, 'methods' | 'capabilities' | 'shared'>): void {
    const principal = session.principal
    for (const m of registration.methods) {
      if (m.trim() === '' || m === 'ping') {
        throw new StargateError(Code.InvalidArgument, `cannot register method "${m}" (empty, or the built-in ping)`)
      }
      if (!scopeAllows(principal, 'serve', m)) {
        throw new StargateError(
          Code.PermissionDenied,
          `this API token may not serve "${m}": its scope is ${scopeText(principal)} (its line in --auth-token-file)`,
        )
      }
      const claim = this.claims.get(m)
      if (claim == null || session.methods.has(m) || claim.shared) continue
      if (claim.owner == null || claim.owner !== principal.id) {
        throw new StargateError(
          Code.AlreadyExists,
          `method "${m}" is already served by another Serve client, which did not register it as shared; only a client with the same API token may join it`,
        )
      }
    }
    for (const m of registration.methods) {
      if (session.methods.has(m)) continue
      session.methods.add(m)
      const claim = this.claims.get(m)
      if (claim != null) claim.sessions++
      else this.claims.set(m, { owner: principal.id, shared: registration.shared, sessions: 1 })
    }
    for (const c of registration.capabilities) session.capabilities.add(c)
    this.onChange()
  }

  remove(session: ServeSession): void {
    if (this.sessions.delete(session)) {
      for (const m of session.methods) {
        const claim = this.claims.get(m)
        if (claim != null && --claim.sessions <= 0) this.claims.delete(m)
      }
      this.log.info('serve stream ended', { session: session.id, methods: [...session.methods] })
      this.onChange()
    }
  }

  /** Picks the least-loaded session serving method (round robin among equals), if any. */
  pick(method: string): ServeSession | undefined {
    const candidates = [...this.sessions].filter((s) => s.methods.has(method))
    if (candidates.length === 0) return undefined
    const start = (this.cursor.get(method) ?? 0) % candidates.length
    this.cursor.set(method, start + 1)
    let best = candidates[start]!
    for (let i = 1; i < candidates.length; i++) {
      const c = candidates[(start + i) % candidates.length]!
      if (c.inflight < best.inflight) best = c
    }
    return best
  }

  methods(): string[] {
    const all = new Set<string>()
    for (const s of this.sessions) for (const m of s.methods) all.add(m)
    return [...all].sort()
  }

  capabilities(): string[] {
    const all = new Set<string>()
    for (const s of this.sessions) for (const c of s.capabilities) all.add(c)
    return [...all].sort()
  }

  /** Calls and payload bytes waiting in every session's queue. */
  queued(): { calls: number; bytes: number } {
    let calls = 0
    let bytes = 0
    for (const s of this.sessions) {
      calls += s.queuedCalls
      bytes += s.queuedBytes
    }
    return { calls, bytes }
  }

  closeAll(): void {
    for (const s of this.sessions) s.close()
  }
}
