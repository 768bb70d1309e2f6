import { create, fromBinary, fromJson, type MessageInitShape, toBinary, toJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { durationToMs } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import { type PeerRequest, PeerResponseSchema } from '@stargate/shared/gen/envelope'
import type { Tier } from '@stargate/shared/gen/gateway'
import { type Logger, RateLimitedLog } from '@stargate/shared/log'
import { deadline } from '@stargate/shared/signals'
import { DuplicateMemory, type Recalled, type Ticket } from './dedupe.ts'
import type { InFlight } from './inflight.ts'
import { RequestJournal } from './journal.ts'
import type { CallerGate } from './policy.ts'
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
  dedupeMaxEntriesPerCaller: number
  /** Bytes of request ids and remembered responses; past it the oldest responses are reduced to "already ran". */
  dedupeMaxBytes: number
  dedupeMaxBytesPerCaller: number
  /** Longer request ids / methods are refused with INVALID_ARGUMENT. */
  maxRequestIdBytes: number
  maxMethodBytes: number
  /** Journal of requests handed to handlers, so a restart never runs one twice (optional). */
  journal?: { dir: string; maxBytes: number; syncIntervalMs: number }
  /** How long a request without a timeout may run. */
  defaultTimeoutMs: number
  /** Who may call what (policy.ts); unset: every caller may call everything. */
  policy?: CallerGate
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
  /**
   * Wraps the delivery of one request to a Serve client; must return run()'s result. `run` takes the W3C
   * trace context to hand to the client (the delivery span's, so the handler continues the caller's trace).
   */
  deliver?(req: PeerRequest, run: (traceContext: Record<string, string>) => Promise<HandlerResult>): Promise<HandlerResult>
}

/** Counters of inbound traffic. */
export interface InboundStats {
  handled: number
  replayed: number
  rejectedBusy: number
  malformed: number
  /** Requests refused with PERMISSION_DENIED by the caller policy. */
  denied: number
  /** Remembered responses dropped (kept as "already ran") to stay under the dedupe byte limits. */
  readonly reduced: number
  /** New requests refused because the duplicate-request memory or the journal was full. */
  readonly refusedFull: number
}

/**
 * Remembered answers of idempotent tunnelled calls start with this character (a Call's answer, an encoded
 * PeerResponse, never does: 0xff is no protobuf tag), so one idempotency key names one operation across
 * Calls and tunnelled calls alike. The rest is an encoded StreamRecord; nothing after it means the call ran
 * but its response was not kept.
 */
const TUNNEL_RECORD_TAG = '\xff'

/** What the duplicate-request memory says about an idempotent tunnelled call. */
export type TunnelAdmission =
  /** A new call: run it (handOver first), then settle its ticket. */
  | { kind: 'new'; ticket: TunnelTicket }
  /** A repeat: its original's answer (awaited while the original still runs). */
  | { kind: 'duplicate'; recalled: Promise<TunnelRecall> }
  /** Refused (the memory is full, or the key is invalid): answer with this status, run nothing. */
  | { kind: 'refused'; code: Code; message: string }

/** A repeat's answer: the recorded response, or a status saying why there is none. */
export type TunnelRecall = { kind: 'record'; record: Uint8Array } | { kind: 'status'; code: Code; message: string }

/** A new idempotent tunnelled call's place in the memory and the journal. */
export interface TunnelTicket {
  /**
   * Journals the call as handed to its backend; call it before the backend sees the request. Throws a
   * StargateError (RESOURCE_EXHAUSTED, UNAVAILABLE) when the record cannot be written: do not run it then.
   */
  handOver(): void
  /**
   * The call ended: remember its response (an encoded StreamRecord; undefined when it was too large to
   * keep, so a repeat is told it already ran). Nothing handed over: the call is forgotten and may run later.
   */
  settle(record: Uint8Array | undefined): void
}

function errorResult(code: Code, message: string): PeerResponseInit {
  return { result: { case: 'error', value: { code, message } } }
}

function encodeResponse(res: PeerResponseInit): Uint8Array {
  return toBinary(PeerResponseSchema, create(PeerResponseSchema, res))
}

/**
 * A response as the memory keeps it: its encoding in a one-byte string, ~200 bytes smaller per entry than a
 * Uint8Array of it, and never a view that would keep a larger received buffer alive.
 */
function packed(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1')
}

/**
 * Runs calls arriving on any tier — libp2p (peer/server.ts), NATS (tiers/nats.ts) and this gateway's own
 * loopback — through one path: validation, the request's deadline, in-flight tracking for graceful shutdown,
 * the duplicate-request memory (dedupe.ts), the per-peer concurrency cap, the request journal (journal.ts),
 * the built-in ping and the Serve handlers. Transports only decode, verify the caller and hand requests here;
 * what they drop they report through `dropped()`, so every inbound counter lives here.
 */
export class InboundDispatcher {
  readonly stats: InboundStats
  private readonly o: InboundOptions
  private readonly registry: ServeRegistry
  private readonly memory: DuplicateMemory<string>
  private readonly inflightByPeer = new Map<string, number>()
  private readonly observer: InboundObserver
  private readonly inflight: InFlight
  private readonly journal?: RequestJournal
  private journalFull = 0
  /** Warnings about what peers send (drops, refusals): rate-limited, the rest counted. */
  private readonly warnings: RateLimitedLog

  constructor(options: InboundOptions, registry: ServeRegistry, inflight: InFlight, observer: InboundObserver = {}) {
    this.o = options
    this.warnings = new RateLimitedLog(options.log)
    this.registry = registry
    this.inflight = inflight
    this.observer = observer
    const memory = new DuplicateMemory<string>({
      windowMs: options.dedupeWindowMs,
      maxEntries: options.dedupeMaxEntries,
      maxEntriesPerCaller: options.dedupeMaxEntriesPerCaller,
      maxBytes: options.dedupeMaxBytes,
      maxBytesPerCaller: options.dedupeMaxBytesPerCaller,
    })
    this.memory = memory
    const self = this
    this.stats = {
      handled: 0,
      replayed: 0,
      rejectedBusy: 0,
      malformed: 0,
      denied: 0,
      get reduced() {
        return memory.stats.reduced
      },
      get refusedFull() {
        return memory.stats.refused + self.journalFull
      },
    }
    if (options.journal != null) {
      const { journal, recovered } = RequestJournal.open({
        ...options.journal,
        maxEntries: options.dedupeMaxEntries,
        windowMs: options.dedupeWindowMs,
        log: options.log.child('journal'),
      })
      this.journal = journal
      const aborted = packed(
        encodeResponse(
          errorResult(
            Code.Aborted,
            'this request was interrupted by a restart of the target gateway; it may or may not have run, so it is not run again',
          ),
        ),
      )
      for (const [key, entry] of recovered) {
        const slash = key.indexOf('/')
        if (slash <= 0) continue
        const caller = key.slice(0, slash)
        const requestId = key.slice(slash + 1)
        if (entry.state === 'started') memory.restore(caller, requestId, entry.expiresAtMs, aborted, 0)
        else if (entry.response != null)
          memory.restore(caller, requestId, entry.expiresAtMs, packed(entry.response), entry.response.byteLength)
        else memory.restore(caller, requestId, entry.expiresAtMs, undefined, entry.responseBytes)
      }
      if (recovered.size > 0) options.log.info('recovered requests from the journal', { requests: recovered.size, dir: journal.dir })
    }
  }

  /**
   * Stops journaling: what was journaled is synced and the journal closed. Call it before the Serve
   * sessions close at shutdown, so calls they drop are left "started" (after a restart: ABORTED), never
   * recorded as done; requests arriving later are refused as not run.
   */
  close(): void {
    this.journal?.close()
  }

  /** Bytes of request ids and responses held by the duplicate-request memory (bounded by dedupeMaxBytes). */
  get rememberedPayloadBytes(): number {
    return this.memory.bytes
  }

  /** Size and bound of the request journal, when there is one. */
  journalUsage(): { bytes: number; maxBytes: number } | undefined {
    return this.journal != null ? { bytes: this.journal.bytes, maxBytes: this.journal.maxBytes } : undefined
  }

  /**
   * Answers one request within its timeout (counted in flight until answered). Never throws: every failure
   * becomes an error status in the response. A request id seen before (from the same caller, on any tier)
   * is answered from memory. `signal` is the transport's cancellation (the caller gave up).
   */
  handle(req: PeerRequest, meta: InboundMeta, signal: AbortSignal): Promise<PeerResponseInit> {
    const timeoutMs = req.timeout != null ? durationToMs(req.timeout) : this.o.defaultTimeoutMs
    const requestDeadline = deadline(timeoutMs, signal)
    const run = (): Promise<PeerResponseInit> => this.answer(req, meta, requestDeadline.signal)
    return this.inflight
      .track(() => (this.observer.handle != null ? this.observer.handle(req, meta, run) : run()))
      .finally(requestDeadline.dispose)
  }

  /**
   * Offers an idempotent tunnelled call (StreamOpen.idempotent) to the duplicate-request memory and the
   * journal that Calls use: the same limits, the same fail-closed refusals, the same recovery after a
   * restart. A key used before by this caller is a repeat, whatever it was used for.
   */
  admitTunnelled(callerPeerId: string, requestId: string): TunnelAdmission {
    const invalid = this.validateRequestId(requestId)
    if (invalid != null) return { kind: 'refused', code: Code.InvalidArgument, message: invalid }
    const admission = this.memory.begin(callerPeerId, requestId)
    if (admission.kind === 'duplicate') {
      this.stats.replayed++
      return { kind: 'duplicate', recalled: admission.recalled.then((r) => this.recalledTunnelled(r)) }
    }
    if (admission.kind === 'full') {
      this.warnFull(admission.message)
      return { kind: 'refused', code: Code.ResourceExhausted, message: admission.message }
    }
    const ticket = admission.ticket
    const key = `${callerPeerId}/${requestId}`
    let handedOver = false
    this.stats.handled++
    return {
      kind: 'new',
      ticket: {
        handOver: () => {
          this.journalStarted(key, ticket.expiresAtMs)
          handedOver = true
        },
        settle: (record) => {
          const bytes = Buffer.alloc(1 + (record?.byteLength ?? 0), 0xff)
          if (record != null) bytes.set(record, 1)
          this.memory.settle(ticket, packed(bytes), bytes.byteLength, handedOver)
          if (handedOver) this.journal?.done(key, ticket.expiresAtMs, bytes)
        },
      },
    }
  }

  private recalledTunnelled(r: Recalled<string>): TunnelRecall {
    const ran = (bytes: number): TunnelRecall => ({
      kind: 'status',
      code: Code.AlreadyExists,
      message: `this call already ran on ${this.o.peerId}; its response (${bytes} bytes) is no longer kept, so it is not run again`,
    })
    if (r.kind === 'ran') return ran(r.bytes)
    if (r.value.startsWith(TUNNEL_RECORD_TAG)) {
      if (r.value.length === 1) return ran(0)
      return { kind: 'record', record: Buffer.from(r.value.slice(1), 'latin1') }
    }
    // The key was used by a Call (or the call was interrupted by a restart: its ABORTED answer).
    const res = fromBinary(PeerResponseSchema, Buffer.from(r.value, 'latin1'))
    if (res.result.case === 'error') return { kind: 'status', code: res.result.value.code as Code, message: res.result.value.message }
    return {
      kind: 'status',
      code: Code.AlreadyExists,
      message: `idempotency key already used by another call on ${this.o.peerId}; use a new key for a new call`,
    }
  }

  /** A transport dropped something a peer sent (malformed, forged, replayed): counted and logged here. */
  dropped(reason: string, fields: Record<string, unknown> = {}): void {
    this.stats.malformed++
    this.warnings.warn(`dropped ${reason}`, fields)
  }

  private async answer(req: PeerRequest, meta: InboundMeta, signal: AbortSignal): Promise<PeerResponseInit> {
    const base = { exchangeId: req.exchangeId, requestId: req.requestId, responderPeerId: this.o.peerId }
    const invalid = this.validate(req)
    if (invalid != null) {
      this.stats.malformed++
      return { ...base, ...errorResult(Code.InvalidArgument, invalid) }
    }
    // The caller policy before anything is remembered or run: a denied caller takes no memory entry.
    const verdict = this.o.policy?.allows(meta.callerPeerId, req.method)
    if (verdict != null && !verdict.allowed) {
      this.stats.denied++
      return { ...base, ...errorResult(Code.PermissionDenied, verdict.reason) }
    }
    // The built-in ping has no effect to protect: it is never remembered (a flood of pings costs no memory).
    let ticket: Ticket | undefined
    if (req.method !== PING_METHOD) {
      const admission = this.memory.begin(meta.callerPeerId, req.requestId)
      if (admission.kind === 'duplicate') {
        this.stats.replayed++
        return { ...this.recalled(await admission.recalled), ...base, replayed: true }
      }
      if (admission.kind === 'full') {
        this.warnFull(admission.message)
        return { ...base, ...errorResult(Code.ResourceExhausted, admission.message) }
      }
      ticket = admission.ticket
    }
    const inflight = this.inflightByPeer.get(meta.callerPeerId) ?? 0
    if (inflight >= this.o.maxInboundCallsPerPeer) {
      this.stats.rejectedBusy++
      const busy = errorResult(
        Code.ResourceExhausted,
        `peer ${meta.callerPeerId} already has ${inflight} calls in flight on ${this.o.peerId} (limit ${this.o.maxInboundCallsPerPeer})`,
      )
      if (ticket != null) this.memory.settle(ticket, packed(encodeResponse(busy)), 0, false)
      return { ...base, ...busy }
    }
    this.inflightByPeer.set(meta.callerPeerId, inflight + 1)
    try {
      const key = `${meta.callerPeerId}/${req.requestId}`
      let handedOver = false
      const res = await this.run(req, meta, signal, () => {
        if (ticket != null) this.journalStarted(key, ticket.expiresAtMs)
        handedOver = true
      })
      if (ticket != null) {
        const encoded = encodeResponse(res)
        // A request that never reached a handler is not remembered: its retry may run it.
        this.memory.settle(ticket, packed(encoded), encoded.byteLength, handedOver)
        if (handedOver) this.journal?.done(key, ticket.expiresAtMs, encoded)
      }
      return { ...res, ...base }
    } finally {
      const n = (this.inflightByPeer.get(meta.callerPeerId) ?? 1) - 1
      if (n <= 0) this.inflightByPeer.delete(meta.callerPeerId)
      else this.inflightByPeer.set(meta.callerPeerId, n)
    }
  }

  private journalStarted(key: string, expiresAtMs: number): void {
    try {
      this.journal?.started(key, expiresAtMs)
    } catch (err: unknown) {
      const e = StargateError.from(err, Code.Unavailable)
      if (e.code === Code.ResourceExhausted) {
        this.journalFull++
        this.warnFull(e.rawMessage)
      }
      throw e
    }
  }

  private recalled(r: Recalled<string>): PeerResponseInit {
    if (r.kind === 'response' && r.value.startsWith(TUNNEL_RECORD_TAG)) {
      return errorResult(
        Code.AlreadyExists,
        `idempotency key already used by a tunnelled call on ${this.o.peerId}; use a new key for a new call`,
      )
    }
    if (r.kind === 'response') return fromBinary(PeerResponseSchema, Buffer.from(r.value, 'latin1'))
    return errorResult(
      Code.AlreadyExists,
      `this request already ran on ${this.o.peerId}; its response (${r.bytes} bytes) is no longer kept (duplicate-request memory is limited by --dedupe-max-bytes ${this.o.dedupeMaxBytes} and --dedupe-caller-max-bytes ${this.o.dedupeMaxBytesPerCaller}), so it is not run again`,
    )
  }

  private warnFull(message: string): void {
    this.warnings.warn('refusing new requests (fail closed)', { reason: message, refused: this.stats.refusedFull })
  }

  private async run(
    req: PeerRequest,
    meta: { callerPeerId: string; tier: Tier },
    signal: AbortSignal,
    onHandedOver: () => void,
  ): Promise<PeerResponseInit> {
    this.stats.handled++
    const timeoutMs = req.timeout != null ? durationToMs(req.timeout) : this.o.defaultTimeoutMs
    const deadlineAtMs = Date.now() + timeoutMs
    try {
      const out = await this.execute(req, { ...meta, deadlineAtMs }, signal, onHandedOver)
      return { result: out }
    } catch (err: unknown) {
      const e = StargateError.from(err, Code.Internal)
      return errorResult(e.code, e.rawMessage)
    }
  }

  private async execute(
    req: PeerRequest,
    meta: { callerPeerId: string; tier: Tier; deadlineAtMs: number },
    signal: AbortSignal,
    onHandedOver: () => void,
  ): Promise<HandlerResult> {
    if (req.method === PING_METHOD) return this.ping(req)
    const session = this.registry.pick(req.method)
    if (session == null) {
      throw new StargateError(Code.Unimplemented, `no handler for method "${req.method}" on peer ${this.o.peerId}`)
    }
    onHandedOver()
    const deliver = (traceContext: Record<string, string> = {}): Promise<HandlerResult> =>
      session.deliver(req, { ...meta, traceContext }, signal)
    return this.observer.deliver != null ? this.observer.deliver(req, deliver) : deliver()
  }

  private ping(req: PeerRequest): HandlerResult {
    const echo =
      req.payload.case === 'json'
        ? toJson(ValueSchema, req.payload.value)
        : Buffer.from(req.payload.value ?? new Uint8Array()).toString('base64')
    return { case: 'json', value: fromJson(ValueSchema, { echo, peerId: this.o.peerId, time: new Date().toISOString() }) }
  }

  private validateRequestId(requestId: string): string | undefined {
    if (requestId === '') return 'request_id is required'
    const idBytes = Buffer.byteLength(requestId)
    if (idBytes > this.o.maxRequestIdBytes) {
      return `request_id is ${idBytes} bytes, longer than the limit of ${this.o.maxRequestIdBytes} bytes (use a shorter idempotency key)`
    }
    return undefined
  }

  private validate(req: PeerRequest): string | undefined {
    const badId = this.validateRequestId(req.requestId)
    if (badId != null) return badId
    if (req.method === '') return 'method is required'
    const methodBytes = Buffer.byteLength(req.method)
    if (methodBytes > this.o.maxMethodBytes)
      return `method is ${methodBytes} bytes, longer than the limit of ${this.o.maxMethodBytes} bytes`
    return undefined
  }
}
