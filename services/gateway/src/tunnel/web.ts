import { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2'
import { Code, StargateError } from '@stargate/shared/errors'
import type { UnknownWebHandler } from '@stargate/shared/grpc/server'
import { webErrorResponse } from '@stargate/shared/grpc/web-error'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import type { IngressStream, TunnelIngress } from './ingress.ts'

/**
 * Connect and gRPC-Web requests for tunnelled services.
 *
 * gRPC-Web (binary: application/grpc-web, application/grpc-web+proto) is translated, on HTTP/2 and on
 * HTTP/1.1, without buffering: its messages have gRPC's framing, so request and response bytes pass as
 * they are; only the trailers differ — gRPC-Web sends them as a last message-framed block (flag 0x80) in
 * the body — and the content types. The ingress serves such a request through an adapter that behaves like
 * a gRPC HTTP/2 stream, and forwards none of the headers that only describe the browser side (x-grpc-web,
 * origin, sec-fetch-*...: wire.ts).
 *
 * Connect (application/proto, application/json, application/connect+*), gRPC-Web text (base64) and
 * gRPC-Web JSON are answered UNIMPLEMENTED in their own protocol (a Connect stream's error in its end-stream
 * message, so a client reads the message too), with a message naming what works: the
 * backend speaks gRPC with its own codec, and translating those would mean decoding text or JSON against a
 * schema the gateway does not have (or, for Connect unary, holding each response until its trailers).
 */

const GRPC_WEB = /^application\/grpc-web(\+proto)?(;|$)/i
const GRPC_WEB_OTHER = /^application\/grpc-web(-text|\+json)/i
const CONTENT_TYPE = 'content-type'

/** True for a gRPC-Web request in the binary protobuf encoding (the one translated). */
export function isGrpcWebBinary(contentType: string | undefined): boolean {
  return contentType != null && GRPC_WEB.test(contentType)
}

/** The gRPC content type of a gRPC-Web one (for the backend), and back (for the client). */
function toGrpc(value: string): string {
  return value.replace(/^application\/grpc-web/i, 'application/grpc')
}

function toGrpcWeb(value: string): string {
  return value.replace(/^application\/grpc(?!-web)/i, 'application/grpc-web')
}

/** A raw header list with every content-type value mapped. */
function mapContentType(raw: readonly string[], map: (v: string) => string): string[] {
  const out = [...raw]
  for (let i = 0; i + 1 < out.length; i += 2) if (out[i]!.toLowerCase() === CONTENT_TYPE) out[i + 1] = map(out[i + 1]!)
  return out
}

/** The flag of gRPC-Web's trailers block. */
const TRAILERS_FLAG = 0x80

/** The gRPC-Web trailers block: flag 0x80, length, then "key: value\r\n" lines. */
function trailersFrame(trailers: Record<string, string | string[]>): Uint8Array {
  let text = ''
  for (const [key, value] of Object.entries(trailers)) {
    for (const v of Array.isArray(value) ? value : [value]) text += `${key.toLowerCase()}: ${v}\r\n`
  }
  return encodeFrame(Buffer.from(text, 'latin1'), TRAILERS_FLAG)
}

/** What a gRPC-Web adapter writes to: an HTTP/2 stream or an HTTP/1.1 response. */
interface WebResponse {
  /** Sends the status line and headers (":status" in the raw list), ending the response when `end`. */
  head(raw: string[], end: boolean): void
  write(chunk: Uint8Array): boolean
  end(last?: Uint8Array): void
  destroy(): void
  readonly destroyed: boolean
  readonly closed: boolean
}

/**
 * A gRPC-Web request as the ingress sees a gRPC stream: request events from the client's request (attached
 * only when the ingress listens, so nothing is read before), response headers with the gRPC-Web content
 * type, trailers written as the last block of the body.
 */
class GrpcWebStream implements IngressStream {
  private readonly request: EventEmitter & { pause(): unknown; resume(): unknown }
  private readonly response: WebResponse
  /** Where 'close' and 'drain' come from (the HTTP/2 stream, or the HTTP/1.1 response). */
  private readonly responseEvents: EventEmitter
  private readonly extraHeaders: readonly string[]
  private readonly own = new EventEmitter()
  private wantsTrailers = false

  constructor(
    request: EventEmitter & { pause(): unknown; resume(): unknown },
    response: WebResponse,
    responseEvents: EventEmitter,
    extraHeaders: readonly string[],
  ) {
    this.request = request
    this.response = response
    this.responseEvents = responseEvents
    this.extraHeaders = extraHeaders
  }

  private source(event: string): EventEmitter {
    if (event === 'close' || event === 'drain') return this.responseEvents
    if (event === 'wantTrailers') return this.own
    return this.request
  }

  on(event: string, listener: Parameters<EventEmitter['on']>[1]): this {
    this.source(event).on(event, listener)
    return this
  }

  once(event: string, listener: Parameters<EventEmitter['on']>[1]): this {
    this.source(event).once(event, listener)
    return this
  }

  off(event: string, listener: Parameters<EventEmitter['on']>[1]): this {
    this.source(event).off(event, listener)
    return this
  }

  get destroyed(): boolean {
    return this.response.destroyed
  }

  get closed(): boolean {
    return this.response.closed
  }

  pause(): unknown {
    return this.request.pause()
  }

  resume(): unknown {
    return this.request.resume()
  }

  respond(headers: string[], options: { waitForTrailers?: boolean; endStream?: boolean }): void {
    this.wantsTrailers = options.waitForTrailers === true
    this.response.head([...mapContentType(headers, toGrpcWeb), ...this.extraHeaders], options.endStream === true)
  }

  write(chunk: Uint8Array): boolean {
    return this.response.write(chunk)
  }

  /** The end of the response data: the ingress is asked for the trailers, which end the body. */
  end(): void {
    if (this.wantsTrailers) this.own.emit('wantTrailers')
    else this.response.end()
  }

  sendTrailers(trailers: Record<string, string | string[]>): void {
    this.response.end(trailersFrame(trailers))
  }

  close(): void {
    this.response.destroy()
  }
}

/** A gRPC-Web request on HTTP/2: the stream, its headers with the gRPC content type for the backend. */
export function grpcWebOnHttp2(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  rawHeaders: readonly string[],
  responseHeaders: Record<string, string>,
): { stream: IngressStream; headers: IncomingHttpHeaders; rawHeaders: string[] } {
  const response: WebResponse = {
    head: (raw, end) => stream.respond(raw, { endStream: end }),
    write: (chunk) => stream.write(chunk),
    end: (last) => (last != null ? stream.end(last) : stream.end()),
    destroy: () => stream.close(),
    get destroyed() {
      return stream.destroyed
    },
    get closed() {
      return stream.closed
    },
  }
  const extra = Object.entries(responseHeaders).flat()
  return {
    stream: new GrpcWebStream(stream, response, stream, extra),
    headers: { ...headers, [CONTENT_TYPE]: toGrpc(String(headers[CONTENT_TYPE])) },
    rawHeaders: mapContentType(rawHeaders, toGrpc),
  }
}

/** A gRPC-Web request on HTTP/1.1 (headers already carry any CORS headers the server set). */
export function grpcWebOnHttp1(
  req: IncomingMessage,
  res: ServerResponse,
): { stream: IngressStream; headers: IncomingHttpHeaders; rawHeaders: string[] } {
  const response: WebResponse = {
    head: (raw, end) => {
      let status = 200
      const headers: Array<[string, string]> = []
      for (let i = 0; i + 1 < raw.length; i += 2) {
        if (raw[i] === ':status') status = Number(raw[i + 1])
        else headers.push([raw[i]!, raw[i + 1]!])
      }
      res.writeHead(status, headers.flat())
      if (end) res.end()
    },
    write: (chunk) => res.write(chunk),
    end: (last) => (last != null ? res.end(last) : res.end()),
    destroy: () => res.destroy(),
    // Not req.destroyed: a request is destroyed once its body was read, with the response still to write.
    get destroyed() {
      return res.destroyed
    },
    get closed() {
      return res.writableEnded
    },
  }
  return {
    stream: new GrpcWebStream(req, response, res, []),
    headers: {
      ...req.headers,
      ':method': req.method ?? '',
      ':path': req.url ?? '',
      [CONTENT_TYPE]: toGrpc(req.headers[CONTENT_TYPE] ?? ''),
    },
    rawHeaders: mapContentType(req.rawHeaders, toGrpc),
  }
}

/** The message of a request in a protocol the tunnel does not translate. */
function notTranslated(path: string, contentType: string): string {
  const slash = path.indexOf('/', 1)
  const service = slash > 0 ? path.slice(1, slash) : path.slice(1)
  return (
    `${service} is tunnelled to another gateway, and tunnelled calls are carried as gRPC or gRPC-Web (binary): ` +
    `content-type ${JSON.stringify(contentType)} (Connect, gRPC-Web text or JSON) is not translated; ` +
    'call it with a gRPC client, or a gRPC-Web client using application/grpc-web+proto'
  )
}

/** Answers a Connect, gRPC-Web text or JSON request for a tunnelled service UNIMPLEMENTED, in its protocol. */
function answerNotTranslated(send: WebSend, path: string, contentType: string): void {
  const r = webErrorResponse(contentType, new StargateError(Code.Unimplemented, notTranslated(path, contentType)))
  if (r == null) send(404, {})
  else send(r.status, r.headers, r.body)
}

/** Sends a whole response: status, headers and an optional body. */
type WebSend = (code: number, headers: Record<string, string>, body?: Uint8Array) => void

/** How the ingress takes a translated gRPC-Web request: without the headers that only describe the browser side. */
const FROM_BROWSER = { fromBrowser: true } as const

/** Content types of Connect requests (unary and streaming). */
const CONNECT = /^application\/(proto|json|connect\+)/i

/**
 * The API server's hook for Connect and gRPC-Web requests to services it does not serve: gRPC-Web binary
 * goes through the ingress; Connect, gRPC-Web text and JSON get UNIMPLEMENTED; anything else a 404.
 */
export function webIngress(ingress: TunnelIngress): UnknownWebHandler {
  return (r) => {
    if ('http1' in r) {
      const { req, res } = r.http1
      const contentType = req.headers[CONTENT_TYPE] ?? ''
      if (req.method === 'POST' && isGrpcWebBinary(contentType)) {
        const web = grpcWebOnHttp1(req, res)
        void ingress.handle(web.stream, web.headers, web.rawHeaders, FROM_BROWSER)
        return
      }
      answer(contentType, req.url ?? '', (code, headers, body) => {
        res.writeHead(code, headers)
        res.end(body)
      })
      return
    }
    const { stream, headers, rawHeaders, responseHeaders } = r
    const contentType = String(headers[CONTENT_TYPE] ?? '')
    if (headers[':method'] === 'POST' && isGrpcWebBinary(contentType)) {
      const web = grpcWebOnHttp2(stream, headers, rawHeaders, responseHeaders)
      void ingress.handle(web.stream, web.headers, web.rawHeaders, FROM_BROWSER)
      return
    }
    answer(contentType, String(headers[':path'] ?? ''), (code, h, body) => {
      stream.respond({ ':status': code, ...responseHeaders, ...h }, { endStream: body == null })
      if (body != null) stream.end(body)
    })
  }
}

function answer(contentType: string, path: string, send: WebSend): void {
  if (GRPC_WEB_OTHER.test(contentType) || CONNECT.test(contentType)) answerNotTranslated(send, path, contentType)
  else send(404, {})
}
