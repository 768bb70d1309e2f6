/**
 * gRPC over HTTP/2 for local methods, straight on node:http2 streams: one call per stream, running a connect-es
 * method implementation (with its middleware). Messages are length-prefixed protobuf (or JSON for
 * application/grpc+json); grpc-timeout becomes the handler context's deadline; an RST_STREAM or a lost
 * session aborts the handler's signal; request metadata is the context's requestHeader, and the context's
 * responseHeader/responseTrailer are sent as headers and trailers. Errors become grpc-status, a
 * percent-encoded grpc-message and grpc-status-details-bin; an error before any message is a trailers-only
 * response. A streaming request is read only as fast as the handler consumes it (HTTP/2 flow control holds
 * the client back), and a streaming response waits for 'drain'.
 */
import { constants, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { create, type DescMethod, type DescService, fromBinary, fromJsonString, toBinary, toJsonString } from '@bufbuild/protobuf'
import { ConnectError, type HandlerContext } from '@connectrpc/connect'
import { setTrailerStatus } from '@connectrpc/connect/protocol-grpc'
import type { Clock } from '../clock.ts'
import { Code, StargateError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { CallContext } from './call-context.ts'
import { addHeaders, drained, requestUrl } from './connect-h2.ts'
import {
  decompress,
  encodeFrame,
  encodeGrpcMessage,
  FrameParser,
  GRPC_ACCEPT_ENCODING,
  GRPC_ENCODINGS,
  type GrpcFrame,
  parseGrpcTimeout,
} from './wire.ts'

/** Any method implementation, in connect-es form (request or request stream, handler context). */
// biome-ignore lint/suspicious/noExplicitAny: method implementations are heterogeneous by design
export type AnyMethodImpl = (input: any, ctx: HandlerContext) => any

/** What a request gate sees: the method asked for and the request metadata. */
export interface GateRequest {
  /** Fully-qualified service name, e.g. stargate.v1.GatewayService. */
  service: string
  /** Method name, e.g. Call. */
  method: string
  header: Headers
  /** True when the request goes to the unknown-service hook (a tunnel) rather than to a local method. */
  tunnelled: boolean
}

/**
 * Runs before any request message is read, for every request: local methods on every protocol and tunnelled
 * streams alike. Throw (a StargateError) to refuse it; the client gets that status.
 */
export type RequestGate = (request: GateRequest) => void

/**
 * The request gate as the server runs it: with the URL and protocol of the request, so that a refusal can be
 * recorded like a call (ApiServerOptions.onRefused).
 */
export type CheckedGate = (request: GateRequest, call: { url: string; protocolName: string }) => void

/** A local method. */
export interface GrpcRoute {
  service: DescService
  method: DescMethod
  /** The implementation, wrapped in the middleware. */
  impl: AnyMethodImpl
}

export interface GrpcCallOptions {
  maxReceiveMessageBytes: number
  maxSendMessageBytes: number
  /** Aborted when the server stops: handlers see their context's signal abort with its reason. */
  shutdownSignal: AbortSignal
  /** Times the calls' deadlines. */
  clock: Clock
  gate?: CheckedGate
  log: Logger
}

const SETTLED = new StargateError(Code.Canceled, 'the call has ended')

/**
 * Sends a trailers-only response: the status in the response headers, nothing else. Stops the client's
 * upload (RST_STREAM NO_ERROR) when it is still sending.
 */
export function respondWithStatus(stream: ServerHttp2Stream, err: unknown, headers?: OutgoingHttpHeaders): void {
  if (stream.destroyed || stream.headersSent) return
  const h: OutgoingHttpHeaders = { ...headers }
  addStatus(h, err)
  h[':status'] = 200
  h['content-type'] ??= 'application/grpc'
  stream.respond(h, { endStream: true })
  if (!stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR)
}

/** grpc-status, grpc-message and grpc-status-details-bin (and an error's metadata) of an outcome. */
function addStatus(target: OutgoingHttpHeaders, err: unknown): void {
  if (err === undefined) {
    target['grpc-status'] = '0'
    return
  }
  const e = err instanceof ConnectError ? err : StargateError.from(err)
  let metadata = false
  e.metadata.forEach(() => {
    metadata = true
  })
  if (e.details.length > 0 || metadata) {
    // connect-es encodes the details as a google.rpc.Status (and merges the error's metadata).
    addHeaders(target, setTrailerStatus(new Headers(), e))
  }
  target['grpc-status'] = String(e.code)
  target['grpc-message'] = encodeGrpcMessage(e.rawMessage)
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

/** Serves one gRPC call for a local method on its stream. */
export function serveGrpc(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  route: GrpcRoute,
  subtype: string,
  options: GrpcCallOptions,
): void {
  if (subtype !== 'proto' && subtype !== 'json') {
    respondWithStatus(
      stream,
      new StargateError(
        Code.Unimplemented,
        `content-type ${headers['content-type']} is not supported: use application/grpc or application/grpc+json`,
      ),
    )
    return
  }
  const encoding = one(headers['grpc-encoding'])
  if (encoding != null && encoding !== 'identity' && !(GRPC_ENCODINGS as readonly string[]).includes(encoding)) {
    respondWithStatus(
      stream,
      new StargateError(Code.Unimplemented, `grpc-encoding "${encoding}" is not supported (${GRPC_ACCEPT_ENCODING})`),
      {
        'grpc-accept-encoding': GRPC_ACCEPT_ENCODING,
      },
    )
    return
  }
  let timeoutMs: number | undefined
  const timeout = one(headers['grpc-timeout'])
  if (timeout != null) {
    try {
      timeoutMs = parseGrpcTimeout(timeout)
    } catch (err: unknown) {
      respondWithStatus(stream, err)
      return
    }
  }
  new GrpcCall(stream, headers, route, subtype === 'json', encoding ?? 'identity', timeoutMs, options).start()
}

class GrpcCall {
  private readonly stream: ServerHttp2Stream
  private readonly route: GrpcRoute
  private readonly json: boolean
  private readonly encoding: string
  private readonly options: GrpcCallOptions
  private readonly ctx: CallContext
  private reader: RequestReader | undefined
  private finished = false

  constructor(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    route: GrpcRoute,
    json: boolean,
    encoding: string,
    timeoutMs: number | undefined,
    options: GrpcCallOptions,
  ) {
    this.stream = stream
    this.route = route
    this.json = json
    this.encoding = encoding
    this.options = options
    this.ctx = new CallContext({
      service: route.service,
      method: route.method,
      url: requestUrl(stream, headers),
      headers,
      timeoutMs,
      shutdownSignal: options.shutdownSignal,
      clock: options.clock,
      // The deadline, or the server stopping: answer with that status at once, whatever the handler does.
      onAbort: (reason) => {
        if (!this.finished) this.finish(reason)
      },
    })
  }

  start(): void {
    const { stream, ctx } = this
    if (ctx.signal.aborted) {
      // A zero timeout, or the server is stopping.
      this.finish(ctx.signal.reason)
      return
    }
    stream.once('close', this.onClose)
    this.run().catch((err: unknown) => this.finish(err))
  }

  private readonly onClose = (): void => {
    if (this.finished) return
    // RST_STREAM from the client, or the session went away: nothing can be sent any more.
    const reason = new StargateError(Code.Canceled, 'the client cancelled the call')
    this.reader?.fail(reason)
    this.finish(reason)
  }

  private async run(): Promise<void> {
    const { route, ctx, options } = this
    options.gate?.({ service: route.service.typeName, method: route.method.name, header: ctx.requestHeader, tunnelled: false }, ctx)
    switch (route.method.methodKind) {
      case 'unary': {
        const input = await this.readSingle()
        this.sendSingle(await route.impl(input, ctx))
        return
      }
      case 'server_streaming': {
        const input = await this.readSingle()
        await this.sendStream(route.impl(input, ctx) as AsyncIterable<unknown>)
        return
      }
      case 'client_streaming':
        this.sendSingle(await route.impl(this.inputs(), ctx))
        return
      case 'bidi_streaming':
        await this.sendStream(route.impl(this.inputs(), ctx) as AsyncIterable<unknown>)
    }
  }

  private requestReader(): RequestReader {
    this.reader ??= new RequestReader(this.stream, new FrameParser(this.options.maxReceiveMessageBytes))
    return this.reader
  }

  /** Reads the one request message of a unary or server-streaming call, up to the end of the request. */
  private async readSingle(): Promise<unknown> {
    const reader = this.requestReader()
    const frame = await reader.next()
    if (frame == null) throw new StargateError(Code.Unimplemented, `missing request message for ${this.route.method.methodKind} method`)
    const input = await this.decode(frame)
    if ((await reader.next()) != null) {
      throw new StargateError(Code.Unimplemented, `received more than one request message for ${this.route.method.methodKind} method`)
    }
    return input
  }

  /**
   * The request messages of a client- or bidi-streaming call, read as the handler asks for them. A protocol
   * error (an oversized or undecodable message) ends the call with its own status, whatever the handler then
   * makes of it.
   */
  private async *inputs(): AsyncGenerator<unknown> {
    const reader = this.requestReader()
    for (;;) {
      let msg: unknown
      try {
        const frame = await reader.next()
        if (frame == null) return
        msg = await this.decode(frame)
      } catch (err: unknown) {
        this.finish(err)
        throw err
      }
      yield msg
    }
  }

  private async decode(frame: GrpcFrame): Promise<unknown> {
    let data = frame.data
    if (frame.compressed) {
      if (this.encoding === 'identity') throw new StargateError(Code.Internal, 'a compressed message arrived without grpc-encoding')
      data = await decompress(this.encoding, data, this.options.maxReceiveMessageBytes)
    }
    const schema = this.route.method.input
    try {
      return this.json ? fromJsonString(schema, Buffer.from(data).toString('utf8')) : fromBinary(schema, data)
    } catch (err: unknown) {
      throw new StargateError(Code.Internal, `could not decode the ${schema.typeName} request: ${(err as Error).message}`, { cause: err })
    }
  }

  private encode(output: unknown): Buffer {
    const schema = this.route.method.output
    const msg = create(schema, output as never)
    const bytes = this.json ? Buffer.from(toJsonString(schema, msg)) : toBinary(schema, msg)
    if (bytes.byteLength > this.options.maxSendMessageBytes) {
      throw new StargateError(
        Code.ResourceExhausted,
        `the ${schema.typeName} response of ${bytes.byteLength} bytes is more than the maximum of ${this.options.maxSendMessageBytes} bytes`,
      )
    }
    return encodeFrame(bytes)
  }

  private sendHeaders(): void {
    if (this.stream.headersSent) return
    const h: OutgoingHttpHeaders = {}
    addHeaders(h, this.ctx.responseHeaderIfUsed())
    h[':status'] = 200
    h['content-type'] = this.json ? 'application/grpc+json' : 'application/grpc'
    h['grpc-accept-encoding'] = GRPC_ACCEPT_ENCODING
    this.stream.respond(h, { waitForTrailers: true })
  }

  private sendSingle(output: unknown): void {
    if (this.finished) return
    const frame = this.encode(output)
    this.sendHeaders()
    this.stream.write(frame)
    this.finish(undefined)
  }

  private async sendStream(output: AsyncIterable<unknown>): Promise<void> {
    for await (const msg of output) {
      if (this.finished) break
      const frame = this.encode(msg)
      this.sendHeaders()
      if (!this.stream.write(frame)) await drained(this.stream)
      if (this.finished) break
    }
    this.finish(undefined)
  }

  /** Ends the call once: the status goes out as trailers (or trailers-only), the handler's context is released. */
  private finish(err: unknown): void {
    if (this.finished) return
    this.finished = true
    const { stream, ctx } = this
    stream.off('close', this.onClose)
    // Releases the deadline timer; a handler still running sees its signal abort.
    ctx.end(err ?? SETTLED)
    if (err !== undefined && !(err instanceof ConnectError)) {
      this.options.log.warn('gRPC handler failed', { err, url: ctx.url })
    }
    if (stream.destroyed || stream.closed) return
    if (!stream.headersSent) {
      const h: OutgoingHttpHeaders = {}
      addHeaders(h, ctx.responseHeaderIfUsed())
      addHeaders(h, ctx.responseTrailerIfUsed())
      h['content-type'] = this.json ? 'application/grpc+json' : 'application/grpc'
      respondWithStatus(stream, err, h)
      return
    }
    const trailers: OutgoingHttpHeaders = {}
    addHeaders(trailers, ctx.responseTrailerIfUsed())
    addStatus(trailers, err)
    stream.once('wantTrailers', () => {
      stream.sendTrailers(trailers)
      // The answer is complete: stop a client that is still sending.
      if (!stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR)
    })
    stream.end()
  }
}

/**
 * Pulls length-prefixed messages from a request stream. Nothing is read while no message is asked for, so
 * node stops acknowledging the client's data (no WINDOW_UPDATE) and HTTP/2 flow control holds it back.
 */
class RequestReader {
  private readonly stream: ServerHttp2Stream
  private readonly parser: FrameParser
  private readonly frames: GrpcFrame[] = []
  private ended = false
  private failure: unknown
  private wake: (() => void) | undefined

  constructor(stream: ServerHttp2Stream, parser: FrameParser) {
    this.stream = stream
    this.parser = parser
    stream.on('readable', this.notify)
    stream.once('end', () => {
      this.ended = true
      this.notify()
    })
  }

  fail(reason: unknown): void {
    this.failure ??= reason
    this.notify()
  }

  private readonly notify = (): void => {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  /** The next message; undefined at the end of the request. */
  async next(): Promise<GrpcFrame | undefined> {
    for (;;) {
      const frame = this.frames.shift()
      if (frame != null) return frame
      if (this.failure !== undefined) throw this.failure
      while (this.frames.length === 0) {
        const chunk = this.stream.read() as Buffer | null
        if (chunk == null) break
        this.frames.push(...this.parser.push(chunk))
      }
      if (this.frames.length > 0) continue
      if (this.ended) {
        if (this.parser.partial) throw new StargateError(Code.Internal, 'the request ended in the middle of a message')
        return undefined
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve
      })
    }
  }
}
