import {
  type ClientHttp2Stream,
  type Http2Session,
  constants as h2,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
} from 'node:http2'
import { durationToMs } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { StreamOpen } from '@stargate/shared/gen/envelope'
import { decodeGrpcMessage, formatGrpcTimeout } from '@stargate/shared/grpc/wire'
import type { Logger } from '@stargate/shared/log'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import type { BackendPool } from './backends.ts'
import type { TunnelStatus } from './endpoint.ts'
import { type BackendTarget, EVERY_SERVICE, type ExposeTable } from './expose.ts'
import { REFLECTION_SERVICES, ReflectionFanOut } from './reflection.ts'
import type { ServerStreamEvents, TunnelHandler, TunnelServerStream } from './server.ts'
import { appendRawHeaders, grpcCodeOfHttpStatus, grpcCodeOfRstCode, metadataFromRawHeaders, parseGrpcStatus } from './wire.ts'

/**
 * The callee gateway's HTTP/2 side of a tunnelled call: a StreamOpen becomes a request to the backend that
 * exposes its service (`--expose`), on a pooled HTTP/2 session. Request data is written as it arrives
 * (tunnel delivery pauses until the backend stream drains); the response (headers, data, trailers or a
 * trailers-only status) goes back on the tunnel stream, the backend stream paused while the caller has
 * given no credit. A caller reset, deadline or link failure cancels the backend stream (RST_STREAM CANCEL).
 */

export interface TunnelEgressOptions {
  expose: ExposeTable
  backends: BackendPool
  log: Logger
  /** Largest message the reflection fan-out reads or writes; default GATEWAY_DEFAULTS.tunnelMaxMessageBytes. */
  maxMessageBytes?: number
}

/** Trace headers replaced by the StreamOpen's trace context when it has one. */
const TRACE_HEADERS: ReadonlySet<string> = new Set(['traceparent', 'tracestate'])

/** A consumer for a stream answered at once (nothing more comes for it). */
const ANSWERED: ServerStreamEvents = {
  onData: () => true,
  onEnd: () => {},
  onClose: () => {},
  onWritable: () => {},
}

/**
 * Where the egress sends a call's response: the tunnel stream itself, or something between (the callee's
 * recording of an idempotent call) with the same contract as TunnelServerStream's methods.
 */
export type EgressSink = Pick<TunnelServerStream, 'sendHeaders' | 'write' | 'close' | 'resume'>

/** Forwards tunnelled calls to the exposed backends; `handle` is a TunnelServer's handler. */
export class TunnelEgress {
  private readonly expose: ExposeTable
  private readonly backends: BackendPool
  private readonly log: Logger
  private readonly maxMessageBytes: number

  constructor(options: TunnelEgressOptions) {
    this.expose = options.expose
    this.backends = options.backends
    this.log = options.log
    this.maxMessageBytes = options.maxMessageBytes ?? GATEWAY_DEFAULTS.tunnelMaxMessageBytes
  }

  /** Undefined when calls for the service are served here; else the UNIMPLEMENTED status naming the flag. */
  check(service: string): TunnelStatus | undefined {
    if (this.expose.lookup(service) != null) return undefined
    if (REFLECTION_SERVICES.has(service) && this.expose.targets.length > 0) return undefined
    return {
      code: Code.Unimplemented,
      message: `service ${service} is not exposed by this gateway: start it with --expose ${service}=HOST:PORT (or --expose '${EVERY_SERVICE}=HOST:PORT' for every service)`,
      trailers: [],
    }
  }

  /**
   * The backend of a service: its --expose entry; for server reflection not exposed by name, the one
   * backend, or the fan-out over several (ReflectionFanOut).
   */
  private route(service: string): BackendTarget | 'fan-out' | undefined {
    const exact = this.expose.exact(service)
    if (exact != null || !REFLECTION_SERVICES.has(service)) return exact ?? this.expose.lookup(service)
    const targets = this.expose.targets
    return targets.length > 1 ? 'fan-out' : targets[0]
  }

  readonly handle: TunnelHandler = (stream, open) => this.start(stream, open)

  /**
   * Starts the backend request of a call; its response goes to `sink`. The backend request carries
   * `traceContext` (the callee's span) when given, else the caller's trace context from the StreamOpen.
   */
  start(sink: EgressSink, open: StreamOpen, traceContext: Record<string, string> = open.traceContext): ServerStreamEvents {
    const service = open.method.slice(1, open.method.indexOf('/', 1))
    const target = this.route(service)
    if (target == null) {
      const status = this.check(service)!
      sink.close(status.code, status.message, [])
      return ANSWERED
    }
    if (open.timeout != null && durationToMs(open.timeout) <= 0) {
      sink.close(Code.DeadlineExceeded, 'deadline exceeded before the call reached the backend', [])
      return ANSWERED
    }
    if (target === 'fan-out') {
      return new ReflectionFanOut(
        sink,
        open,
        {
          expose: this.expose,
          backends: this.backends,
          maxMessageBytes: this.maxMessageBytes,
          questionTimeoutMs: GATEWAY_DEFAULTS.tunnelReflectionQuestionTimeoutMs,
          log: this.log,
        },
        () => sink.resume(),
      )
    }
    let request: ClientHttp2Stream
    try {
      request = this.backends.session(target).request(requestHeaders(target, open, traceContext), { endStream: false })
    } catch (err: unknown) {
      sink.close(Code.Unavailable, unreachable(target, service, err), [])
      return ANSWERED
    }
    return new EgressCall(sink, request, target, service, this.log)
  }
}

function requestHeaders(target: BackendTarget, open: StreamOpen, trace: Record<string, string>): string[] {
  const raw = [
    ':method',
    'POST',
    ':scheme',
    target.tls ? 'https' : 'http',
    ':path',
    open.method,
    ':authority',
    target.address,
    'te',
    'trailers',
  ]
  const replaceTrace = trace.traceparent != null
  appendRawHeaders(raw, open.metadata, replaceTrace ? TRACE_HEADERS : undefined)
  if (!open.metadata.some((m) => m.key === 'content-type')) raw.push('content-type', 'application/grpc')
  if (open.timeout != null) raw.push('grpc-timeout', formatGrpcTimeout(durationToMs(open.timeout)))
  if (replaceTrace) {
    raw.push('traceparent', trace.traceparent!)
    if (trace.tracestate != null && trace.tracestate !== '') raw.push('tracestate', trace.tracestate)
  }
  return raw
}

function unreachable(target: BackendTarget, service: string, err: unknown): string {
  // node:http2 reports a failed connect as ERR_HTTP2_STREAM_CANCEL caused by the socket error.
  const cause = (err as { cause?: unknown })?.cause ?? err
  return `backend ${target.address} (exposing ${service}) is unreachable: ${StargateError.from(cause, Code.Unavailable).rawMessage}`
}

function lostConnection(target: BackendTarget, service: string, err: unknown): string {
  const why = err == null ? '' : `: ${StargateError.from(err, Code.Unavailable).rawMessage}`
  return `backend ${target.address} (exposing ${service}) closed its connection during the call${why}`
}

/** One call to a backend (the consumer of its tunnel stream). */
class EgressCall implements ServerStreamEvents {
  private readonly stream: EgressSink
  private readonly request: ClientHttp2Stream
  /** The backend connection the call runs on (a closed stream forgets its session). */
  private readonly session?: Http2Session
  private readonly target: BackendTarget
  private readonly service: string
  private readonly log: Logger
  private trailers?: readonly string[]
  private failure?: unknown
  private endedWithoutStatus = false
  /** The backend's response headers arrived: a connection failure from now on is not "unreachable". */
  private answered = false
  private done = false

  constructor(stream: EgressSink, request: ClientHttp2Stream, target: BackendTarget, service: string, log: Logger) {
    this.stream = stream
    this.request = request
    this.session = request.session
    this.target = target
    this.service = service
    this.log = log
    request.on('response', this.onResponse)
    request.on('data', this.onResponseData)
    request.on('trailers', this.onTrailers)
    request.once('end', this.onResponseEnd)
    request.on('drain', this.onRequestDrain)
    request.on('error', this.onError)
    request.once('close', this.onRequestClose)
  }

  // Tunnel → backend.

  onData(data: Uint8Array): boolean {
    if (this.done) return true
    return this.request.write(data)
  }

  onEnd(): void {
    if (!this.done) this.request.end()
  }

  onWritable(): void {
    this.request.resume()
  }

  private readonly onRequestDrain = (): void => {
    this.stream.resume()
  }

  /** The tunnel stream ended without the backend's status (caller reset, deadline, link failure): cancel. */
  onClose(status: TunnelStatus): void {
    if (this.done) return
    this.done = true
    this.log.debug('tunnelled call ended before the backend answered; cancelling it', { backend: this.target.address, code: status.code })
    this.cancelBackend()
  }

  // Backend → tunnel.

  private readonly onResponse = (headers: IncomingHttpHeaders & IncomingHttpStatusHeader, _flags: number, raw: string[]): void => {
    if (this.done) return
    this.answered = true
    const status = headers[':status'] ?? 0
    if (status !== 200) {
      this.fail(grpcCodeOfHttpStatus(status), `backend ${this.target.address} answered HTTP status ${status}, not a gRPC response`)
      return
    }
    const contentType = headers['content-type'] ?? ''
    if (!contentType.startsWith('application/grpc')) {
      this.fail(Code.Unknown, `backend ${this.target.address} answered content-type ${JSON.stringify(contentType)}, not gRPC`)
      return
    }
    // A status in the headers is a trailers-only response: it goes out as the close, after 'end'.
    if (headers['grpc-status'] != null) this.trailers = raw
    else this.stream.sendHeaders(metadataFromRawHeaders(raw))
  }

  private readonly onResponseData = (chunk: Buffer): void => {
    if (!this.done && !this.stream.write(chunk)) this.request.pause()
  }

  private readonly onTrailers = (_headers: IncomingHttpHeaders, _flags: number, raw: string[]): void => {
    this.trailers = raw
  }

  /** Every response byte was forwarded: now the status. */
  private readonly onResponseEnd = (): void => {
    if (this.done) return
    const raw = this.trailers
    if (raw == null) {
      // Told apart when the stream closes: a response that ended without trailers, or a lost connection.
      this.endedWithoutStatus = true
      return
    }
    let code = Code.Unknown as number
    let message = ''
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if (raw[i] === 'grpc-status') code = parseGrpcStatus(raw[i + 1])
      else if (raw[i] === 'grpc-message') message = decodeGrpcMessage(raw[i + 1]!)
    }
    this.done = true
    // A trailers-only response's content-type stays with its status: the caller's gateway answers with it.
    this.stream.close(code, message, metadataFromRawHeaders(raw))
  }

  private readonly onError = (err: unknown): void => {
    this.failure ??= err
  }

  private readonly onRequestClose = (): void => {
    if (this.done) return
    // node:http2 reports the backend's RST_STREAM as an ERR_HTTP2_STREAM_ERROR too: that is an answer (its
    // code maps to a status), not an unreachable backend.
    const failure = (this.failure as { code?: unknown } | undefined)?.code === 'ERR_HTTP2_STREAM_ERROR' ? undefined : this.failure
    if (failure != null && !this.answered) {
      this.fail(Code.Unavailable, unreachable(this.target, this.service, failure))
      return
    }
    if (failure != null || this.session?.destroyed === true) {
      // The backend's connection went away during the call (its process died, a proxy dropped it): with a FIN,
      // node:http2 ends the response and closes the stream as if cancelled, with a TCP reset it reports the
      // socket error; the call may be worth trying again, as with an unreachable backend.
      this.fail(Code.Unavailable, lostConnection(this.target, this.service, failure))
      return
    }
    if (this.endedWithoutStatus) {
      this.fail(Code.Internal, `backend ${this.target.address} ended its response without a grpc-status`)
      return
    }
    const rst = this.request.rstCode ?? h2.NGHTTP2_NO_ERROR
    this.fail(
      rst === h2.NGHTTP2_NO_ERROR ? Code.Internal : grpcCodeOfRstCode(rst),
      `backend ${this.target.address} closed the stream without a status (HTTP/2 code ${rst})`,
    )
  }

  /** Ends the tunnel stream with a gateway-made status and cancels the backend stream. */
  private fail(code: number, message: string): void {
    if (this.done) return
    this.done = true
    this.stream.close(code, message, [])
    this.cancelBackend()
  }

  private cancelBackend(): void {
    if (!this.request.closed && !this.request.destroyed) this.request.close(h2.NGHTTP2_CANCEL)
  }
}
