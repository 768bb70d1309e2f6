import { readFileSync } from 'node:fs'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { create, type DescMessage, type DescMethod, type DescService, fromBinary, toBinary } from '@bufbuild/protobuf'
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt'
import { createContextKey, createHandlerContext, type HandlerContext, type ServiceImpl } from '@connectrpc/connect'
import { connectNodeAdapter } from '@connectrpc/connect-node'
import * as grpc from '@grpc/grpc-js'
import { ReflectionService } from '@grpc/reflection'
import { HealthImplementation } from 'grpc-health-check'
import { Code, StargateError } from '../errors.ts'
import type { Logger } from '../log.ts'

/** Any method implementation, in connect-es form (request or request stream, handler context). */
// biome-ignore lint/suspicious/noExplicitAny: method implementations are heterogeneous by design
export type AnyMethodImpl = (input: any, ctx: HandlerContext) => any

/** Wraps every method implementation; used for auth and server spans on both protocols at once. */
export type MethodMiddleware = (service: DescService, method: DescMethod, impl: AnyMethodImpl) => AnyMethodImpl

/** A service and its implementation. */
export interface ServiceRegistration {
  service: DescService
  /** A (partial) connect-es ServiceImpl of `service`; missing methods answer UNIMPLEMENTED. */
  impl: object
}

export interface ApiServerOptions {
  services: ServiceRegistration[]
  /** Serialized FileDescriptorSets (with source info) served by reflection. */
  descriptorSets: Uint8Array[]
  log: Logger
  middleware?: MethodMiddleware[]
  /**
   * grpc-js server interceptors. They see every gRPC call, including grpc.health.v1 and reflection
   * (which middleware does not wrap); Connect / gRPC-Web requests do not pass through them.
   */
  interceptors?: grpc.ServerInterceptor[]
  /** Serve TLS (and mTLS) instead of plaintext; both protocols share the TLS port. */
  tls?: ApiTlsOptions
  maxReceiveMessageBytes?: number
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

/**
 * Serves gRPC (grpc-js, HTTP/2) and Connect + gRPC-Web (connect-node, HTTP/1.1) on one TCP port.
 * The first bytes of a connection pick the stack: the HTTP/2 preface goes to grpc-js, anything
 * else to the HTTP/1.1 server. grpc-js was chosen for gRPC because it served ~2.8x the unary
 * requests per second of connect-node's HTTP/2 handler on the same machine (see BENCHMARKS.md),
 * and because grpc.health.v1 and reflection v1/v1alpha are maintained there.
 */
export class ApiServer {
  readonly health: HealthImplementation
  private readonly grpcServer: grpc.Server
  private readonly injector: grpc.ConnectionInjector
  private readonly httpServer: HttpServer
  private readonly netServer: NetServer
  private readonly shutdown = new AbortController()
  private readonly log: Logger
  private readonly sockets = new Set<Socket>()
  private tlsEnabled = false

  constructor(options: ApiServerOptions) {
    this.log = options.log
    const maxBytes = options.maxReceiveMessageBytes ?? 8 * 1024 * 1024
    this.grpcServer = new grpc.Server({
      'grpc.max_receive_message_length': maxBytes,
      'grpc.max_send_message_length': maxBytes,
      'grpc.keepalive_permit_without_calls': 1,
      ...(options.interceptors != null && options.interceptors.length > 0 ? { interceptors: options.interceptors } : {}),
    })
    const names: string[] = []
    const wrappedServices: Array<{ service: DescService; impl: Record<string, AnyMethodImpl> }> = []
    for (const { service, impl } of options.services) {
      const wrapped = wrapImpl(service, impl, options.middleware ?? [])
      addGrpcJsService(this.grpcServer, service, wrapped, this.shutdown.signal)
      wrappedServices.push({ service, impl: wrapped })
      names.push(service.typeName)
    }
    this.health = new HealthImplementation(Object.fromEntries([['', 'SERVING'], ...names.map((n) => [n, 'SERVING'])]))
    this.health.addToServer(this.grpcServer)
    const files: Buffer[] = []
    for (const set of options.descriptorSets) {
      for (const file of fromBinary(FileDescriptorSetSchema, set).file) {
        files.push(Buffer.from(toBinary(FileDescriptorProtoSchema, file)))
      }
    }
    const reflection = new ReflectionService(
      {
        descriptors: { fileDescriptorProtos: files, format: 'Protocol Buffer 3 DescriptorProto' },
      } as unknown as ConstructorParameters<typeof ReflectionService>[0],
      { services: [...names, 'grpc.health.v1.Health'] },
    )
    reflection.addToServer(this.grpcServer)
    // With TLS the connection is decrypted by our tls.Server before it reaches grpc-js, so grpc-js
    // always gets plaintext HTTP/2 (its injector runs the HTTP/2 session over the TLSSocket).
    this.injector = this.grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure())
    const handler = connectNodeAdapter({
      routes: (router) => {
        for (const { service, impl } of wrappedServices) router.service(service, impl as unknown as Partial<ServiceImpl<DescService>>)
      },
      readMaxBytes: maxBytes,
      shutdownSignal: this.shutdown.signal,
    })
    this.httpServer = createHttpServer(handler)
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
        // h2 for gRPC clients (grpc-go requires it to be negotiated), http/1.1 for Connect and gRPC-Web.
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

  private draining = false

  /**
   * Stops accepting: reports NOT_SERVING and closes the listener (new connections are refused). Calls in
   * flight go on; open connections are told to go away (GOAWAY) by stop(), once they are done.
   */
  drain(): void {
    if (this.draining) return
    this.draining = true
    this.health.setStatus('', 'NOT_SERVING')
    this.netServer.close()
    this.httpServer.close()
    this.httpServer.closeIdleConnections()
  }

  /**
   * Graceful stop: drain, tell open connections to go away once their calls are done (GOAWAY), wait
   * for them to close within graceMs, then cancel what is left (handlers see their context signal
   * abort) and close every connection.
   */
  async stop(graceMs: number): Promise<void> {
    this.drain()
    this.injector.drain(graceMs)
    this.httpServer.closeIdleConnections()
    if (this.sockets.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs)
        timer.unref()
        const check = (): void => {
          if (this.sockets.size > 0) return
          clearTimeout(timer)
          resolve()
        }
        for (const socket of this.sockets) socket.once('close', () => setImmediate(check))
      })
    }
    this.shutdown.abort(new StargateError(Code.Unavailable, 'server is shutting down'))
    this.grpcServer.forceShutdown()
    this.httpServer.closeAllConnections()
    this.injector.destroy()
    for (const socket of this.sockets) socket.destroy()
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
        this.injector.injectConnection(socket)
      } else {
        this.httpServer.emit('connection', socket)
        // The HTTP/1.1 parser reads through the stream API: let the unshifted bytes flow.
        // (The HTTP/2 session reads the buffered bytes itself and must not be resumed here.)
        socket.resume()
      }
    }
    socket.on('data', onData)
  }
}

function wrapImpl(service: DescService, impl: object, middleware: MethodMiddleware[]): Record<string, AnyMethodImpl> {
  const out: Record<string, AnyMethodImpl> = {}
  for (const method of service.methods) {
    const base = (impl as Record<string, AnyMethodImpl | undefined>)[method.localName]
    if (base == null) continue
    let fn: AnyMethodImpl = base
    for (const mw of [...middleware].reverse()) fn = mw(service, method, fn)
    out[method.localName] = fn
  }
  return out
}

function toGrpcStatus(err: unknown): Partial<grpc.StatusObject> {
  const e = StargateError.from(err)
  return { code: e.code as number as grpc.status, details: e.rawMessage, metadata: new grpc.Metadata() }
}

function metadataToHeaders(md: grpc.Metadata): Headers {
  const headers = new Headers()
  for (const [key, value] of Object.entries(md.getMap())) {
    headers.set(key, typeof value === 'string' ? value : value.toString('base64'))
  }
  return headers
}

function contextFor(
  service: DescService,
  method: DescMethod,
  call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  shutdownSignal: AbortSignal,
): ReturnType<typeof createHandlerContext> {
  const deadline = call.getDeadline()
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline
  const timeoutMs = Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : undefined
  const request = new AbortController()
  const ctx = createHandlerContext({
    service,
    method,
    protocolName: 'grpc',
    requestMethod: 'POST',
    url: `/${service.typeName}/${method.name}`,
    timeoutMs,
    shutdownSignal,
    requestSignal: request.signal,
    requestHeader: metadataToHeaders(call.metadata),
  })
  const onCancelled = (): void => request.abort(new StargateError(Code.Canceled, 'client cancelled the call'))
  call.once('cancelled', onCancelled)
  // Once the handler has settled: stop listening for 'cancelled' (grpc-js also emits it when a finished
  // call's stream closes) and release the context (its deadline timer and the listener it put on the
  // long-lived shutdown signal; without this every call leaks one listener there, and adding listeners
  // gets slower with each one). connect-node's own adapter does the same after every request.
  ctx.values.set(SETTLED, () => {
    call.off('cancelled', onCancelled)
    ctx.abort(CALL_SETTLED)
  })
  return ctx
}

/** The abort reason of a settled call's context (a constant: no DOMException per call). */
const CALL_SETTLED = new StargateError(Code.Canceled, 'the call has settled')

/** Context value: releases a call's context once its handler has settled. */
const SETTLED = createContextKey<() => void>(() => {}, { description: 'stargate.settled' })

function serializer(schema: DescMessage): (value: unknown) => Buffer {
  return (value) => {
    const msg = create(schema, value as Parameters<typeof create>[1])
    const bytes = toBinary(schema, msg)
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
}

function deserializer(schema: DescMessage): (bytes: Buffer) => unknown {
  return (bytes) => fromBinary(schema, bytes)
}

function addGrpcJsService(
  server: grpc.Server,
  service: DescService,
  impl: Record<string, AnyMethodImpl>,
  shutdownSignal: AbortSignal,
): void {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
  const handlers: grpc.UntypedServiceImplementation = {}
  for (const method of service.methods) {
    const fn = impl[method.localName]
    const requestStream = method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming'
    const responseStream = method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming'
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream,
      responseStream,
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
      originalName: method.name,
    }
    if (fn == null) {
      handlers[method.localName] = (_call: unknown, callback?: grpc.sendUnaryData<unknown>) => {
        const status = { code: grpc.status.UNIMPLEMENTED, details: `${method.name} is not served here` }
        if (callback != null) callback(status)
      }
      continue
    }
    if (method.methodKind === 'unary') {
      handlers[method.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>): void => {
        const ctx = contextFor(service, method, call, shutdownSignal)
        Promise.resolve()
          .then(() => fn(call.request, ctx))
          .then(
            (res: unknown) => callback(null, res),
            (err: unknown) => callback(toGrpcStatus(err)),
          )
          .finally(() => ctx.values.get(SETTLED)())
      }
    } else if (method.methodKind === 'bidi_streaming') {
      handlers[method.localName] = (call: grpc.ServerDuplexStream<unknown, unknown>): void => {
        const ctx = contextFor(service, method, call, shutdownSignal)
        const run = async (): Promise<void> => {
          const output = fn(call as AsyncIterable<unknown>, ctx) as AsyncIterable<unknown>
          for await (const msg of output) {
            if (!call.write(msg)) await new Promise<void>((resolve) => call.once('drain', resolve))
          }
          call.end()
        }
        run()
          .catch((err: unknown) => {
            if (!call.destroyed) call.emit('error', toGrpcStatus(err))
          })
          .finally(() => ctx.values.get(SETTLED)())
      }
    } else {
      throw new Error(`method kind ${method.methodKind} is not supported by the grpc-js adapter`)
    }
  }
  server.addService(definition as grpc.ServiceDefinition, handlers)
}

function toPem(pem: string | Uint8Array): string | Buffer {
  return typeof pem === 'string' ? pem : Buffer.from(pem)
}

/** Reads a FileDescriptorSet produced by `buf build`. */
export function readDescriptorSet(url: URL): Uint8Array {
  return readFileSync(url)
}
