import type { ClientHttp2Stream } from 'node:http2'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { Code, StargateError } from '@stargate/shared/errors'
import type { StreamOpen } from '@stargate/shared/gen/envelope'
import {
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from '@stargate/shared/gen/reflection'
import { decodeGrpcMessage, encodeFrame, FrameParser, formatGrpcTimeout, type GrpcFrame } from '@stargate/shared/grpc/wire'
import type { Logger } from '@stargate/shared/log'
import type { BackendPool } from './backends.ts'
import type { TunnelStatus } from './endpoint.ts'
import type { BackendTarget, ExposeTable } from './expose.ts'
import type { ServerStreamEvents } from './server.ts'
import { parseGrpcStatus } from './wire.ts'

/**
 * Server reflection for a callee gateway that exposes several backends: a grpc.reflection stream arriving
 * through the tunnel (the caller sent `stargate-peer`) is answered by asking the backends, one question at a
 * time — list_services from every backend, merged (each service listed by the backend its calls go to);
 * a symbol first from the backend that exposes the service it names, then from the others; a file or an
 * extension from each backend in turn until one has it. v1 and v1alpha have the same messages on the wire:
 * a question goes to the backends under the version the client used. With one backend, reflection is
 * forwarded as it is and this is not used.
 */

/** The reflection services. */
export const REFLECTION_SERVICES: ReadonlySet<string> = new Set([
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
])

/** Where the fan-out writes its answers (the egress sink). */
interface AnswerSink {
  write(data: Uint8Array): boolean
  close(code: number, message: string, trailers: []): void
}

export interface ReflectionFanOutOptions {
  expose: ExposeTable
  backends: BackendPool
  /** Largest message read or written. */
  maxMessageBytes: number
  /** One question to one backend fails (UNAVAILABLE) after this long. */
  questionTimeoutMs: number
  log: Logger
}

/** Requests read but not yet answered past which the caller's data is paused. */
const MAX_QUEUED = 4

/** One reflection stream answered by asking several backends. */
export class ReflectionFanOut implements ServerStreamEvents {
  private readonly sink: AnswerSink
  private readonly o: ReflectionFanOutOptions
  private readonly path: string
  private readonly targets: BackendTarget[]
  private readonly reader: FrameParser
  private readonly queue: ServerReflectionRequest[] = []
  private readonly inflight = new Set<ClientHttp2Stream>()
  private resumeRequests?: () => void
  private writable = true
  private wakeWritable?: () => void
  private requestEnded = false
  private working = false
  private done = false

  constructor(sink: AnswerSink, open: StreamOpen, options: ReflectionFanOutOptions, resume: () => void) {
    this.sink = sink
    this.o = options
    this.path = open.method
    this.targets = options.expose.targets
    this.reader = new FrameParser(options.maxMessageBytes)
    this.resumeRequests = resume
  }

  onData(data: Uint8Array): boolean {
    if (this.done) return true
    let messages: Uint8Array[]
    try {
      messages = messagesOf(this.reader.push(data))
    } catch (err: unknown) {
      const e = StargateError.from(err, Code.InvalidArgument)
      this.finish(e.code, e.rawMessage)
      return true
    }
    for (const m of messages) {
      try {
        this.queue.push(fromBinary(ServerReflectionRequestSchema, m))
      } catch (err: unknown) {
        this.finish(Code.InvalidArgument, `malformed server reflection request: ${StargateError.from(err).rawMessage}`)
        return true
      }
    }
    this.work()
    return this.queue.length < MAX_QUEUED
  }

  onEnd(): void {
    this.requestEnded = true
    this.work()
  }

  onWritable(): void {
    this.writable = true
    this.wakeWritable?.()
  }

  /** The stream ended under us (caller reset, deadline, link): stop asking. */
  onClose(_status: TunnelStatus): void {
    this.done = true
    for (const s of this.inflight) s.close()
  }

  private work(): void {
    if (this.working || this.done) return
    this.working = true
    this.drain()
      .catch((err: unknown) => {
        const e = StargateError.from(err, Code.Internal)
        this.finish(e.code, e.rawMessage)
      })
      .finally(() => {
        this.working = false
      })
  }

  private async drain(): Promise<void> {
    for (let req = this.queue.shift(); req != null && !this.done; req = this.queue.shift()) {
      this.resumeRequests?.()
      const res = await this.answer(req)
      if (this.done) return
      if (!this.writable) await new Promise<void>((resolve) => (this.wakeWritable = resolve))
      const bytes = toBinary(ServerReflectionResponseSchema, res)
      this.writable = this.sink.write(encodeFrame(bytes))
    }
    if (this.requestEnded && this.queue.length === 0) this.finish(0, '')
  }

  private finish(code: number, message: string): void {
    if (this.done) return
    this.done = true
    this.sink.close(code, message, [])
  }

  /** One answer: from the backends, as the section comment says. */
  private async answer(req: ServerReflectionRequest): Promise<ServerReflectionResponse> {
    const r = req.messageRequest
    const reply = (res: ServerReflectionResponse): ServerReflectionResponse =>
      create(ServerReflectionResponseSchema, { ...res, validHost: req.host, originalRequest: req })
    if (r.case === 'listServices') return reply(await this.listServices(req))
    let order = this.targets
    if (r.case === 'fileContainingSymbol') {
      const owner = this.ownerOf(r.value)
      if (owner != null) order = [owner, ...this.targets.filter((t) => t.url !== owner.url)]
    }
    let last: ServerReflectionResponse | undefined
    for (const target of order) {
      const res = await this.ask(target, req)
      if (res.messageResponse.case !== 'errorResponse') return reply(res)
      last = res
    }
    return reply(last ?? errorResponse(Code.NotFound, 'no backend answered'))
  }

  /** Every backend's services, each kept when its calls go to that backend (plus reflection itself). */
  private async listServices(req: ServerReflectionRequest): Promise<ServerReflectionResponse> {
    const answers = await Promise.all(this.targets.map((t) => this.ask(t, req).then((res) => ({ t, res }))))
    const names = new Set<string>()
    let failure: ServerReflectionResponse | undefined
    for (const { t, res } of answers) {
      if (res.messageResponse.case !== 'listServicesResponse') {
        failure = res
        continue
      }
      for (const s of res.messageResponse.value.service) {
        if (REFLECTION_SERVICES.has(s.name) || this.o.expose.lookup(s.name)?.url === t.url) names.add(s.name)
      }
    }
    if (names.size === 0 && failure != null) return failure
    return create(ServerReflectionResponseSchema, {
      messageResponse: { case: 'listServicesResponse', value: { service: [...names].sort().map((name) => ({ name })) } },
    })
  }

  /** The backend exposing the service a symbol names (the symbol itself, or a method of it). */
  private ownerOf(symbol: string): BackendTarget | undefined {
    const s = symbol.startsWith('.') ? symbol.slice(1) : symbol
    for (let name = s; name !== ''; name = name.slice(0, Math.max(0, name.lastIndexOf('.')))) {
      const t = this.o.expose.exact(name)
      if (t != null) return t
      if (!name.includes('.')) break
    }
    return undefined
  }

  /** One question to one backend on a stream of its own; a failure comes back as an error response. */
  private ask(target: BackendTarget, req: ServerReflectionRequest): Promise<ServerReflectionResponse> {
    return new Promise((resolve) => {
      const fail = (code: Code, message: string): void => {
        cleanup()
        resolve(errorResponse(code, `backend ${target.address}: ${message}`))
      }
      let stream: ClientHttp2Stream
      try {
        stream = this.o.backends.session(target).request({
          ':method': 'POST',
          ':scheme': target.tls ? 'https' : 'http',
          ':path': this.path,
          ':authority': target.address,
          'content-type': 'application/grpc',
          te: 'trailers',
          'grpc-timeout': formatGrpcTimeout(this.o.questionTimeoutMs),
        })
      } catch (err: unknown) {
        fail(Code.Unavailable, StargateError.from(err, Code.Unavailable).rawMessage)
        return
      }
      this.inflight.add(stream)
      const timer = setTimeout(() => fail(Code.Unavailable, `no answer within ${this.o.questionTimeoutMs} ms`), this.o.questionTimeoutMs)
      timer.unref()
      const cleanup = (): void => {
        clearTimeout(timer)
        this.inflight.delete(stream)
        if (!stream.closed) stream.close()
      }
      const reader = new FrameParser(this.o.maxMessageBytes)
      let answer: Uint8Array | undefined
      let status: { code: Code; message: string } | undefined
      const statusOf = (headers: Record<string, string | string[] | undefined>): void => {
        const code = headers['grpc-status']
        if (code != null)
          status = { code: parseGrpcStatus(String(code)), message: decodeGrpcMessage(String(headers['grpc-message'] ?? '')) }
      }
      stream.on('response', statusOf)
      stream.on('trailers', statusOf)
      stream.on('data', (chunk: Buffer) => {
        try {
          answer ??= messagesOf(reader.push(chunk))[0]
        } catch (err: unknown) {
          const e = StargateError.from(err)
          fail(e.code, e.rawMessage)
        }
      })
      stream.on('error', (err: unknown) => fail(Code.Unavailable, StargateError.from(err, Code.Unavailable).rawMessage))
      stream.on('close', () => {
        if (answer != null) {
          cleanup()
          try {
            resolve(fromBinary(ServerReflectionResponseSchema, answer))
          } catch (err: unknown) {
            resolve(
              errorResponse(Code.Internal, `backend ${target.address} sent a malformed answer: ${StargateError.from(err).rawMessage}`),
            )
          }
          return
        }
        fail(status?.code ?? Code.Unavailable, status?.message || 'closed the stream without an answer')
      })
      stream.end(encodeFrame(toBinary(ServerReflectionRequestSchema, req)))
    })
  }
}

function errorResponse(code: Code, message: string): ServerReflectionResponse {
  return create(ServerReflectionResponseSchema, {
    messageResponse: { case: 'errorResponse', value: { errorCode: code, errorMessage: message } },
  })
}

/** The messages of parsed frames; a compressed one is refused (no grpc-encoding is negotiated here). */
function messagesOf(frames: GrpcFrame[]): Uint8Array[] {
  if (frames.some((f) => f.compressed)) {
    throw new StargateError(Code.Unimplemented, 'compressed server reflection messages are not supported')
  }
  return frames.map((f) => f.data)
}
