import { createServer as createHttpServer, type Server as HttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import {
  constants,
  createServer as createHttp2Server,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2'
import type { AddressInfo } from 'node:net'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import type { DescMethod, DescService } from '@bufbuild/protobuf'
import { type ConnectRouter, createConnectRouter, type HandlerContext, type ServiceImpl } from '@connectrpc/connect'
import type { UniversalHandler } from '@connectrpc/connect/protocol'
import { codeToHttpStatus } from '@connectrpc/connect/protocol-connect'
import { compressionBrotli, compressionGzip, connectNodeAdapter } from '@connectrpc/connect-node'
import { type Clock, systemClock } from '../clock.ts'
import { Code, StargateError } from '../errors.ts'
import { Health } from '../gen/grpc/health/v1/health_pb.js'
import { ServerReflection as ReflectionV1 } from '../gen/grpc/reflection/v1/reflection_pb.js'
import { ServerReflection as ReflectionV1alpha } from '../gen/grpc/reflection/v1alpha/reflection_pb.js'
import type { Logger } from '../log.ts'
import { requestUrl, serveUniversal, webHeaders } from './connect-h2.ts'
import { CorsPolicy } from './cors.ts'
import {
  type AnyMethodImpl,
  type CheckedGate,
  type GateRequest,
  type GrpcRoute,
  type RequestGate,
  respondWithStatus,
  serveGrpc,
} from './grpc-handler.ts'
import { HEALTH_SERVICE, HealthService } from './health.ts'
import { DescriptorIndex, REFLECTION_V1, REFLECTION_V1ALPHA, reflectionImpls } from './reflection.ts'
import { type WebErrorResponse, webErrorResponse } from './web-error.ts'
import { grpcSubtype } from './wire.ts'

export type { AnyMethodImpl, GateRequest, RequestGate } from './grpc-handler.ts'

/** Wraps every method implementation of the registered services (server spans), on every protocol. */
export type MethodMiddleware = (service: DescService, method: DescMethod, impl: AnyMethodImpl) => AnyMethodImpl

/**
 * Serves a gRPC request (HTTP/2) for a path this server does not serve, after the request gate let it
 * through: a tunnel. It owns the stream and must answer it. headers and rawHeaders are as node:http2's
 * 'stream' event gives them (rawHeaders keeps repeated metadata entries apart).
 */
export type UnknownServiceHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[]) => void

/**
 * Serves a Connect or gRPC-Web request for a path this server does not serve, after the request gate let
 * it through, on HTTP/2 (`stream`, with `responseHeaders` to add to the response: CORS) or HTTP/1.1 (`http1`).
 * It owns the request and must answer it.
 */
export type UnknownWebHandler = (
  request:
    | { stream: ServerHttp2Stream; headers: IncomingHttpHeaders; rawHeaders: string[]; responseHeaders: Record<string, string> }
    | { http1: { req: IncomingMessage; res: ServerResponse } },
) => void

/** A request the request gate refused, as it is recorded (the API server's telemetry). */
export interface RefusedRequest extends GateRequest {
  /** The URL the request was sent to (scheme://authority/path), as HandlerContext.url. */
  url: string
  /** The protocol it came in: grpc, grpc-web or connect (as HandlerContext.protocolName). */
  protocolName: string
  /** The gate's error: the status the client got (UNAUTHENTICATED, PERMISSION_DENIED). */
  error: unknown
  /** When the gate was asked (performance.now()). */
  startedAtMs: number
}

/** Told of every request the gate refused: any protocol, local methods and tunnels alike. */
export type RefusalObserver = (refused: RefusedRequest) => void

/** A service and its implementation. */
export interface ServiceRegistration {
  service: DescService
  /** A (partial) connect-es ServiceImpl of `service`; missing methods answer UNIMPLEMENTED. */
  impl: object
}

/** Every default of the API server. */
export const API_SERVER_DEFAULTS = {
  /** Largest request message accepted (RESOURCE_EXHAUSTED beyond). */
  maxReceiveMessageBytes: 8 * 1024 * 1024,
  /**
   * Streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); gRPC clients
   * queue calls beyond it. It bounds what one connection can make the server hold: per stream, the message
   * being read (up to maxReceiveMessageBytes) or, for a stream nobody reads, its 64 KiB HTTP/2 window.
   */
  maxConcurrentStreams: 100,
  /** Largest header block a client may send (SETTINGS_MAX_HEADER_LIST_SIZE). */
  maxHeaderListBytes: 64 * 1024,
  /** When stop() cancels the calls left after the grace, how long their statuses get to reach the clients. */
  cancelFlushMs: 250,
  /** How long a browser may cache a CORS preflight answer (Access-Control-Max-Age; Chromium caps it at 2 h). */
  corsMaxAgeSeconds: 7200,
} as const

export interface ApiServerOptions {
  services: ServiceRegistration[]
  /** Serialized FileDescriptorSets (with source info) served by reflection. */
  descriptorSets: Uint8Array[]
  log: Logger
  middleware?: MethodMiddleware[]
  /** Runs before every request (local on any protocol, or tunnelled); throws to refuse it. Auth goes here. */
  gate?: RequestGate
  /**
   * Records what the gate refused (a refused call never reaches the middleware): rpcServerRefusals gives it
   * the SERVER span and rpc.server.call.duration of a call.
   */
  onRefused?: RefusalObserver
  /**
   * gRPC requests for services not served here, and reflection requests that carry a `stargate-peer`
   * header. Default: UNIMPLEMENTED naming the method.
   */
  unknownService?: UnknownServiceHandler
  /** Connect and gRPC-Web requests for services not served here (HTTP/2 and HTTP/1.1). Default: HTTP 404. */
  unknownWeb?: UnknownWebHandler
  /** Serve TLS (and mTLS) instead of plaintext; every protocol shares the TLS port. */
  tls?: ApiTlsOptions
  maxReceiveMessageBytes?: number
  /** Largest response message sent (RESOURCE_EXHAUSTED beyond); default maxReceiveMessageBytes. */
  maxSendMessageBytes?: number
  maxConcurrentStreams?: number
  /**
   * Origins whose web pages may call the API with Connect and gRPC-Web (CORS, see cors.ts); `*` allows all.
   * Empty or absent: no CORS headers, preflights are not answered.
   */
  corsAllowOrigins?: readonly string[]
  /** Times the gRPC calls' deadlines (grpc-timeout); default the system clock. */
  clock?: Clock
}

/** TLS of the API port. */
export interface ApiTlsOptions {
  /** Server certificate chain (PEM). */
  certPem: string | Uint8Array
  /** Server private key (PEM). */
  keyPem: string | Uint8Array
  /** CA bundle (PEM) that client certificates must chain to; required with requireClientCert. */
  caPem?: string | Uint8Array
  /** mTLS: refuse connections without a client certificate signed by caPem. */
  requireClientCert?: boolean
}

/** Reflection services: a request carrying this header is for the named peer's backends, not for us. */
const PEER_HEADER = 'stargate-peer'
const REFLECTION_SERVICES = new Set([REFLECTION_V1, REFLECTION_V1ALPHA])

/**
 * The API port: gRPC, Connect and gRPC-Web on one TCP port (TLS optional). The first bytes of a connection
 * pick the stack: the HTTP/2 preface goes to our node:http2 server, anything else to connect-node's HTTP/1.1
 * handler (Connect and gRPC-Web). On HTTP/2 every stream is dispatched on its own: application/grpc for a
 * local method → the gRPC handler (grpc-handler.ts); for any other service → the unknownService hook (the
 * gateway's tunnels); Connect and gRPC-Web → connect-es. One set of connect-es ServiceImpls serves every
 * protocol, including grpc.health.v1 and server reflection v1/v1alpha.
 */
export class ApiServer {
  readonly health: HealthService
  private readonly log: Logger
  private readonly gate: CheckedGate | undefined
  private readonly unknownService: UnknownServiceHandler
  private readonly unknownWeb?: UnknownWebHandler
  private readonly cors: CorsPolicy | undefined
  private readonly grpcOptions: Parameters<typeof serveGrpc>[4]
  /** gRPC routes: "/pkg.Service/Method" → the method. */
  private readonly routes = new Map<string, GrpcRoute>()
  /** Services served here (a missing method of one is UNIMPLEMENTED, not tunnelled). */
  private readonly localServices = new Set<string>()
  /** Connect and gRPC-Web on HTTP/2: request path → connect-es handler. */
  private readonly connectHandlers = new Map<string, UniversalHandler>()
  private readonly h2Server: Http2Server
  private readonly httpServer: HttpServer
  private readonly netServer: NetServer
  private readonly shutdown = new AbortController()
  private readonly sessions = new Set<ServerHttp2Session>()
  private readonly sockets = new Set<Socket>()
  private tlsEnabled = false
  private draining = false
  private stopping = false

  constructor(options: ApiServerOptions) {
    this.log = options.log
    this.gate = checkedGate(options.gate, options.onRefused)
    this.unknownService = options.unknownService ?? unimplemented
    this.unknownWeb = options.unknownWeb
    const origins = options.corsAllowOrigins ?? []
    this.cors = origins.length > 0 ? new CorsPolicy(origins, API_SERVER_DEFAULTS.corsMaxAgeSeconds) : undefined
    if (this.cors?.allowsAnyOrigin === true && this.gate == null) {
      this.log.warn(
        'CORS allows every origin (*) and the API needs no token: any web page opened on a machine that reaches this port can call it',
      )
    }
    const maxReceive = options.maxReceiveMessageBytes ?? API_SERVER_DEFAULTS.maxReceiveMessageBytes
    const maxSend = options.maxSendMessageBytes ?? maxReceive
    this.grpcOptions = {
      maxReceiveMessageBytes: maxReceive,
      maxSendMessageBytes: maxSend,
      shutdownSignal: this.shutdown.signal,
      clock: options.clock ?? systemClock,
      gate: this.gate,
      log: this.log,
    }

    const names = options.services.map((s) => s.service.typeName)
    this.health = new HealthService(names)
    const reflection = reflectionImpls(new DescriptorIndex(options.descriptorSets), () => [...names, HEALTH_SERVICE])
    const served: Array<{ service: DescService; impl: Record<string, AnyMethodImpl> }> = [
      ...options.services.map(({ service, impl }) => ({ service, impl: wrapImpl(service, impl, options.middleware ?? []) })),
      // Health and reflection are not wrapped: no span per probe (as before).
      { service: Health, impl: this.health.impl() as unknown as Record<string, AnyMethodImpl> },
      { service: ReflectionV1, impl: reflection.v1 as unknown as Record<string, AnyMethodImpl> },
      { service: ReflectionV1alpha, impl: reflection.v1alpha as unknown as Record<string, AnyMethodImpl> },
    ]
    for (const { service, impl } of served) {
      this.localServices.add(service.typeName)
      for (const method of service.methods) {
        const fn = impl[method.localName]
        if (fn != null) this.routes.set(`/${service.typeName}/${method.name}`, { service, method, impl: fn })
      }
    }

    const gate = this.gate
    const connectOptions = {
      readMaxBytes: maxReceive,
      writeMaxBytes: maxSend,
      shutdownSignal: this.shutdown.signal,
      acceptCompression: [compressionGzip, compressionBrotli],
      ...(gate != null
        ? {
            requestGate: (ctx: HandlerContext): void =>
              gate({ service: ctx.service.typeName, method: ctx.method.name, header: ctx.requestHeader, tunnelled: false }, ctx),
          }
        : {}),
    }
    const register = (router: ConnectRouter): void => {
      for (const { service, impl } of served) router.service(service, impl as unknown as Partial<ServiceImpl<DescService>>)
    }
    // HTTP/2: Connect and gRPC-Web only (gRPC never reaches connect-es).
    const h2Router = createConnectRouter({ ...connectOptions, grpc: false })
    register(h2Router)
    for (const h of h2Router.handlers) this.connectHandlers.set(h.requestPath, h)
    const unknownWeb = options.unknownWeb
    const connectListener = connectNodeAdapter({
      ...connectOptions,
      routes: register,
      // Only the HTTP/1.1 server uses this adapter: its requests are IncomingMessages.
      ...(unknownWeb != null
        ? { fallback: (req: unknown, res: unknown) => this.serveUnknownHttp1(req as IncomingMessage, res as ServerResponse) }
        : {}),
    })
    const cors = this.cors
    this.httpServer = createHttpServer(
      cors == null
        ? connectListener
        : (req, res) => {
            const origin = req.headers.origin
            const preflight = cors.preflight(req.method, origin, req.headers['access-control-request-method'])
            if (preflight != null) {
              res.writeHead(204, preflight).end()
              return
            }
            for (const [name, value] of Object.entries(cors.response(origin))) res.setHeader(name, value)
            connectListener(req, res)
          },
    )

    this.h2Server = createHttp2Server({
      settings: {
        maxConcurrentStreams: options.maxConcurrentStreams ?? API_SERVER_DEFAULTS.maxConcurrentStreams,
        maxHeaderListSize: API_SERVER_DEFAULTS.maxHeaderListBytes,
      },
    })
    this.h2Server.on('session', (session: ServerHttp2Session) => {
      this.sessions.add(session)
      session.once('close', () => this.sessions.delete(session))
      session.on('error', (err) => this.log.debug('api HTTP/2 session error', { err }))
      if (this.stopping) session.close()
    })
    this.h2Server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) =>
      this.dispatch(stream, headers, rawHeaders),
    )
    this.netServer = options.tls == null ? createNetServer((socket) => this.route(socket)) : this.createTlsServer(options.tls)
  }

  /** True when the API port speaks TLS. */
  get secure(): boolean {
    return this.tlsEnabled
  }

  private createTlsServer(tls: ApiTlsOptions): NetServer {
    const mtls = tls.requireClientCert === true
    if (mtls && tls.caPem == null) {
      throw new StargateError(Code.InvalidArgument, 'TLS client certificates are required but no client CA was given')
    }
    this.tlsEnabled = true
    const server = createTlsServer(
      {
        cert: toPem(tls.certPem),
        key: toPem(tls.keyPem),
        ...(tls.caPem != null ? { ca: toPem(tls.caPem) } : {}),
        requestCert: mtls,
        rejectUnauthorized: mtls,
        // h2 for gRPC clients (grpc-go requires it to be negotiated) and browsers, http/1.1 for the rest.
        ALPNProtocols: ['h2', 'http/1.1'],
        minVersion: 'TLSv1.2',
      },
      // Decrypted connections are routed by their first bytes, exactly like plaintext ones.
      (socket) => this.route(socket),
    )
    server.on('tlsClientError', (err, socket) => {
      this.log.debug('api TLS handshake failed', { err, remote: socket.remoteAddress })
    })
    return server
  }

  /** Binds the port; port 0 picks a free one. Resolves to the bound address. */
  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.netServer.once('error', reject)
      this.netServer.listen({ host, port }, () => {
        this.netServer.off('error', reject)
        resolve()
      })
    })
    const addr = this.netServer.address() as AddressInfo
    return { host: addr.address, port: addr.port }
  }

  /**
   * Stops accepting: reports NOT_SERVING and closes the listener (new connections are refused). Calls in
   * flight go on, and open connections may still start calls until stop() tells them to go away.
   */
  drain(): void {
    if (this.draining) return
    this.draining = true
    this.health.setAllNotServing()
    this.netServer.close()
    this.httpServer.close()
    this.httpServer.closeIdleConnections()
  }

  /**
   * Graceful stop: drain, tell every HTTP/2 connection to go away (GOAWAY: no new streams, the ones open
   * finish), wait up to graceMs for the connections to close, then cancel what is left (handlers see their
   * context signal abort; clients get UNAVAILABLE) and close every connection.
   */
  async stop(graceMs: number): Promise<void> {
    this.drain()
    this.stopping = true
    for (const session of this.sessions) session.close()
    this.httpServer.closeIdleConnections()
    await this.socketsClosed(graceMs)
    this.shutdown.abort(new StargateError(Code.Unavailable, 'the server is shutting down'))
    await this.socketsClosed(API_SERVER_DEFAULTS.cancelFlushMs)
    for (const session of this.sessions) session.destroy()
    this.httpServer.closeAllConnections()
    for (const socket of this.sockets) socket.destroy()
  }

  private async socketsClosed(timeoutMs: number): Promise<void> {
    if (this.sockets.size === 0) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs)
      timer.unref()
      const check = (): void => {
        if (this.sockets.size === 0) done()
      }
      const listeners = [...this.sockets].map((socket) => {
        const onClose = (): void => {
          setImmediate(check)
        }
        socket.once('close', onClose)
        return () => socket.off('close', onClose)
      })
      function done(): void {
        clearTimeout(timer)
        for (const off of listeners) off()
        resolve()
      }
    })
  }

  private route(socket: Socket): void {
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
    socket.on('error', (err) => this.log.debug('api socket error', { err }))
    let head = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk])
      if (head.length < 3) return
      socket.off('data', onData)
      socket.pause()
      socket.unshift(head)
      if (head.subarray(0, 3).toString('latin1') === 'PRI') {
        // The HTTP/2 session reads the buffered bytes itself and must not be resumed here.
        this.h2Server.emit('connection', socket)
      } else {
        this.httpServer.emit('connection', socket)
        // The HTTP/1.1 parser reads through the stream API: let the unshifted bytes flow.
        socket.resume()
      }
    }
    socket.on('data', onData)
  }

  /** One HTTP/2 stream: a local gRPC method, a tunnel, or Connect / gRPC-Web. */
  private dispatch(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[]): void {
    stream.on('error', (err) => this.log.debug('api HTTP/2 stream error', { err, path: headers[':path'] }))
    const path = headers[':path'] ?? ''
    try {
      const preflight = this.cors?.preflight(headers[':method'], headers.origin, headers['access-control-request-method'])
      if (preflight != null) {
        stream.respond({ ':status': 204, ...preflight }, { endStream: true })
        return
      }
      const subtype = grpcSubtype(headers['content-type'])
      if (subtype === undefined) {
        this.serveConnect(stream, headers, rawHeaders, path)
        return
      }
      if (headers[':method'] !== 'POST') {
        stream.respond({ ':status': 405, allow: 'POST' }, { endStream: true })
        return
      }
      const slash = path.indexOf('/', 1)
      const service = slash > 0 ? path.slice(1, slash) : path.slice(1)
      const method = slash > 0 ? path.slice(slash + 1) : ''
      const passthrough = REFLECTION_SERVICES.has(service) && headers[PEER_HEADER] != null
      const route = passthrough ? undefined : this.routes.get(path)
      if (route != null) {
        serveGrpc(stream, headers, route, subtype, this.grpcOptions)
        return
      }
      if (this.localServices.has(service) && !passthrough) {
        respondWithStatus(stream, new StargateError(Code.Unimplemented, `method ${method} of ${service} is not implemented here`))
        return
      }
      this.gate?.(
        { service, method, header: webHeaders(headers), tunnelled: true },
        { url: requestUrl(stream, headers), protocolName: 'grpc' },
      )
      this.unknownService(stream, headers, rawHeaders)
    } catch (err: unknown) {
      respondWithStatus(stream, err)
    }
  }

  /**
   * An HTTP/1.1 request connect-node has no route for: the gate, then the unknownWeb hook. A refusal is
   * answered in the request's protocol (the CORS headers are already set on `res`).
   */
  private serveUnknownHttp1(req: IncomingMessage, res: ServerResponse): void {
    try {
      const { service, method } = splitPath((req.url ?? '').split('?')[0] ?? '')
      const secure = (req.socket as { encrypted?: boolean }).encrypted === true
      const url = req.headers.host != null ? `${secure ? 'https' : 'http'}://${req.headers.host}${req.url ?? '/'}` : (req.url ?? '/')
      this.gate?.(
        { service, method, header: webHeaders(req.headers), tunnelled: true },
        { url, protocolName: webProtocol(req.headers['content-type']) },
      )
      this.unknownWeb?.({ http1: { req, res } })
    } catch (err: unknown) {
      if (res.headersSent) {
        res.destroy()
        return
      }
      const r = webRefusal(req.headers['content-type'], err)
      res.writeHead(r.status, r.headers).end(r.body)
    }
  }

  private serveConnect(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[], path: string): void {
    const query = path.indexOf('?')
    const handler = this.connectHandlers.get(query < 0 ? path : path.slice(0, query))
    const cors = this.cors?.response(headers.origin)
    if (handler == null) {
      if (this.unknownWeb != null) {
        const { service, method } = splitPath(query < 0 ? path : path.slice(0, query))
        try {
          this.gate?.(
            { service, method, header: webHeaders(headers), tunnelled: true },
            { url: requestUrl(stream, headers), protocolName: webProtocol(headers['content-type']) },
          )
        } catch (err: unknown) {
          const r = webRefusal(headers['content-type'], err)
          stream.respond({ ':status': r.status, ...cors, ...r.headers }, { endStream: r.body == null })
          if (r.body != null) stream.end(r.body)
          return
        }
        this.unknownWeb({ stream, headers, rawHeaders, responseHeaders: { ...cors } })
        return
      }
      stream.respond({ ':status': 404, ...cors }, { endStream: true })
      return
    }
    serveUniversal(handler, stream, headers, cors).catch((err: unknown) => {
      this.log.debug('api Connect/gRPC-Web request failed', { err, path })
      if (!stream.destroyed) stream.close(constants.NGHTTP2_INTERNAL_ERROR)
    })
  }
}

/** The gate, telling `onRefused` of what it refuses (the refusal still goes to the client). */
function checkedGate(gate: RequestGate | undefined, onRefused: RefusalObserver | undefined): CheckedGate | undefined {
  if (gate == null) return undefined
  return (request, call) => {
    const startedAtMs = performance.now()
    try {
      gate(request)
    } catch (err: unknown) {
      onRefused?.({ ...request, url: call.url, protocolName: call.protocolName, error: err, startedAtMs })
      throw err
    }
  }
}

/** The protocol of a web request for a path not served here, by its content type (as connect-es names them). */
function webProtocol(contentType: string | undefined): string {
  return /^application\/grpc-web/i.test(contentType ?? '') ? 'grpc-web' : 'connect'
}

/** "/pkg.Service/Method" → its service and method. */
function splitPath(path: string): { service: string; method: string } {
  const slash = path.indexOf('/', 1)
  return slash > 0 ? { service: path.slice(1, slash), method: path.slice(slash + 1) } : { service: path.slice(1), method: '' }
}

/**
 * The answer to a Connect or gRPC-Web request the request gate refused, in the request's protocol (the
 * HTTP status of the code, without a body, when it is neither).
 */
function webRefusal(contentType: string | undefined, err: unknown): WebErrorResponse {
  const e = StargateError.from(err, Code.Internal)
  return webErrorResponse(contentType ?? '', e) ?? { status: codeToHttpStatus(e.code), headers: {} }
}

/** The default unknownService: nothing here serves the path. */
function unimplemented(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
  const path = headers[':path'] ?? ''
  respondWithStatus(stream, new StargateError(Code.Unimplemented, `method ${path.slice(1)} is not served here (unknown service)`))
}

function wrapImpl(service: DescService, impl: object, middleware: MethodMiddleware[]): Record<string, AnyMethodImpl> {
  const out: Record<string, AnyMethodImpl> = {}
  for (const method of service.methods) {
    const base = (impl as Record<string, AnyMethodImpl | undefined>)[method.localName]
    if (base == null) continue
    let fn: AnyMethodImpl = base.bind(impl)
    for (const mw of [...middleware].reverse()) fn = mw(service, method, fn)
    out[method.localName] = fn
  }
  return out
}

function toPem(pem: string | Uint8Array): string | Buffer {
  return typeof pem === 'string' ? pem : Buffer.from(pem)
}
