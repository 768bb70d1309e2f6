import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { Code, StargateError } from '@stargate/shared/errors'
import { type MetadataEntry, type StreamOpen, StreamRecordSchema } from '@stargate/shared/gen/envelope'
import type { Logger } from '@stargate/shared/log'
import type { InboundMeta, TunnelAdmission, TunnelRecall, TunnelTicket } from '../inbound.ts'
import type { StreamSink } from '../peer/server.ts'
import type { CallerGate } from '../policy.ts'
import type { EgressSink, TunnelEgress } from './egress.ts'
import type { TunnelOptions, TunnelStatus } from './endpoint.ts'
import { KeptChunks, type ReplayBudget } from './replay.ts'
import type { ServerStreamEvents, TunnelHandler, TunnelServerStream } from './server.ts'

/**
 * The callee gateway's side of tunnelled calls, the same on every tier (libp2p streams, the loopback): each
 * StreamOpen goes to the egress (the --expose backend), traced, counted in flight, and — when the call is
 * idempotent (StreamOpen.idempotent, the client's stargate-idempotency-key) — at most once per caller and
 * key: the call is admitted through the duplicate-request memory and request journal that Calls use, its
 * response is recorded (within the replay budget), and a repeat (the caller's retry on another tier) is
 * answered from the record instead of reaching the backend again. When the link of an idempotent call fails
 * after its request arrived whole, the backend call is left to finish so that the retry gets its answer.
 */

/** Where idempotent tunnelled calls are admitted (the inbound dispatcher's memory and journal). */
export interface TunnelMemory {
  admitTunnelled(callerPeerId: string, requestId: string): TunnelAdmission
}

/** One tunnelled call as the callee's telemetry sees it. */
export interface TunnelCallTrace {
  /** The trace context the backend request carries (the callee's span, child of the caller's). */
  readonly traceContext: Record<string, string>
  /** The call ended with this status; `replayed` when it was answered from the record of an earlier run. */
  end(status: TunnelStatus, replayed: boolean): void
}

/** Observes tunnelled calls arriving (telemetry implements it). */
export interface TunnelCalleeObserver {
  start(open: StreamOpen, meta: InboundMeta): TunnelCallTrace
}

/** What the callee needs of the egress (TunnelEgress). */
export type TunnelBackends = Pick<TunnelEgress, 'check' | 'start'>

export interface TunnelCalleeOptions {
  egress: TunnelBackends
  memory: TunnelMemory
  /** Counts calls in flight (graceful shutdown waits for them). */
  inflight: { track<T>(fn: () => Promise<T>): Promise<T> }
  /** Bounds the responses recorded for repeats. */
  budget: ReplayBudget
  /** Limits of the callee endpoints (window, streams per link, message size). */
  limits: Partial<Omit<TunnelOptions, 'log'>>
  observer?: TunnelCalleeObserver
  /** The caller policy (policy.ts), checked for every call before anything reaches a backend; absent: every caller may. */
  policy?: CallerGate
  log: Logger
}

/** Request events of a call that is answered without its request (refused, or a repeat). */
const DISCARD: ServerStreamEvents = {
  onData: () => true,
  onEnd: () => {},
  onClose: () => {},
  onWritable: () => {},
}

const NO_TRACE: TunnelCallTrace = { traceContext: {}, end: () => {} }

/** The handler of tunnelled streams arriving on any link (the gateway's StreamSink). */
export class TunnelCallee implements StreamSink {
  readonly limits: Partial<Omit<TunnelOptions, 'log'>>
  private readonly o: TunnelCalleeOptions

  constructor(options: TunnelCalleeOptions) {
    this.o = options
    this.limits = options.limits
  }

  handler(meta: InboundMeta): TunnelHandler {
    return (stream, open) => this.accept(stream, open, meta)
  }

  private accept(stream: TunnelServerStream, open: StreamOpen, meta: InboundMeta): ServerStreamEvents {
    const o = this.o
    const trace = o.observer?.start(open, meta) ?? NO_TRACE
    const call = new CalleeCall(stream, trace, o.log)
    o.inflight.track(() => call.done).catch(() => {})
    const verdict = o.policy?.allows(meta.callerPeerId, open.method)
    if (verdict != null && !verdict.allowed) {
      call.close(Code.PermissionDenied, verdict.reason, [])
      return DISCARD
    }
    const unserved = o.egress.check(open.method.slice(1, open.method.indexOf('/', 1)))
    if (unserved != null) {
      call.close(unserved.code, unserved.message, [])
      return DISCARD
    }
    if (!open.idempotent) return call.run(o.egress.start(call, open, traceContextOf(trace, open)))
    const admission = o.memory.admitTunnelled(meta.callerPeerId, open.requestId)
    switch (admission.kind) {
      case 'refused':
        call.close(admission.code, admission.message, [])
        return DISCARD
      case 'duplicate':
        admission.recalled.then(
          (r) => call.replay(r),
          (err: unknown) => call.replay({ kind: 'status', code: Code.Internal, message: StargateError.from(err).rawMessage }),
        )
        return call.run(DISCARD)
      case 'new': {
        try {
          admission.ticket.handOver()
        } catch (err: unknown) {
          admission.ticket.settle(undefined)
          const e = StargateError.from(err, Code.Unavailable)
          call.close(e.code, e.rawMessage, [])
          return DISCARD
        }
        call.record(admission.ticket, new KeptChunks(o.budget))
        return call.run(o.egress.start(call, open, traceContextOf(trace, open)))
      }
    }
  }
}

function traceContextOf(trace: TunnelCallTrace, open: StreamOpen): Record<string, string> {
  return trace.traceContext.traceparent != null ? trace.traceContext : open.traceContext
}

/** What an idempotent call records while it runs. */
interface Recording {
  ticket: TunnelTicket
  headers?: MetadataEntry[]
  data: KeptChunks
}

/**
 * One tunnelled call at the callee, between its tunnel stream and the egress: passes everything through,
 * records the response of an idempotent call, and ends the trace and the in-flight count once.
 */
class CalleeCall implements EgressSink, ServerStreamEvents {
  /** Resolves when the call ended (answered, reset, or its detached backend call finished). */
  readonly done: Promise<void>
  private readonly stream: TunnelServerStream
  private readonly trace: TunnelCallTrace
  private readonly log: Logger
  private events: ServerStreamEvents = DISCARD
  private recording?: Recording
  /** False once the tunnel stream went away under a recorded call whose backend call goes on. */
  private attached = true
  private requestEnded = false
  private finished = false
  private resolveDone: () => void = () => {}

  constructor(stream: TunnelServerStream, trace: TunnelCallTrace, log: Logger) {
    this.stream = stream
    this.trace = trace
    this.log = log
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve
    })
  }

  /** Routes the stream's request events to the egress call (or discards them). */
  run(events: ServerStreamEvents): ServerStreamEvents {
    this.events = events
    return this
  }

  record(ticket: TunnelTicket, data: KeptChunks): void {
    this.recording = { ticket, data }
  }

  /** Answers a repeat from its original's record (or status). */
  replay(r: TunnelRecall): void {
    if (r.kind === 'status') {
      this.stream.close(r.code, r.message, [])
      this.finish({ code: r.code, message: r.message, trailers: [] }, true)
      return
    }
    const rec = fromBinary(StreamRecordSchema, r.record)
    if (rec.hasHeaders) this.stream.sendHeaders(rec.headers)
    if (rec.data.byteLength > 0) this.stream.write(rec.data)
    this.stream.close(rec.code, rec.message, rec.trailers)
    this.finish({ code: rec.code, message: rec.message, trailers: rec.trailers }, true)
  }

  // The egress's response (EgressSink).

  sendHeaders(metadata: MetadataEntry[]): void {
    if (this.recording != null) this.recording.headers = metadata
    if (this.attached) this.stream.sendHeaders(metadata)
  }

  write(data: Uint8Array): boolean {
    this.recording?.data.add(data)
    return this.attached ? this.stream.write(data) : true
  }

  close(code: number, message: string, trailers: MetadataEntry[]): void {
    if (this.attached) this.stream.close(code, message, trailers)
    this.finish({ code, message, trailers }, false)
  }

  resume(): void {
    if (this.attached) this.stream.resume()
  }

  // The tunnel stream's request (ServerStreamEvents).

  onData(data: Uint8Array): boolean {
    return this.events.onData(data)
  }

  onEnd(): void {
    this.requestEnded = true
    this.events.onEnd()
  }

  onWritable(): void {
    this.events.onWritable()
  }

  /** The stream ended without the call's status: caller reset, deadline, a limit, or the link failing. */
  onClose(status: TunnelStatus): void {
    if (this.recording != null && status.from === 'link' && this.requestEnded && !this.finished) {
      // The caller may retry on another tier: let the backend call finish so the retry gets its answer.
      this.attached = false
      this.log.info('link of an idempotent tunnelled call failed; its backend call goes on for the retry', { reason: status.message })
      this.events.onWritable()
      return
    }
    this.events.onClose(status)
    this.finish(status, false)
  }

  private finish(status: TunnelStatus, replayed: boolean): void {
    if (this.finished) return
    this.finished = true
    const rec = this.recording
    if (rec != null) {
      const complete = rec.data.complete
      const chunks = rec.data.take()
      rec.ticket.settle(
        complete
          ? toBinary(
              StreamRecordSchema,
              create(StreamRecordSchema, {
                hasHeaders: rec.headers != null,
                headers: rec.headers ?? [],
                data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks),
                code: status.code,
                message: status.message,
                trailers: status.trailers,
              }),
            )
          : undefined,
      )
    }
    this.trace.end(status, replayed)
    this.resolveDone()
  }
}
