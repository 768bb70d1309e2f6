import { randomUUID } from 'node:crypto'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerRequest } from '@stargate/shared/gen/envelope'
import type { ServeRequest, ServeResponseSchema, Tier } from '@stargate/shared/gen/gateway'
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

/** One open Serve stream: the methods it handles and the calls delivered to it. */
export class ServeSession {
  readonly id = randomUUID()
  readonly methods = new Set<string>()
  readonly capabilities = new Set<string>()
  private readonly queue: Outgoing[] = []
  private wake?: () => void
  private closed = false
  private readonly pending = new Map<string, PendingCall>()

  /** Calls waiting for this client's answer. */
  get inflight(): number {
    return this.pending.size
  }

  push(msg: Outgoing): void {
    if (this.closed) return
    this.queue.push(msg)
    this.wake?.()
  }

  /** The messages to send to the client, until the session closes. */
  async *outgoing(signal: AbortSignal): AsyncGenerator<Outgoing> {
    const onAbort = (): void => this.close()
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      for (;;) {
        const next = this.queue.shift()
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
   * the W3C trace context handed to the client (InboundCall.trace_context).
   */
  deliver(req: PeerRequest, meta: DeliveryMeta, signal: AbortSignal): Promise<HandlerResult> {
    if (this.closed) return Promise.reject(new StargateError(Code.Unavailable, 'serving client went away'))
    const callId = randomUUID()
    return new Promise<HandlerResult>((resolve, reject) => {
      const timer = setTimeout(
        () => finish(new StargateError(Code.DeadlineExceeded, `serving client did not answer ${req.method} before the deadline`)),
        Math.max(0, meta.deadlineAtMs - Date.now()),
      )
      timer.unref()
      const onAbort = (): void => finish(StargateError.from(signal.reason, Code.Canceled))
      const finish = (err?: StargateError, result?: HandlerResult): void => {
        if (!this.pending.delete(callId)) return
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        if (err != null) reject(err)
        else resolve(result!)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.pending.set(callId, { resolve: (r) => finish(undefined, r), reject: (e) => finish(e) })
      this.push({
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
      })
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
    this.wake?.()
  }
}

/** Which Serve sessions handle which methods; several sessions for one method share the load. */
export class ServeRegistry {
  private readonly sessions = new Set<ServeSession>()
  private readonly cursor = new Map<string, number>()
  private readonly log: Logger
  private readonly onChange: () => void

  constructor(log: Logger, onChange: () => void = () => {}) {
    this.log = log
    this.onChange = onChange
  }

  add(session: ServeSession): void {
    this.sessions.add(session)
    this.onChange()
  }

  remove(session: ServeSession): void {
    if (this.sessions.delete(session)) {
      this.log.info('serve stream ended', { session: session.id, methods: [...session.methods] })
      this.onChange()
    }
  }

  changed(): void {
    this.onChange()
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

  closeAll(): void {
    for (const s of this.sessions) s.close()
  }
}
