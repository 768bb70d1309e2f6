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
  /** Payload bytes of remembered responses kept for duplicates; older ones are reduced to "already ran". */
  dedupeMaxBytes: number
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
  /** Payload bytes this entry holds once its result settled (0 while running or once reduced). */
  bytes: number
}

/** What a response costs to remember: its payload (or error message) bytes. */
export function responseBytes(res: PeerResponseInit): number {
  const r = res.result
  switch (r?.case) {
    case 'data':
      return r.value.byteLength
    case 'json':
      return toBinary(ValueSchema, create(ValueSchema, r.value)).byteLength
    case 'error':
      return r.value.message?.length ?? 0
    default:
      return 0
  }
}

/** Counters of inbound traffic. */
export interface InboundStats {
  handled: number
  replayed: number
  rejectedBusy: number
  malformed: number
  /** Remembered responses dropped (kept as "already ran") to stay under dedupeMaxBytes. */
  reduced: number
}

/**
 * Runs calls arriving from other gateways on any tier: the duplicate-request memory, the per-peer
 * concurrency cap, the built-in ping and the Serve handlers.
 */
export class InboundDispatcher {
  readonly stats: InboundStats = { handled: 0, replayed: 0, rejectedBusy: 0, malformed: 0, reduced: 0 }
  private readonly o: InboundOptions
  private readonly registry: ServeRegistry
  private readonly remembered = new Map<string, Remembered>()
  /** Keys of settled entries holding payload bytes, oldest first (entries may be gone since). */
  private readonly holding: string[] = []
  private holdingHead = 0
  private rememberedBytes = 0
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
        this.remembered.set(key, { result: Promise.resolve(result), expiresAt: entry.expiresAt, bytes: 0 })
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
        const encoded = toBinary(PeerResponseSchema, create(PeerResponseSchema, res))
        this.journal.done(key, expiresAt, encoded)
        this.settled(key, entry, encoded.byteLength)
      } else {
        this.settled(key, entry, responseBytes(res))
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
    const entry: Remembered = { result, expiresAt, bytes: 0 }
    this.remember(key, entry)
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

  /** Bytes of payload held by remembered responses now (bounded by dedupeMaxBytes). */
  get rememberedPayloadBytes(): number {
    return this.rememberedBytes
  }

  private remember(key: string, entry: Remembered): void {
    this.remembered.set(key, entry)
    while (this.remembered.size > this.o.dedupeMaxEntries) {
      const oldest = this.remembered.keys().next().value
      if (oldest == null) break
      this.forget(oldest)
    }
  }

  /**
   * Accounts a settled response. Over dedupeMaxBytes, the oldest responses lose their payload but not
   * their key: a duplicate of one is told it already ran (ALREADY_EXISTS), never run a second time.
   */
  private settled(key: string, entry: Remembered, bytes: number): void {
    if (this.remembered.get(key) !== entry || bytes === 0) return
    entry.bytes = bytes
    this.rememberedBytes += bytes
    this.holding.push(key)
    while (this.rememberedBytes > this.o.dedupeMaxBytes && this.holdingHead < this.holding.length) {
      const oldKey = this.holding[this.holdingHead++]!
      const old = this.remembered.get(oldKey)
      if (old == null || old.bytes === 0) continue
      this.rememberedBytes -= old.bytes
      this.stats.reduced++
      const message = `this request already ran on ${this.o.peerId}; its response (${old.bytes} bytes) is no longer kept (duplicate-request memory is limited to ${this.o.dedupeMaxBytes} bytes), so it is not run again`
      old.result = Promise.resolve({ result: { case: 'error', value: { code: Code.AlreadyExists, message } } })
      old.bytes = 0
    }
    this.trimHolding()
  }

  /** Drops keys of forgotten or reduced entries from the front of the holding queue. */
  private trimHolding(): void {
    while (this.holdingHead < this.holding.length && (this.remembered.get(this.holding[this.holdingHead]!)?.bytes ?? 0) === 0) {
      this.holdingHead++
    }
    if (this.holdingHead > 1024 && this.holdingHead * 2 > this.holding.length) {
      this.holding.splice(0, this.holdingHead)
      this.holdingHead = 0
    }
  }

  private forget(key: string): void {
    const r = this.remembered.get(key)
    if (r == null) return
    this.rememberedBytes -= r.bytes
    this.remembered.delete(key)
  }

  private sweep(): void {
    const now = Date.now()
    for (const [key, r] of this.remembered) {
      if (r.expiresAt > now) break
      this.forget(key)
    }
    this.trimHolding()
  }
}

function validate(req: PeerRequest): string | undefined {
  if (req.requestId === '') return 'request_id is required'
  if (req.method === '') return 'method is required'
  return undefined
}
