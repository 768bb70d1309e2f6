import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http2'
import { type Clock, systemClock, type Timer } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry } from '@stargate/shared/gen/envelope'
import { TierSchema } from '@stargate/shared/gen/gateway'
import { encodeGrpcMessage, parseGrpcTimeout } from '@stargate/shared/grpc/wire'
import type { Logger } from '@stargate/shared/log'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import type { ClientStreamEvents, OpenInit, TunnelClientStream, TunnelVia } from './client.ts'
import { STATUS_OK, type TunnelStatus } from './endpoint.ts'
import {
  appendRawHeaders,
  headersObject,
  IDEMPOTENCY_KEY_HEADER,
  MessageAligner,
  metadataFromRawHeaders,
  PEER_HEADER,
  TIER_HEADER,
} from './wire.ts'

/**
 * The caller gateway's HTTP/2 side of a tunnelled call: an ordinary gRPC request on the API port, for a
 * service this gateway does not serve, bridged to a TunnelClient stream.
 *
 * Request body → data frames; the HTTP/2 stream is paused while the tunnel has no credit, so HTTP/2 flow
 * control pushes back on the client. Response headers, data and status → respond / write (paused tunnel
 * delivery until 'drain') / trailers, or one trailers-only response when the backend sent only a status.
 * The response headers also name the peer and tier the call went to (stargate-peer, stargate-tier).
 * grpc-timeout is enforced here and forwarded as the time left; a client RST_STREAM resets the tunnel
 * stream at once. Messages are never decoded: compressed ones pass as they are.
 *
 * Every call ends with grpc-status and grpc-message, after a response that ends at a message boundary: the
 * bytes of a response message still arriving are held back (MessageAligner, up to `maxHeldMessageBytes`), so
 * a call that fails mid-message (link failure, backend reset) ends with its whole messages and its status,
 * not with a cut message that clients report as INTERNAL whatever status follows.
 */

/**
 * A tunnelled call as the ingress drives it: a TunnelClientStream, or the gateway's routed stream that
 * opens one on the tier the router picks (and again on another tier when it may).
 */
export type TunnelCallStream = Pick<TunnelClientStream, 'write' | 'end' | 'resume' | 'reset'>

/**
 * The request/response stream the ingress serves: a node:http2 ServerHttp2Stream (gRPC), or an adapter with
 * the same behaviour (web.ts: gRPC-Web on HTTP/2 or HTTP/1.1).
 */
export interface IngressStream {
  on(event: 'data', listener: (chunk: Buffer) => void): unknown
  on(event: 'error' | 'close' | 'end' | 'wantTrailers' | 'drain', listener: () => void): unknown
  once(event: 'close' | 'end', listener: () => void): unknown
  off(event: 'data', listener: (chunk: Buffer) => void): unknown
  pause(): unknown
  resume(): unknown
  readonly destroyed: boolean
  readonly closed: boolean
  /** Response headers as a raw list (":status" first); with waitForTrailers, 'wantTrailers' follows end(). */
  respond(headers: string[], options: { waitForTrailers?: boolean; endStream?: boolean }): void
  write(chunk: Uint8Array): boolean
  sendTrailers(trailers: Record<string, string | string[]>): void
  end(): void
  close(): void
}

/** What a tunnelled call is opened on: a TunnelClient, or the gateway's routing of the call's target. */
export interface TunnelOpener {
  /** Opens the call; its response and status go to `events`. Throws a StargateError the client sees as its status. */
  open(init: OpenInit, events: ClientStreamEvents): TunnelCallStream
}

/** A gRPC request to tunnel, as the routing sees it. */
export interface IngressRequest {
  /** Full method path, "/package.Service/Method". */
  method: string
  /** The service part, "package.Service". */
  service: string
  /** The request's headers as received (stargate-* included: routing reads stargate-peer). */
  headers: IncomingHttpHeaders
  /** When the call's deadline passes (from grpc-timeout; none: no deadline). */
  deadlineAtMs?: number
}

/**
 * Finds the peer and establishes the link (stargate-peer > --route > discovery, then router.establish).
 * Rejects with a StargateError the client sees as its status; stops when the signal aborts (client gone
 * or deadline).
 */
export type TunnelConnector = (request: IngressRequest, signal: AbortSignal) => Promise<TunnelOpener>

export interface TunnelIngressOptions {
  connect: TunnelConnector
  log: Logger
  clock?: Clock
  /** Headers this gateway consumed itself (e.g. authorization when API auth is on): never forwarded. */
  consumedHeaders?: readonly string[]
  /** Longest idempotency key accepted (stargate-idempotency-key); default GATEWAY_DEFAULTS.maxRequestIdBytes. */
  maxIdempotencyKeyBytes?: number
  /**
   * Largest response message held back until whole (larger ones pass as they arrive); default
   * GATEWAY_DEFAULTS.tunnelWindowBytes, the most the tunnel's flow control lets a call buffer anyway.
   */
  maxHeldMessageBytes?: number
}

/** Per-call values from the gateway (telemetry, idempotency). */
export interface IngressCallOptions {
  /** Identifies the call across attempts; a random UUID when unset. */
  requestId?: string
  /** W3C trace context of the gateway's span for the call, continued into the backend request. */
  traceContext?: Record<string, string>
  /** The request came as gRPC-Web: headers that only describe the browser side are not forwarded (wire.ts). */
  fromBrowser?: boolean
}

const METHOD_PATH = /^\/([^/]+)\/[^/]+$/

/** Bridges tunnelled gRPC requests arriving on the API port to tunnel streams. */
export class TunnelIngress {
  /** @internal */ readonly connect: TunnelConnector
  /** @internal */ readonly log: Logger
  /** @internal */ readonly clock: Clock
  /** @internal */ readonly consumed: ReadonlySet<string>
  /** @internal */ readonly maxKeyBytes: number
  /** @internal */ readonly maxHeldBytes: number

  constructor(options: TunnelIngressOptions) {
    this.connect = options.connect
    this.log = options.log
    this.clock = options.clock ?? systemClock
    this.consumed = new Set((options.consumedHeaders ?? []).map((h) => h.toLowerCase()))
    this.maxKeyBytes = options.maxIdempotencyKeyBytes ?? GATEWAY_DEFAULTS.maxRequestIdBytes
    this.maxHeldBytes = options.maxHeldMessageBytes ?? GATEWAY_DEFAULTS.tunnelWindowBytes
  }

  /**
   * Serves one HTTP/2 gRPC stream (headers and rawHeaders as node:http2's 'stream' event gives them).
   * Resolves with the status the client was sent (or CANCELLED when the client went away).
   */
  handle(
    stream: IngressStream,
    headers: IncomingHttpHeaders,
    rawHeaders: readonly string[],
    call: IngressCallOptions = {},
  ): Promise<TunnelStatus> {
    return new IngressCall(this, stream, headers, rawHeaders, call).start()
  }
}

/** Why a call's connecting signal aborts: the call ended (answered, failed or cancelled). */
const CALL_ENDED = new StargateError(Code.Canceled, 'the tunnelled call ended')

/** The shared 'error' listener of client streams: errors end in 'close', handled there. */
function ignoreStreamError(): void {}

/** One tunnelled call on the API port (the consumer of its tunnel stream). */
class IngressCall implements ClientStreamEvents {
  private readonly ingress: TunnelIngress
  private readonly stream: IngressStream
  private readonly headers: IncomingHttpHeaders
  private readonly rawHeaders: readonly string[]
  private readonly call: IngressCallOptions
  private tunnel?: TunnelCallStream
  private readonly connecting = new AbortController()
  private timer?: Timer
  private deadlineAtMs?: number
  /** The client's idempotency key (stargate-idempotency-key). */
  private key?: string
  private responded = false
  private done = false
  private trailers?: Record<string, string | string[]>
  /** The response, passed to the client in whole messages. */
  private readonly response: MessageAligner
  private resolve: (status: TunnelStatus) => void = () => {}

  constructor(
    ingress: TunnelIngress,
    stream: IngressStream,
    headers: IncomingHttpHeaders,
    rawHeaders: readonly string[],
    call: IngressCallOptions,
  ) {
    this.ingress = ingress
    this.stream = stream
    this.headers = headers
    this.rawHeaders = rawHeaders
    this.call = call
    this.response = new MessageAligner(ingress.maxHeldBytes)
  }

  start(): Promise<TunnelStatus> {
    const result = new Promise<TunnelStatus>((resolve) => {
      this.resolve = resolve
    })
    const stream = this.stream
    stream.on('error', ignoreStreamError)
    stream.once('close', this.onStreamClose)
    const path = this.headers[':path'] ?? ''
    const m = METHOD_PATH.exec(path)
    if (this.headers[':method'] !== 'POST' || m == null) {
      this.finish(
        error(
          this.headers[':method'] !== 'POST' ? Code.InvalidArgument : Code.Unimplemented,
          this.headers[':method'] !== 'POST'
            ? `gRPC requests use POST, not ${this.headers[':method']}`
            : `${JSON.stringify(path)} is not a gRPC method path "/package.Service/Method"`,
        ),
      )
      return result
    }
    const key = this.headers[IDEMPOTENCY_KEY_HEADER]
    if (key != null) {
      const bad = badKey(key, this.ingress.maxKeyBytes)
      if (bad != null) {
        this.finish(error(Code.InvalidArgument, bad))
        return result
      }
    }
    this.key = key as string | undefined
    const timeout = this.headers['grpc-timeout']
    if (timeout != null) {
      let ms: number
      try {
        ms = parseGrpcTimeout(Array.isArray(timeout) ? timeout.join(',') : timeout)
      } catch (err: unknown) {
        this.finish(statusOf(err, Code.InvalidArgument))
        return result
      }
      this.deadlineAtMs = this.ingress.clock.nowMs() + ms
      this.timer = this.ingress.clock.setTimeout(() => this.connectDeadline(), ms)
    }
    const request: IngressRequest = { method: path, service: m[1]!, headers: this.headers }
    if (this.deadlineAtMs != null) request.deadlineAtMs = this.deadlineAtMs
    let connecting: Promise<TunnelOpener>
    try {
      connecting = this.ingress.connect(request, this.connecting.signal)
    } catch (err: unknown) {
      connecting = Promise.reject(err)
    }
    connecting.then(
      (opener) => this.opened(opener, path),
      (err: unknown) => this.finish(statusOf(err, Code.Unavailable)),
    )
    return result
  }

  private opened(opener: TunnelOpener, method: string): void {
    this.timer?.clear()
    this.timer = undefined
    if (this.done) return
    const init: OpenInit = {
      method,
      requestId: this.key ?? this.call.requestId ?? randomUUID(),
      metadata: metadataFromRawHeaders(this.rawHeaders, this.ingress.consumed, this.call.fromBrowser === true),
    }
    if (this.key != null) init.idempotent = true
    if (this.deadlineAtMs != null) init.deadlineAtMs = this.deadlineAtMs
    if (this.call.traceContext != null) init.traceContext = this.call.traceContext
    try {
      this.tunnel = opener.open(init, this)
    } catch (err: unknown) {
      this.finish(statusOf(err, Code.Unavailable))
      return
    }
    this.stream.on('data', this.onRequestData)
    this.stream.once('end', this.onRequestEnd)
  }

  /** @internal The deadline passed before the call reached the peer. */
  connectDeadline(): void {
    this.timer = undefined
    this.finish(error(Code.DeadlineExceeded, 'deadline exceeded before the call reached the peer'))
  }

  private readonly onRequestData = (chunk: Buffer): void => {
    if (!this.tunnel!.write(chunk)) this.stream.pause()
  }

  private readonly onRequestEnd = (): void => {
    this.tunnel?.end()
  }

  onWritable(): void {
    this.stream.resume()
  }

  onHeaders(metadata: MetadataEntry[], via?: TunnelVia): void {
    if (this.done || this.stream.destroyed) return
    const raw = appendRawHeaders([':status', '200'], metadata)
    if (!hasKey(metadata, 'content-type')) raw.push('content-type', 'application/grpc')
    if (via != null) raw.push(PEER_HEADER, via.peerId, TIER_HEADER, TierSchema.value[via.tier]?.name ?? String(via.tier))
    try {
      this.stream.respond(raw, { waitForTrailers: true })
    } catch (err: unknown) {
      this.ingress.log.debug('could not send tunnelled response headers', { err })
      this.tunnel?.reset(Code.Internal, 'the caller gateway could not relay the response headers')
      this.finish(error(Code.Internal, `the caller gateway could not relay the response headers: ${statusOf(err, Code.Internal).message}`))
      return
    }
    this.responded = true
    this.stream.on('wantTrailers', this.onWantTrailers)
    this.stream.on('drain', this.onDrain)
  }

  onData(data: Uint8Array): boolean {
    if (this.done || this.stream.destroyed) return true
    if (!this.responded) this.onHeaders([])
    // Held bytes count as taken: at most one message of maxHeldBytes, within what flow control allows anyway.
    let room = true
    for (const whole of this.response.push(data)) room = this.stream.write(whole) && room
    return room
  }

  private readonly onDrain = (): void => {
    this.tunnel?.resume()
  }

  onClose(status: TunnelStatus): void {
    this.finish(status)
  }

  private readonly onWantTrailers = (): void => {
    try {
      this.stream.sendTrailers(this.trailers ?? { 'grpc-status': String(Code.Internal), 'grpc-message': 'the call ended without a status' })
    } catch (err: unknown) {
      // The client's stream went away meanwhile: nothing left to tell it.
      this.ingress.log.debug('could not send the trailers of a tunnelled call', { err })
    }
  }

  /** The client's HTTP/2 stream closed: before the call ended, that is a cancel (RST_STREAM or a lost connection). */
  private readonly onStreamClose = (): void => {
    if (this.done) return
    this.done = true
    this.connecting.abort(CALL_ENDED)
    this.timer?.clear()
    const status = error(Code.Canceled, 'the client cancelled the call')
    this.tunnel?.reset(status.code, status.message)
    this.resolve(status)
  }

  /** Sends the status to the client: trailers after the response, or a trailers-only response. */
  private finish(status: TunnelStatus): void {
    if (this.done) return
    this.done = true
    // A constant reason: abort() without one builds a DOMException with a stack trace (2 % of a caller
    // gateway's CPU at 50 tunnelled calls in flight).
    this.connecting.abort(CALL_ENDED)
    this.timer?.clear()
    this.timer = undefined
    // Unread request data is discarded from now on (flow control keeps going, nothing is held).
    this.stream.off('data', this.onRequestData)
    this.stream.resume()
    this.resolve(status)
    const stream = this.stream
    if (stream.destroyed || stream.closed) return
    const message = status.message === '' ? [] : ['grpc-message', encodeGrpcMessage(status.message)]
    try {
      if (this.responded) {
        // The start of a message that will not be completed never reaches the client; a stream ending OK
        // passes on whatever it held, as it came.
        const held = this.response.release()
        if (status.code === STATUS_OK) for (const bytes of held) stream.write(bytes)
        else if (held.length > 0 || this.response.cut) {
          this.ingress.log.debug('tunnelled call failed inside a response message', {
            heldBytes: held.reduce((n, b) => n + b.byteLength, 0),
            cut: this.response.cut,
            code: status.code,
          })
        }
        this.trailers = {
          ...headersObject(status.trailers, TRAILER_SKIP),
          'grpc-status': String(status.code),
          ...(message.length > 0 ? { 'grpc-message': message[1]! } : {}),
        }
        stream.end()
      } else {
        const raw = [':status', '200']
        if (!hasKey(status.trailers, 'content-type')) raw.push('content-type', 'application/grpc')
        raw.push('grpc-status', String(status.code), ...message)
        stream.respond(appendRawHeaders(raw, status.trailers), { endStream: true })
      }
    } catch (err: unknown) {
      this.ingress.log.debug('could not send the status of a tunnelled call', { err })
      stream.close()
    }
  }
}

/** Trailers after a response never repeat its content-type. */
const TRAILER_SKIP: ReadonlySet<string> = new Set(['content-type'])

function hasKey(metadata: readonly MetadataEntry[], key: string): boolean {
  for (const m of metadata) if (m.key === key) return true
  return false
}

/** Why an idempotency key header is unusable, or undefined. */
function badKey(value: string | string[], maxBytes: number): string | undefined {
  if (Array.isArray(value)) return `the ${IDEMPOTENCY_KEY_HEADER} header is given ${value.length} times; give one key`
  const n = Buffer.byteLength(value)
  if (n === 0) return `the ${IDEMPOTENCY_KEY_HEADER} header is empty; give a key of 1 to ${maxBytes} bytes, or leave it out`
  if (n > maxBytes) return `the ${IDEMPOTENCY_KEY_HEADER} header is ${n} bytes, longer than the limit of ${maxBytes} bytes`
  return undefined
}

function error(code: number, message: string): TunnelStatus {
  return { code, message, trailers: [] }
}

function statusOf(err: unknown, fallback: Code): TunnelStatus {
  const e = StargateError.from(err, fallback)
  return error(e.code, e.rawMessage)
}
