/**
 * An ordinary gRPC server in Node: stargate.test.v1.EchoService (test/proto, all four call kinds) on
 * connect-node over h2c, from the protoc-gen-es code in test/gen, with server reflection. It knows nothing about Stargate: `npm start`
 * puts it behind gateway B with `--expose`, and the tunnelling tests call it through gateway A like the Go
 * and Python echo servers of test/interop, whose output it shares.
 *
 *   node examples/node/echo-server.ts [--listen 127.0.0.1:0]
 *
 * Prints "LISTENING HOST:PORT" once it serves, then one JSON line per event: {"event":"call","method",
 * "metadata"} when a call starts, {"event":"cancelled","method","reason","at_ms"} when a call is cancelled
 * (client cancel or deadline) before it answered. The echo rules are the proto's: echo-* request metadata
 * comes back in the response headers and again in the trailers as trailer-echo-*; Behavior.delay waits
 * (ending early when the call is cancelled), then Behavior.failure ends the call with that status (its
 * details as grpc-status-details-bin) or the server answers.
 */
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { parseArgs } from 'node:util'
import { BinaryReader } from '@bufbuild/protobuf/wire'
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect'
import { connectNodeAdapter } from '@connectrpc/connect-node'
import { ServerReflection } from '../../services/shared/src/gen/grpc/reflection/v1/reflection_pb.js'
import { ServerReflection as ServerReflectionV1alpha } from '../../services/shared/src/gen/grpc/reflection/v1alpha/reflection_pb.js'
import { DescriptorIndex, REFLECTION_V1, REFLECTION_V1ALPHA, reflectionImpls } from '../../services/shared/src/grpc/reflection.ts'
import { type Behavior, EchoService } from '../../test/gen/stargate/test/v1/echo_pb.js'

/** Byte i of generated response n: (n + i) mod 256. */
function generated(n: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes)
  for (let i = 0; i < bytes; i++) out[i] = (n + i) & 0xff
  return out
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`)
}

/** The details of a serialized google.rpc.Status (field 3, repeated Any), to raise them again as they were. */
function statusDetails(bytes: Uint8Array): Array<{ type: string; value: Uint8Array }> {
  const out: Array<{ type: string; value: Uint8Array }> = []
  const r = new BinaryReader(bytes)
  while (r.pos < r.len) {
    const [field, wireType] = r.tag()
    if (field !== 3) {
      r.skip(wireType)
      continue
    }
    const any = new BinaryReader(r.bytes())
    let type = ''
    let value = new Uint8Array()
    while (any.pos < any.len) {
      const [f, wt] = any.tag()
      if (f === 1) type = any.string().replace(/^type\.googleapis\.com\//, '')
      else if (f === 2) value = any.bytes()
      else any.skip(wt)
    }
    out.push({ type, value })
  }
  return out
}

/** One call: reports a cancellation it observes before it answered; applies the echo rules and the behavior. */
class Call {
  answered = false
  private readonly ctx: HandlerContext

  constructor(ctx: HandlerContext, method: string) {
    this.ctx = ctx
    const metadata: Record<string, string[]> = {}
    ctx.requestHeader.forEach((value, key) => {
      // -bin values as the Go and Python servers print them: base64, padded.
      metadata[key] = [key.endsWith('-bin') ? Buffer.from(value, 'base64').toString('base64') : value]
      if (key.startsWith('echo-')) {
        ctx.responseHeader.set(key, value)
        ctx.responseTrailer.set(`trailer-${key}`, value)
      }
    })
    emit({ event: 'call', method, metadata })
    ctx.signal.addEventListener('abort', () => {
      if (this.answered) return
      const code = ConnectError.from(ctx.signal.reason).code
      const reason = code === Code.DeadlineExceeded ? 'deadline_exceeded' : 'cancelled'
      emit({ event: 'cancelled', method, reason, at_ms: Date.now() })
    })
  }

  /** Waits the delay (ending early when the call is cancelled), then throws the failure, if any. */
  async behave(behavior: Behavior | undefined): Promise<void> {
    const delayMs = behavior?.delay == null ? 0 : Number(behavior.delay.seconds) * 1000 + behavior.delay.nanos / 1e6
    if (delayMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs)
        this.ctx.signal.addEventListener('abort', () => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    this.ctx.signal.throwIfAborted()
    const failure = behavior?.failure
    if (failure == null) return
    this.answered = true
    const err = new ConnectError(failure.message, failure.code as Code)
    err.details.push(...statusDetails(failure.details))
    throw err
  }
}

const echo: ServiceImpl<typeof EchoService> = {
  async unary(req, ctx) {
    const call = new Call(ctx, 'Unary')
    await call.behave(req.behavior)
    call.answered = true
    return { payload: req.payload }
  },
  async *serverStream(req, ctx) {
    const call = new Call(ctx, 'ServerStream')
    await call.behave(req.behavior)
    for (let n = 0; n < req.responseCount; n++) {
      yield { index: n, payload: req.responseBytes > 0 ? generated(n, req.responseBytes) : req.payload }
    }
    call.answered = true
  },
  async clientStream(requests, ctx) {
    const call = new Call(ctx, 'ClientStream')
    const hash = createHash('sha256')
    let messages = 0
    let bytes = 0
    let behavior: Behavior | undefined
    for await (const m of requests) {
      if (messages === 0) behavior = m.behavior
      messages++
      bytes += m.payload.byteLength
      hash.update(m.payload)
    }
    await call.behave(behavior)
    call.answered = true
    return { receivedMessages: messages, receivedBytes: BigInt(bytes), sha256: hash.digest() }
  },
  async *bidi(requests, ctx) {
    const call = new Call(ctx, 'Bidi')
    let n = 0
    for await (const m of requests) {
      if (n === 0) await call.behave(m.behavior)
      yield { index: n++, payload: m.payload }
    }
    call.answered = true
  },
}

const { values } = parseArgs({ options: { listen: { type: 'string', default: '127.0.0.1:0' } } })
const listen = values.listen
const colon = listen.lastIndexOf(':')
// Server reflection (v1 and v1alpha) from the descriptors buf built, comments included, so grpcurl needs no proto.
const gen = (file: string): Uint8Array => readFileSync(new URL(file, import.meta.url))
const index = new DescriptorIndex([gen('../../test/gen/echo.binpb'), gen('../../services/shared/src/gen/grpc.binpb')])
const reflection = reflectionImpls(index, () => [EchoService.typeName, REFLECTION_V1, REFLECTION_V1ALPHA])
const server = createServer(
  connectNodeAdapter({
    routes: (router) =>
      router.service(EchoService, echo).service(ServerReflection, reflection.v1).service(ServerReflectionV1alpha, reflection.v1alpha),
    grpc: true,
    connect: false,
    grpcWeb: false,
    readMaxBytes: 64 << 20,
    writeMaxBytes: 64 << 20,
  }),
)
server.listen(Number(listen.slice(colon + 1)), listen.slice(0, colon))
await once(server, 'listening')
const address = server.address() as AddressInfo
process.stdout.write(`LISTENING ${address.address}:${address.port}\n`)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    server.close()
    process.exit(0)
  })
}
