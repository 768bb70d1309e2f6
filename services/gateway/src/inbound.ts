import { create, fromBinary, fromJson, type MessageInitShape, toBinary, toJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, StargateError } from '@stargate/shared/errors'
import { type PeerRequest, PeerResponseSchema } from '@stargate/shared/gen/envelope'
import type { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { RequestJournal } from './journal.ts'
import type { HandlerResult, ServeRegistry } from './serve.ts'

export type PeerResponseInit = MessageInitShape<typeof PeerResponseSchema>

/** The built-in method every gateway answers itself. */
export const PING_METHOD = 'ping'

export interface InboundOptions {
  peerId: string
  maxInboundCallsPerPeer: number
  maxPayloadBytes: number
  dedupeWindowMs: number
  dedupeMaxEntries: number
  /** File recording requests handed to handlers, so a restart never runs one twice (optional). */
  journalPath?: string
  log: Logger
}

/** Inbound request metadata: who called and on which tier. */
export interface InboundMeta {
  callerPeerId: string
  tier: Tier
}

/** Wraps inbound handling (telemetry opens spans joining the caller's trace in here). */
export interface InboundObserver {
  /** Wraps the handling of one request; must return run()'s result. */
  handle?(req: PeerRequest, meta: InboundMeta, run: () => Promise<PeerResponseInit>): Promise<PeerResponseInit>
  /** Wraps the delivery of one request to a Serve client; must return run()'s result. */
  deliver?(req: PeerRequest, run: () => Promise<HandlerResult>): Promise<HandlerResult>
}

interface Remembered {
  result: Promise<PeerResponseInit>
  expiresAt: number
}

/** Counters of inbound traffic. */
export interface InboundStats {
  handled: number
  replayed: number
  rejectedBusy: number
  malformed: number
}

/**
 * Runs calls arriving from other gateways on any tier: the duplicate-request memory, the per-peer
 * concurrency cap, the built-in ping and the Serve handlers.
 */
export class InboundDispatcher {
  readonly stats: InboundStats = { handled: 0, replayed: 0, rejectedBusy: 0, malformed: 0 }
  private readonly o: InboundOptions
  private readonly registry: ServeRegistry
  private readonly remembered = new Map<string, Remembered>()
  private readonly inflightByPeer = new Map<string, number>()
  private readonly executions = new Map<string, number>()
  private readonly observer: InboundObserver

  private readonly journal?: RequestJournal

  constructor(options: InboundOptions, registry: ServeRegistry, observer: InboundObserver = {}) {
    this.o = options
    this.registry = registry
    this.observer = observer
    if (options.journalPath != null) {
      for (const [key, entry] of RequestJournal.load(options.journalPath)) {
        const result: PeerResponseInit =
          entry.state === 'done'
            ? fromBinary(PeerResponseSchema, entry.response)
            : {
                result: {
                  case: 'error',
                  value: {
                    code: Code.Aborted,
                    message:
                      'this request was interrupted by a restart of the target gateway; it may or may not have run, so it is not run again',
                  },
                },
              }
        this.remembered.set(key, { result: Promise.resolve(result), expiresAt: entry.expiresAt })
      }
      this.journal = new RequestJournal(options.journalPath, options.log)
    }
  }

  close(): void {
    this.journal?.close()
  }

  /**
   * Answers one request. Never throws: every failure becomes an error status in the response.
   * A request id seen before (from the same caller, on any tier) is answered from memory.
   */
  handle(req: PeerRequest, meta: InboundMeta, signal: AbortSignal): Promise<PeerResponseInit> {
    const run = (): Promise<PeerResponseInit> => this.answer(req, meta, signal)
    return this.observer.handle != null ? this.observer.handle(req, meta, run) : run()
  }

  private async answer(req: PeerRequest, meta: InboundMeta, signal: AbortSignal): Promise<PeerResponseInit> {
    const base = { exchangeId: req.exchangeId, requestId: req.requestId, responderPeerId: this.o.peerId }
    const invalid = validate(req)
    if (invalid != null) {
      this.stats.malformed++
      return { ...base, result: { case: 'error', value: { code: Code.InvalidArgument, message: invalid } } }
    }
    this.sweep()
    const key = `${meta.callerPeerId}/${req.requestId}`
    const seen = this.remembered.get(key)
    if (seen != null) {
      this.stats.replayed++
      const res = await seen.result
      return { ...res, ...base, replayed: true }
    }
    const inflight = this.inflightByPeer.get(meta.callerPeerId) ?? 0
    if (inflight >= this.o.maxInboundCallsPerPeer) {
      this.stats.rejectedBusy++
      return {
        ...base,
        result: {
          case: 'error',
          value: {
            code: Code.ResourceExhausted,
            message: `peer ${meta.callerPeerId} already has ${inflight} calls in flight on ${this.o.peerId} (limit ${this.o.maxInboundCallsPerPeer})`,
          },
        },
      }
    }
    this.inflightByPeer.set(meta.callerPeerId, inflight + 1)
    const expiresAt = Date.now() + this.o.dedupeWindowMs
    const result = this.run(req, meta, signal, () => this.journal?.started(key, expiresAt)).then((res) => {
      if (this.journal != null && req.method !== PING_METHOD) {
        this.journal.done(key, expiresAt, toBinary(PeerResponseSchema, create(PeerResponseSchema, res)))
      }
      return res
    })
    result
      .finally(() => {
        const n = (this.inflightByPeer.get(meta.callerPeerId) ?? 1) - 1
        if (n <= 0) this.inflightByPeer.delete(meta.callerPeerId)
        else this.inflightByPeer.set(meta.callerPeerId, n)
      })
      .catch(() => {})
    this.remember(key, result, expiresAt)
    const res = await result
    return { ...res, ...base }
  }

  /** How many times a request id actually ran here (for tests and chaos figures). */
  executionsOf(requestId: string): number {
    return this.executions.get(requestId) ?? 0
  }

  private async run(
    req: PeerRequest,
    meta: { callerPeerId: string; tier: Tier },
    signal: AbortSignal,
    onHandedOver: () => void,
  ): Promise<PeerResponseInit> {
    this.stats.handled++
    const timeoutMs = req.timeout != null ? Number(req.timeout.seconds) * 1000 + Math.floor(req.timeout.nanos / 1e6) : 30_000
    const deadlineMs = Date.now() + timeoutMs
    try {
      const out = await this.execute(req, { ...meta, deadlineMs }, signal, onHandedOver)
      return { result: out }
    } catch (err: unknown) {
      const e = StargateError.from(err, Code.Internal)
      return { result: { case: 'error', value: { code: e.code, message: e.rawMessage } } }
    }
  }

  private async execute(
    req: PeerRequest,
    meta: { callerPeerId: string; tier: Tier; deadlineMs: number },
    signal: AbortSignal,
    onHandedOver: () => void,
  ): Promise<HandlerResult> {
    if (req.method === PING_METHOD) return this.ping(req)
    const session = this.registry.pick(req.method)
    if (session == null) {
      throw new StargateError(Code.Unimplemented, `no handler for method "${req.method}" on peer ${this.o.peerId}`)
    }
    if (this.executions.size > this.o.dedupeMaxEntries) this.executions.clear()
    this.executions.set(req.requestId, (this.executions.get(req.requestId) ?? 0) + 1)
    onHandedOver()
    const deliver = (): Promise<HandlerResult> => session.deliver(req, meta, signal)
    return this.observer.deliver != null ? this.observer.deliver(req, deliver) : deliver()
  }

  private ping(req: PeerRequest): HandlerResult {
    const echo =
      req.payload.case === 'json'
        ? toJson(ValueSchema, req.payload.value)
        : Buffer.from(req.payload.value ?? new Uint8Array()).toString('base64')
    return { case: 'json', value: fromJson(ValueSchema, { echo, peerId: this.o.peerId, time: new Date().toISOString() }) }
  }

  private remember(key: string, result: Promise<PeerResponseInit>, expiresAt: number): void {
    this.remembered.set(key, { result, expiresAt })
    while (this.remembered.size > this.o.dedupeMaxEntries) {
      const oldest = this.remembered.keys().next().value
      if (oldest == null) break
      this.remembered.delete(oldest)
    }
  }

  private sweep(): void {
    const now = Date.now()
    for (const [key, r] of this.remembered) {
      if (r.expiresAt > now) break
      this.remembered.delete(key)
    }
  }
}

function validate(req: PeerRequest): string | undefined {
  if (req.requestId === '') return 'request_id is required'
  if (req.method === '') return 'method is required'
  return undefined
}
