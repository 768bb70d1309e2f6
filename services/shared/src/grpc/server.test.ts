/**
 * The API server with real clients over real sockets: grpc-js, connect-node (gRPC, Connect and gRPC-Web over
 * HTTP/2) and raw node:http2 for what clients never send (oversized prefixes, unknown encodings, resets).
 * The service under test has all four call kinds and is described at run time (no generated code).
 */
import assert from 'node:assert/strict'
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as h2connect,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2'
import { connect as netConnect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { deflateSync, gzipSync } from 'node:zlib'
import { create, createFileRegistry, type DescMessage, type DescService, fromBinary, toBinary } from '@bufbuild/protobuf'
import { DurationSchema, FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt'
import { type CallOptions, Code, ConnectError, createClient, type HandlerContext, type Transport } from '@connectrpc/connect'
import { findTrailerError } from '@connectrpc/connect/protocol-grpc'
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node'
import * as grpc from '@grpc/grpc-js'
import { stargateDescriptorSets } from '../descriptors.ts'
import { StargateError } from '../errors.ts'
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from '../gen/grpc/health/v1/health_pb.js'
import { ServerReflectionRequestSchema, ServerReflectionResponseSchema } from '../gen/grpc/reflection/v1/reflection_pb.js'
import { createLogger } from '../log.ts'
import { API_SERVER_DEFAULTS, ApiServer, type ApiServerOptions, type GateRequest } from './server.ts'
import { encodeFrame } from './wire.ts'

// ---------------------------------------------------------------- the service under test

const T = FieldDescriptorProto_Type
const field = (name: string, number: number, type: FieldDescriptorProto_Type) => ({
  name,
  number,
  type,
  jsonName: name,
  label: FieldDescriptorProto_Label.OPTIONAL,
})
const method = (name: string, clientStreaming: boolean, serverStreaming: boolean) => ({
  name,
  inputType: '.test.v1.EchoRequest',
  outputType: '.test.v1.EchoResponse',
  clientStreaming,
  serverStreaming,
})
const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: 'test/v1/echo.proto',
    package: 'test.v1',
    syntax: 'proto3',
    messageType: [
      { name: 'EchoRequest', field: [field('text', 1, T.STRING), field('count', 2, T.INT32), field('blob', 3, T.BYTES)] },
      { name: 'EchoResponse', field: [field('text', 1, T.STRING), field('index', 2, T.INT32), field('blob', 3, T.BYTES)] },
    ],
    service: [
      {
        name: 'EchoService',
        method: [
          method('Unary', false, false),
          method('ServerStream', false, true),
          method('ClientStream', true, false),
          method('Bidi', true, true),
        ],
      },
    ],
  }),
  () => undefined,
)
const EchoService = registry.getService('test.v1.EchoService') as DescService
const EchoRequest = registry.getMessage('test.v1.EchoRequest') as DescMessage
const EchoResponse = registry.getMessage('test.v1.EchoResponse') as DescMessage

interface Req {
  text: string
  count: number
  blob: Uint8Array
}
interface Res {
  text: string
  index: number
  blob: Uint8Array
}

/** Events the handlers report, awaited by the tests (no sleeping for something that has an event). */
class Events {
  private readonly queued = new Map<string, unknown[]>()
  private readonly waiters = new Map<string, Array<(value: unknown) => void>>()

  emit(name: string, value?: unknown): void {
    const waiter = this.waiters.get(name)?.shift()
    if (waiter != null) waiter(value)
    else this.queued.set(name, [...(this.queued.get(name) ?? []), value])
  }

  next(name: string): Promise<unknown> {
    const q = this.queued.get(name)
    if (q != null && q.length > 0) return Promise.resolve(q.shift())
    return new Promise((resolve) => this.waiters.set(name, [...(this.waiters.get(name) ?? []), resolve]))
  }

  count(name: string): number {
    return this.queued.get(name)?.length ?? 0
  }
}

const events = new Events()
/** Handlers that wait in 'hold' until the test releases them, in order. */
const holds: Array<() => void> = []
/** Flow-control test: messages the client has written, and the most the handler ever lagged behind. */
const flow = { produced: 0, consumed: 0, maxAhead: 0 }

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve()
    else signal.addEventListener('abort', () => resolve(), { once: true })
  })
}

async function hang(ctx: HandlerContext): Promise<never> {
  events.emit('started', ctx.timeoutMs())
  await aborted(ctx.signal)
  events.emit('aborted', ctx.signal.reason)
  throw ctx.signal.reason
}

const echoImpl = {
  async unary(req: Req, ctx: HandlerContext): Promise<Partial<Res>> {
    switch (req.text) {
      case 'meta': {
        const blob = ctx.requestHeader.get('x-blob-bin') ?? ''
        ctx.responseHeader.set('x-echo', ctx.requestHeader.get('x-text') ?? '')
        ctx.responseHeader.set('x-echo-bin', blob)
        ctx.responseTrailer.set('x-trailer', 'bye')
        ctx.responseTrailer.set('x-trailer-bin', blob)
        return { text: 'meta' }
      }
      case 'hang':
        return hang(ctx)
      case 'hold':
        events.emit('held')
        await new Promise<void>((resolve) => holds.push(resolve))
        return { text: 'held' }
      case 'fail':
        throw new ConnectError('\u00fcn\u00efcode 100% failed', Code.FailedPrecondition, { 'x-err': 'yes' }, [
          { desc: DurationSchema, value: { seconds: 42n } },
        ])
      case 'boom':
        throw new Error('boom')
      case 'big':
        return { blob: new Uint8Array(req.count) }
      default:
        return { text: req.text, blob: req.blob }
    }
  },
  async *serverStream(req: Req, ctx: HandlerContext): AsyncGenerator<Partial<Res>> {
    if (req.text === 'hang') {
      yield { text: 'first' }
      await hang(ctx)
    }
    for (let i = 0; i < req.count; i++) yield { text: `${req.text}#${i}`, index: i }
    if (req.text === 'fail-after') throw new ConnectError('failed after the messages', Code.Aborted)
  },
  async clientStream(reqs: AsyncIterable<Req>, ctx: HandlerContext): Promise<Partial<Res>> {
    const texts: string[] = []
    for await (const r of reqs) {
      if (ctx.requestHeader.get('x-slow') != null) {
        flow.consumed++
        flow.maxAhead = Math.max(flow.maxAhead, flow.produced - flow.consumed)
        await delay(2) // a slow consumer
      } else {
        texts.push(r.text)
      }
    }
    return { text: ctx.requestHeader.get('x-slow') != null ? String(flow.consumed) : texts.join(',') }
  },
  async *bidi(reqs: AsyncIterable<Req>): AsyncGenerator<Partial<Res>> {
    let i = 0
    for await (const r of reqs) yield { text: r.text.toUpperCase(), index: i++ }
  },
}

// ---------------------------------------------------------------- servers and clients

const log = createLogger('test:api', { level: 'silent' })
const servers: ApiServer[] = []

async function startServer(options: Partial<ApiServerOptions> = {}): Promise<{ server: ApiServer; addr: string }> {
  const server = new ApiServer({
    services: [{ service: EchoService, impl: echoImpl }],
    descriptorSets: stargateDescriptorSets(),
    log,
    maxReceiveMessageBytes: 100_000,
    ...options,
  })
  servers.push(server)
  const { port } = await server.listen('127.0.0.1', 0)
  return { server, addr: `127.0.0.1:${port}` }
}

const path = (name: string) => `/test.v1.EchoService/${name}`
const ser = (m: Partial<Req>): Buffer => Buffer.from(toBinary(EchoRequest, create(EchoRequest, m as never)))
const de = (b: Buffer): Res => fromBinary(EchoResponse, b) as unknown as Res
const jsClients: grpc.Client[] = []

function jsClient(addr: string, options: grpc.ChannelOptions = {}): grpc.Client {
  const c = new grpc.Client(addr, grpc.credentials.createInsecure(), options)
  jsClients.push(c)
  return c
}

interface JsResult {
  res?: Res
  err?: grpc.ServiceError
  headers?: grpc.Metadata
  trailers?: grpc.Metadata
}

function jsUnary(client: grpc.Client, req: Partial<Req>, md = new grpc.Metadata(), options: grpc.CallOptions = {}): Promise<JsResult> {
  return new Promise((resolve) => {
    const out: JsResult = {}
    const call = client.makeUnaryRequest(path('Unary'), ser, de, req, md, options, (err, res) => {
      if (err != null) out.err = err
      if (res != null) out.res = res
    })
    call.on('metadata', (m) => {
      out.headers = m
    })
    call.on('status', (s) => {
      out.trailers = s.metadata
      resolve(out)
    })
  })
}

/** connect-es client of the service under test (its descriptor is built at run time, so typed here). */
interface EchoClient {
  unary(req: Partial<Req>, options?: CallOptions): Promise<Res>
  serverStream(req: Partial<Req>, options?: CallOptions): AsyncIterable<Res>
  clientStream(reqs: AsyncIterable<Partial<Req>>, options?: CallOptions): Promise<Res>
  bidi(reqs: AsyncIterable<Partial<Req>>, options?: CallOptions): AsyncIterable<Res>
}

function echoClient(transport: Transport): EchoClient {
  return createClient(EchoService, transport) as unknown as EchoClient
}

function connectClient(addr: string, extra: Partial<Parameters<typeof createGrpcTransport>[0]> = {}): EchoClient {
  return echoClient(createGrpcTransport({ baseUrl: `http://${addr}`, ...extra }))
}

async function* messages(...texts: string[]): AsyncGenerator<Partial<Req>> {
  for (const text of texts) yield { text }
}

async function collect<X>(it: AsyncIterable<X>): Promise<X[]> {
  const out: X[] = []
  for await (const x of it) out.push(x)
  return out
}

/**
 * Bidi in lock step: the request iterable yields the next message only once the answer to the previous one
 * is in, so the call completes only if neither side buffers the whole stream.
 */
async function lockstepBidi(c: EchoClient, texts: string[]): Promise<string[]> {
  let got: () => void = () => {}
  const answers: string[] = []
  const out = c.bidi(
    (async function* () {
      for (const text of texts) {
        const seen = new Promise<void>((resolve) => {
          got = resolve
        })
        yield { text }
        await seen
      }
    })(),
  )
  for await (const r of out) {
    answers.push(r.text)
    got()
  }
  return answers
}

/** A raw HTTP/2 request: what came back (headers, data, trailers) and how the stream ended. */
interface RawResult {
  headers: IncomingHttpHeaders
  data: Buffer
  trailers?: IncomingHttpHeaders
  rstCode: number
}

const sessions: ClientHttp2Session[] = []

function rawSession(addr: string): ClientHttp2Session {
  const s = h2connect(`http://${addr}`)
  s.on('error', () => {})
  sessions.push(s)
  return s
}

function rawRequest(
  session: ClientHttp2Session,
  p: string,
  headers: OutgoingHttpHeaders = {},
): { stream: ClientHttp2Stream; result: Promise<RawResult> } {
  const stream = session.request({ ':method': 'POST', ':path': p, 'content-type': 'application/grpc', te: 'trailers', ...headers })
  stream.on('error', () => {})
  const result = new Promise<RawResult>((resolve) => {
    let head: IncomingHttpHeaders = {}
    let trailers: IncomingHttpHeaders | undefined
    const chunks: Buffer[] = []
    stream.on('response', (h) => {
      head = h
    })
    stream.on('trailers', (t) => {
      trailers = t
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('close', () => resolve({ headers: head, data: Buffer.concat(chunks), trailers, rstCode: stream.rstCode ?? 0 }))
  })
  return { stream, result }
}

function expectCode(code: Code, re?: RegExp): (err: unknown) => true {
  return (err: unknown) => {
    const e = ConnectError.from(err)
    assert.equal(e.code, code, `${Code[e.code]}: ${e.rawMessage}`)
    if (re != null) assert.match(e.rawMessage, re)
    return true
  }
}

after(async () => {
  for (const c of jsClients) c.close()
  for (const s of sessions) s.destroy()
  await Promise.all(servers.map((s) => s.stop(0)))
})

// ---------------------------------------------------------------- tests

describe('api server - gRPC over HTTP/2', { timeout: 60_000 }, () => {
  let addr: string

  before(async () => {
    ;({ addr } = await startServer({ maxSendMessageBytes: 50_000 }))
  })

  it('kinds - unary, server-, client- and bidi-streaming serve connect-node and grpc-js clients alike', async () => {
    const c = connectClient(addr)
    assert.equal((await c.unary({ text: 'hi', blob: new Uint8Array([1, 2, 3]) })).text, 'hi')
    const streamed = await collect(c.serverStream({ text: 's', count: 3 }))
    assert.deepEqual(
      streamed.map((r) => [r.text, r.index]),
      [
        ['s#0', 0],
        ['s#1', 1],
        ['s#2', 2],
      ],
    )
    const joined = await c.clientStream(messages('a', 'b', 'c'))
    assert.equal(joined.text, 'a,b,c')

    const js = jsClient(addr)
    const unary = await jsUnary(js, { text: 'hi', blob: new Uint8Array([9, 8]) })
    assert.equal(unary.err, undefined)
    assert.deepEqual([unary.res?.text, [...(unary.res?.blob ?? [])]], ['hi', [9, 8]])
    const ss = js.makeServerStreamRequest(path('ServerStream'), ser, de, { text: 'j', count: 2 })
    assert.deepEqual(
      (await collect(ss)).map((r) => r.text),
      ['j#0', 'j#1'],
    )
    const cs = await new Promise<Res>((resolve, reject) => {
      const w = js.makeClientStreamRequest(path('ClientStream'), ser, de, (err, res) => (err != null ? reject(err) : resolve(res as Res)))
      for (const text of ['x', 'y']) w.write({ text })
      w.end()
    })
    assert.equal(cs.text, 'x,y')
  })

  it('kinds - bidi is truly interleaved: each answer arrives before the next request is sent (grpc-js and connect-node)', async () => {
    const js = jsClient(addr)
    const call = js.makeBidiStreamRequest(path('Bidi'), ser, de)
    const it = call[Symbol.asyncIterator]()
    for (const [i, text] of ['one', 'two', 'three'].entries()) {
      call.write({ text })
      const r = await it.next()
      assert.deepEqual([r.value?.text, r.value?.index], [text.toUpperCase(), i])
    }
    call.end()
    assert.equal((await it.next()).done, true)

    assert.deepEqual(await lockstepBidi(connectClient(addr), ['a', 'b']), ['A', 'B'])
  })

  it('metadata - text and -bin headers reach the handler; its response headers and trailers reach the client byte for byte', async () => {
    const blob = Buffer.from([0, 1, 2, 250, 255])
    const md = new grpc.Metadata()
    md.set('x-text', 'hello')
    md.set('x-blob-bin', blob)
    const r = await jsUnary(jsClient(addr), { text: 'meta' }, md)
    assert.equal(r.err, undefined)
    assert.deepEqual(r.headers?.get('x-echo'), ['hello'])
    assert.deepEqual(r.headers?.get('x-echo-bin'), [blob])
    assert.deepEqual(r.trailers?.get('x-trailer'), ['bye'])
    assert.deepEqual(r.trailers?.get('x-trailer-bin'), [blob])
  })

  it('deadline - a handler that outlives grpc-timeout is answered DEADLINE_EXCEEDED by the server at the deadline; its signal aborts', async () => {
    // A raw client that enforces no deadline itself: the answer can only come from the server.
    const session = rawSession(addr)
    const t0 = performance.now()
    const { stream, result } = rawRequest(session, path('Unary'), { 'grpc-timeout': '400m' })
    stream.end(encodeFrame(ser({ text: 'hang' })))
    const timeoutMs = (await events.next('started')) as number
    assert.ok(timeoutMs > 0 && timeoutMs <= 400, `the handler saw ctx.timeoutMs() = ${timeoutMs}`)
    const r = await result
    const elapsedMs = performance.now() - t0
    assert.equal(r.headers['grpc-status'], String(Code.DeadlineExceeded))
    expectCode(Code.DeadlineExceeded)(await events.next('aborted'))
    assert.ok(elapsedMs >= 390, `answered after ${elapsedMs.toFixed(0)} ms, before the deadline`)
    console.log(`grpc-timeout 400m: DEADLINE_EXCEEDED from the server after ${elapsedMs.toFixed(0)} ms`)

    // A handler that ignores its signal does not hold the answer back.
    const held = rawRequest(session, path('Unary'), { 'grpc-timeout': '300m' })
    held.stream.end(encodeFrame(ser({ text: 'hold' })))
    await events.next('held')
    assert.equal((await held.result).headers['grpc-status'], String(Code.DeadlineExceeded))
    ;(holds.shift() as () => void)()

    // grpc-js and connect-node enforce the deadline too: whichever side is first, the call ends
    // DEADLINE_EXCEEDED and the handler's signal aborts.
    const js = await jsUnary(jsClient(addr), { text: 'hang' }, new grpc.Metadata(), { deadline: Date.now() + 300 })
    assert.equal(js.err?.code, grpc.status.DEADLINE_EXCEEDED)
    await events.next('started')
    await events.next('aborted')
    await assert.rejects(connectClient(addr).unary({ text: 'hang' }, { timeoutMs: 300 }), expectCode(Code.DeadlineExceeded))
    await events.next('started')
    await events.next('aborted')
  })

  it('deadline - grpc-timeout 720H (longer than one Node timer, 2^31−1 ms) does not end the call early', async () => {
    const session = rawSession(addr)
    const held = rawRequest(session, path('Unary'), { 'grpc-timeout': '720H' })
    held.stream.end(encodeFrame(ser({ text: 'hold' })))
    await events.next('held')
    // Node runs a longer timer after 1 ms; timers fire in the order they fall due, so 100 ms show it.
    await delay(100)
    ;(holds.shift() as () => void)()
    const r = await held.result
    assert.equal(r.trailers?.['grpc-status'] ?? r.headers['grpc-status'], '0', `grpc-message: ${r.headers['grpc-message']}`)
    assert.equal(de(r.data.subarray(5)).text, 'held')
    session.close()
  })

  it('cancellation - a client cancel (RST_STREAM) aborts the handler at once; so does a lost connection', async () => {
    const js = jsClient(addr)
    const call = js.makeServerStreamRequest(path('ServerStream'), ser, de, { text: 'hang' })
    call.on('error', () => {})
    await new Promise((resolve) => call.once('data', resolve))
    await events.next('started')
    call.cancel()
    expectCode(Code.Canceled, /cancelled/)(await events.next('aborted'))

    const session = rawSession(addr)
    const { stream } = rawRequest(session, path('Unary'))
    stream.end(encodeFrame(ser({ text: 'hang' })))
    await events.next('started')
    session.destroy()
    expectCode(Code.Canceled)(await events.next('aborted'))
  })

  it('errors - code, percent-encoded message, metadata and details reach both clients', async () => {
    await assert.rejects(connectClient(addr).unary({ text: 'fail' }), (err: unknown) => {
      assert.ok(err instanceof ConnectError)
      assert.equal(err.code, Code.FailedPrecondition)
      assert.equal(err.rawMessage, '\u00fcn\u00efcode 100% failed')
      assert.equal(err.findDetails(DurationSchema)[0]?.seconds, 42n)
      assert.equal(err.metadata.get('x-err'), 'yes')
      return true
    })
    const r = await jsUnary(jsClient(addr), { text: 'fail' })
    assert.equal(r.err?.code, grpc.status.FAILED_PRECONDITION)
    assert.equal(r.err?.details, '\u00fcn\u00efcode 100% failed')
    const details = r.trailers?.get('grpc-status-details-bin')[0] as Buffer
    const parsed = findTrailerError(new Headers({ 'grpc-status-details-bin': details.toString('base64') }))
    assert.equal(parsed?.findDetails(DurationSchema)[0]?.seconds, 42n)

    // An exception that is not a gRPC status is UNKNOWN with its message.
    await assert.rejects(connectClient(addr).unary({ text: 'boom' }), expectCode(Code.Unknown, /^boom$/))
  })

  it('errors - an error before any message is trailers-only; after messages it is in the trailers', async () => {
    const session = rawSession(addr)
    const early = rawRequest(session, path('Unary'))
    early.stream.end(encodeFrame(ser({ text: 'fail' })))
    const e = await early.result
    assert.equal(e.headers['grpc-status'], String(Code.FailedPrecondition))
    assert.equal(e.headers['grpc-message'], '%C3%BCn%C3%AFcode 100%25 failed')
    assert.equal(e.trailers, undefined)
    assert.equal(e.data.length, 0)

    const late = rawRequest(session, path('ServerStream'))
    late.stream.end(encodeFrame(ser({ text: 'fail-after', count: 2 })))
    const l = await late.result
    assert.equal(l.headers['grpc-status'], undefined)
    assert.equal(l.trailers?.['grpc-status'], String(Code.Aborted))
    assert.equal(l.trailers?.['grpc-message'], 'failed after the messages')
    assert.equal(l.data.length > 10, true)
  })

  it('errors - missing or extra request messages of a unary call, and a request cut mid-message', async () => {
    const session = rawSession(addr)
    const none = rawRequest(session, path('Unary'))
    none.stream.end()
    assert.match(String((await none.result).headers['grpc-message']), /missing request message/)
    const two = rawRequest(session, path('Unary'))
    two.stream.end(Buffer.concat([encodeFrame(ser({ text: 'a' })), encodeFrame(ser({ text: 'b' }))]))
    assert.match(String((await two.result).headers['grpc-message']), /more than one request message/)
    const cut = rawRequest(session, path('Unary'))
    cut.stream.end(encodeFrame(ser({ text: 'abc' })).subarray(0, 6))
    const c = await cut.result
    assert.equal(c.headers['grpc-status'], String(Code.Internal))
    assert.match(String(c.headers['grpc-message']), /ended in the middle of a message/)
  })

  it('max size - an oversized request is RESOURCE_EXHAUSTED as soon as its length prefix arrives; an oversized response too', async () => {
    const js = jsClient(addr)
    const big = await jsUnary(js, { text: 'x', blob: new Uint8Array(150_000) })
    assert.equal(big.err?.code, grpc.status.RESOURCE_EXHAUSTED)
    assert.match(big.err?.details ?? '', /more than the maximum of 100000 bytes/)

    // Only the 5-byte prefix of a 100 MB message is sent, and the request is left open: the answer comes anyway.
    const session = rawSession(addr)
    const { stream, result } = rawRequest(session, path('ClientStream'))
    const prefix = Buffer.alloc(5)
    prefix.writeUInt32BE(100_000_000, 1)
    stream.write(prefix)
    const r = await result
    assert.equal(r.headers['grpc-status'], String(Code.ResourceExhausted))
    assert.match(decodeURIComponent(String(r.headers['grpc-message'])), /100000000 bytes, more than the maximum of 100000 bytes/)

    await assert.rejects(
      connectClient(addr).unary({ text: 'big', count: 60_000 }),
      expectCode(Code.ResourceExhausted, /more than the maximum of 50000 bytes/),
    )
    assert.equal((await connectClient(addr).unary({ text: 'big', count: 40_000 })).blob.length, 40_000)
  })

  it('compression - gzip and deflate requests are accepted from grpc-js, connect-node and raw frames', async () => {
    const blob = new Uint8Array(20_000).fill(65)
    const gz = jsClient(addr, { 'grpc.default_compression_algorithm': 2 })
    const r = await jsUnary(gz, { text: 'gz', blob })
    assert.equal(r.err, undefined)
    assert.equal(r.res?.blob.length, 20_000)
    const c = connectClient(addr, { sendCompression: compressionGzip, compressMinBytes: 0 })
    assert.equal((await c.unary({ text: 'gz', blob })).text, 'gz')
    assert.deepEqual(
      (await collect(c.bidi(messages('p', 'q')))).map((x) => x.text),
      ['P', 'Q'],
    )

    const session = rawSession(addr)
    for (const [encoding, zip] of [
      ['gzip', gzipSync],
      ['deflate', deflateSync],
    ] as const) {
      const body = zip(ser({ text: encoding }))
      const frame = encodeFrame(body, 1)
      const { stream, result } = rawRequest(session, path('Unary'), { 'grpc-encoding': encoding })
      stream.end(frame)
      const out = await result
      assert.equal(out.trailers?.['grpc-status'], '0', String(out.headers['grpc-message']))
      assert.equal(de(out.data.subarray(5)).text, encoding)
    }
  })

  it('compression - an unknown grpc-encoding is UNIMPLEMENTED listing ours; a compressed message without one is INTERNAL', async () => {
    const session = rawSession(addr)
    const snappy = rawRequest(session, path('Unary'), { 'grpc-encoding': 'snappy' })
    snappy.stream.end(encodeFrame(ser({ text: 'x' })))
    const s = await snappy.result
    assert.equal(s.headers['grpc-status'], String(Code.Unimplemented))
    assert.match(String(s.headers['grpc-accept-encoding']), /gzip/)
    const flagged = rawRequest(session, path('Unary'))
    const frame = encodeFrame(ser({ text: 'x' }))
    frame[0] = 1
    flagged.stream.end(frame)
    const f = await flagged.result
    assert.equal(f.headers['grpc-status'], String(Code.Internal))
    assert.match(decodeURIComponent(String(f.headers['grpc-message'])), /without grpc-encoding/)
  })

  it('grpc-timeout - a malformed value is INVALID_ARGUMENT; application/grpc+json is served too', async () => {
    const session = rawSession(addr)
    const bad = rawRequest(session, path('Unary'), { 'grpc-timeout': 'soon' })
    bad.stream.end(encodeFrame(ser({ text: 'x' })))
    assert.equal((await bad.result).headers['grpc-status'], String(Code.InvalidArgument))
    const json = rawRequest(session, path('Unary'), { 'content-type': 'application/grpc+json' })
    json.stream.end(encodeFrame(Buffer.from('{"text":"from json"}')))
    const j = await json.result
    assert.equal(j.headers['content-type'], 'application/grpc+json')
    assert.deepEqual(JSON.parse(j.data.subarray(5).toString()), { text: 'from json' })
  })

  it('flow control - a client-streaming request is read only as fast as the handler consumes it', async () => {
    const MESSAGES = 256
    const SIZE = 16 * 1024
    const session = rawSession(addr)
    const { stream, result } = rawRequest(session, path('ClientStream'), { 'x-slow': '1' })
    flow.produced = 0
    flow.consumed = 0
    flow.maxAhead = 0
    const frame = encodeFrame(ser({ blob: new Uint8Array(SIZE - 10) }))
    for (let i = 0; i < MESSAGES; i++) {
      flow.produced++
      if (!stream.write(frame)) await new Promise((resolve) => stream.once('drain', resolve))
    }
    stream.end()
    const r = await result
    assert.equal(r.trailers?.['grpc-status'], '0')
    assert.equal(de(r.data.subarray(5)).text, String(MESSAGES))
    console.log(
      `flow control: the client was at most ${flow.maxAhead} messages (${(flow.maxAhead * SIZE) / 1024} KiB) ahead of the handler`,
    )
    // HTTP/2 windows (64 KiB) plus node's stream buffers (16 KiB each side) bound it; without flow control
    // the whole request (4 MiB, 256 messages) would be read at once.
    assert.ok(flow.maxAhead < 32, `${flow.maxAhead} messages ahead`)
  })

  it('keepalive - HTTP/2 pings are answered', async () => {
    const session = rawSession(addr)
    // (node's client cancels a ping sent before the connection is up)
    await new Promise((resolve) => session.once('connect', resolve))
    const payload = Buffer.from('stargate')
    const echoed = await new Promise<Buffer>((resolve, reject) =>
      session.ping(payload, (err, _ms, p) => (err != null ? reject(err) : resolve(p))),
    )
    assert.deepEqual(echoed, payload)
  })

  it('health - Check, Watch (current status, then each change) and NOT_FOUND for an unknown service', async () => {
    const { server, addr: a } = await startServer()
    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://${a}` }))
    assert.equal((await health.check({ service: 'test.v1.EchoService' })).status, ServingStatus.SERVING)
    await assert.rejects(health.check({ service: 'nope.Service' }), expectCode(Code.NotFound, /nope\.Service/))
    const watch = health.watch({ service: 'test.v1.EchoService' })[Symbol.asyncIterator]()
    assert.equal((await watch.next()).value?.status, ServingStatus.SERVING)
    server.health.setStatus('test.v1.EchoService', ServingStatus.NOT_SERVING)
    assert.equal((await watch.next()).value?.status, ServingStatus.NOT_SERVING)
    const unknown = health.watch({ service: 'later.Service' })[Symbol.asyncIterator]()
    assert.equal((await unknown.next()).value?.status, ServingStatus.SERVICE_UNKNOWN)
    server.health.setStatus('later.Service', ServingStatus.SERVING)
    assert.equal((await unknown.next()).value?.status, ServingStatus.SERVING)
    await watch.return?.()
    await unknown.return?.()
  })
})

describe('api server - Connect and gRPC-Web over HTTP/2', { timeout: 60_000 }, () => {
  it('connect, grpc-web - unary and server-streaming over HTTP/2 (h2c); bidi over Connect is interleaved', async () => {
    const { addr } = await startServer()
    for (const transport of [
      createConnectTransport({ baseUrl: `http://${addr}`, httpVersion: '2' }),
      createGrpcWebTransport({ baseUrl: `http://${addr}`, httpVersion: '2' }),
    ]) {
      const c = echoClient(transport)
      assert.equal((await c.unary({ text: 'web' })).text, 'web')
      assert.deepEqual(
        (await collect(c.serverStream({ text: 'w', count: 2 }))).map((r) => r.text),
        ['w#0', 'w#1'],
      )
      await assert.rejects(c.unary({ text: 'fail' }), expectCode(Code.FailedPrecondition))
    }
    // Bidi needs both bodies streaming at once: the server must not buffer the request.
    const c = echoClient(createConnectTransport({ baseUrl: `http://${addr}`, httpVersion: '2' }))
    assert.deepEqual(await lockstepBidi(c, ['x', 'y']), ['X', 'Y'])
    // An unknown path is 404 on HTTP/2 as on HTTP/1.1.
    const res = await new Promise<IncomingHttpHeaders>((resolve) => {
      const s = rawSession(addr).request({ ':method': 'POST', ':path': '/nope.Service/M', 'content-type': 'application/json' })
      s.on('response', resolve)
      s.end('{}')
    })
    assert.equal(res[':status'], 404)
  })
})

describe('api server - unknown services, the hook and the gate', { timeout: 60_000 }, () => {
  const GATE_TOKEN = 'Bearer t0ken'
  const gated: GateRequest[] = []
  const hooked: IncomingHttpHeaders[] = []
  const hookedRaw: string[][] = []
  let plain: string
  let withHook: string

  before(async () => {
    ;({ addr: plain } = await startServer())
    ;({ addr: withHook } = await startServer({
      gate: (req) => {
        gated.push(req)
        if (req.header.get('authorization') !== GATE_TOKEN) throw new StargateError(Code.Unauthenticated, 'no token')
      },
      unknownService: (stream, headers, rawHeaders) => {
        hooked.push(headers)
        hookedRaw.push(rawHeaders)
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-hook': 'yes' }))
        stream.end(encodeFrame(toBinary(EchoResponse, create(EchoResponse, { text: `tunnelled ${headers[':path']}` } as never))))
      },
    }))
  })

  it('unknown - without a hook an unknown service is UNIMPLEMENTED naming the method; a missing local method too', async () => {
    const js = jsClient(plain)
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      js.makeUnaryRequest('/foo.v1.Bar/Baz', ser, de, {}, (e) => resolve(e)),
    )
    assert.equal(err?.code, grpc.status.UNIMPLEMENTED)
    assert.match(err?.details ?? '', /foo\.v1\.Bar\/Baz/)
    const missing = await new Promise<grpc.ServiceError | null>((resolve) =>
      js.makeUnaryRequest('/test.v1.EchoService/Nope', ser, de, {}, (e) => resolve(e)),
    )
    assert.equal(missing?.code, grpc.status.UNIMPLEMENTED)
    assert.match(missing?.details ?? '', /Nope of test\.v1\.EchoService/)
  })

  it('hook - gets the stream of an unknown service after the gate, which sees it as tunnelled', async () => {
    const js = jsClient(withHook)
    const md = new grpc.Metadata()
    md.set('authorization', GATE_TOKEN)
    md.set('stargate-peer', '12D3KooWpeer')
    md.add('x-multi', 'one')
    md.add('x-multi', 'two')
    const out = await new Promise<{ res?: Res; trailers?: grpc.Metadata }>((resolve) => {
      const r: { res?: Res; trailers?: grpc.Metadata } = {}
      const call = js.makeUnaryRequest('/routeguide.RouteGuide/GetFeature', ser, de, {}, md, (_e, res) => {
        r.res = res
      })
      call.on('status', (s) => {
        r.trailers = s.metadata
        resolve(r)
      })
    })
    assert.equal(out.res?.text, 'tunnelled /routeguide.RouteGuide/GetFeature')
    assert.deepEqual(out.trailers?.get('x-hook'), ['yes'])
    assert.equal(hooked.at(-1)?.['stargate-peer'], '12D3KooWpeer')
    // rawHeaders keeps repeated metadata entries apart (headers joins them).
    const raw = hookedRaw.at(-1) ?? []
    assert.deepEqual(
      raw.flatMap((v, i) => (i % 2 === 0 && v === 'x-multi' ? [raw[i + 1]] : [])),
      ['one', 'two'],
    )
    assert.deepEqual(
      gated.filter((g) => g.service === 'routeguide.RouteGuide').map((g) => [g.method, g.tunnelled]),
      [['GetFeature', true]],
    )

    // Without the token the gate refuses and the hook never sees the request.
    const before = hooked.length
    const denied = await new Promise<grpc.ServiceError | null>((resolve) =>
      js.makeUnaryRequest('/routeguide.RouteGuide/GetFeature', ser, de, {}, (e) => resolve(e)),
    )
    assert.equal(denied?.code, grpc.status.UNAUTHENTICATED)
    assert.equal(hooked.length, before)
  })

  it('hook - reflection with stargate-peer goes to the hook (passthrough); without it reflection is answered here', async () => {
    const js = jsClient(withHook)
    const reflect = (extra: Record<string, string>) =>
      new Promise<{ err?: grpc.ServiceError; res?: Buffer }>((resolve) => {
        const md = new grpc.Metadata()
        md.set('authorization', GATE_TOKEN)
        for (const [k, v] of Object.entries(extra)) md.set(k, v)
        const call = js.makeBidiStreamRequest(
          '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
          (m: Uint8Array) => Buffer.from(m),
          (b: Buffer) => b,
          md,
        )
        call.on('data', (res: Buffer) => resolve({ res }))
        call.on('error', (err: grpc.ServiceError) => resolve({ err }))
        call.write(
          toBinary(
            ServerReflectionRequestSchema,
            create(ServerReflectionRequestSchema, { messageRequest: { case: 'listServices', value: '' } }),
          ),
        )
        call.end()
      })
    const before = hooked.length
    const local = await reflect({})
    assert.equal(hooked.length, before)
    const listed = fromBinary(ServerReflectionResponseSchema, local.res as Buffer)
    assert.equal(listed.messageResponse.case, 'listServicesResponse')
    assert.deepEqual(
      (listed.messageResponse.value as { service: Array<{ name: string }> }).service.map((s) => s.name),
      ['test.v1.EchoService', 'grpc.health.v1.Health'],
    )
    const passed = await reflect({ 'stargate-peer': '12D3KooWremote' })
    assert.equal(hooked.length, before + 1)
    assert.equal(hooked.at(-1)?.[':path'], '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo')
    assert.match(de(passed.res as Buffer).text, /tunnelled/)
  })

  it('gate - runs for local methods on gRPC, Connect and gRPC-Web, before the handler', async () => {
    const headers = { authorization: GATE_TOKEN }
    for (const transport of [
      createGrpcTransport({ baseUrl: `http://${withHook}` }),
      createConnectTransport({ baseUrl: `http://${withHook}`, httpVersion: '2' }),
      createConnectTransport({ baseUrl: `http://${withHook}`, httpVersion: '1.1' }),
      createGrpcWebTransport({ baseUrl: `http://${withHook}`, httpVersion: '1.1' }),
    ]) {
      const c = echoClient(transport)
      await assert.rejects(c.unary({ text: 'hold' }), expectCode(Code.Unauthenticated, /no token/))
      assert.equal((await c.unary({ text: 'ok' }, { headers })).text, 'ok')
    }
    assert.equal(events.count('held'), 0, 'no refused request reached the handler')
    assert.ok(gated.some((g) => g.service === 'test.v1.EchoService' && g.method === 'Unary' && !g.tunnelled))
  })
})

describe('api server - limits and lifecycle', { timeout: 60_000 }, () => {
  it('concurrency - the server advertises its stream cap and a connection cannot run more calls at once', async () => {
    const remoteSettings = (session: ClientHttp2Session) =>
      new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once('remoteSettings', resolve))
    const byDefault = await startServer()
    assert.equal((await remoteSettings(rawSession(byDefault.addr))).maxConcurrentStreams, API_SERVER_DEFAULTS.maxConcurrentStreams)
    const { addr } = await startServer({ maxConcurrentStreams: 2 })
    const session = rawSession(addr)
    assert.equal((await remoteSettings(session)).maxConcurrentStreams, 2)
    const calls = [0, 1, 2].map(() => {
      const r = rawRequest(session, path('Unary'))
      r.stream.end(encodeFrame(ser({ text: 'hold' })))
      return r.result
    })
    await events.next('held')
    await events.next('held')
    // A ping round trip after the three requests: the third is still queued by the client.
    await new Promise((resolve) => session.ping(resolve))
    assert.equal(events.count('held'), 0, 'a third call ran beside the first two')
    ;(holds.shift() as () => void)()
    await events.next('held')
    ;(holds.shift() as () => void)()
    ;(holds.shift() as () => void)()
    for (const r of await Promise.all(calls)) assert.equal(r.trailers?.['grpc-status'], '0')
  })

  it('drain - stop(): NOT_SERVING and no new connections at once, GOAWAY, in-flight calls finish, the rest are cancelled with UNAVAILABLE', async () => {
    const { server, addr } = await startServer()
    const [host, port] = addr.split(':') as [string, string]
    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://${addr}` }))
    const watch = health.watch({ service: '' })[Symbol.asyncIterator]()
    assert.equal((await watch.next()).value?.status, ServingStatus.SERVING)

    const session = rawSession(addr)
    const goaway = new Promise((resolve) => session.once('goaway', resolve))
    const finishing = rawRequest(session, path('Unary'))
    finishing.stream.end(encodeFrame(ser({ text: 'hold' })))
    await events.next('held')
    const stuck = rawRequest(session, path('Unary'))
    stuck.stream.end(encodeFrame(ser({ text: 'hang' })))
    await events.next('started')

    const GRACE_MS = 1_500
    const t0 = performance.now()
    const stopped = server.stop(GRACE_MS)
    assert.equal((await watch.next()).value?.status, ServingStatus.NOT_SERVING)
    await goaway
    const refused = await new Promise<string>((resolve) => {
      const s = netConnect(Number(port), host)
      s.on('connect', () => {
        s.destroy()
        resolve('connected')
      })
      s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    })
    assert.equal(refused, 'ECONNREFUSED')

    // The held call finishes normally inside the grace; the hanging one is cancelled when it ends.
    ;(holds.shift() as () => void)()
    const done = await finishing.result
    assert.equal(done.trailers?.['grpc-status'], '0')
    assert.equal(de(done.data.subarray(5)).text, 'held')
    const cancelled = await stuck.result
    const elapsedMs = performance.now() - t0
    assert.equal(cancelled.headers['grpc-status'], String(Code.Unavailable))
    assert.match(String(cancelled.headers['grpc-message']), /shutting down/)
    expectCode(Code.Unavailable)(await events.next('aborted'))
    await stopped
    assert.ok(elapsedMs >= GRACE_MS - 50, `cancelled after ${elapsedMs.toFixed(0)} ms, before the ${GRACE_MS} ms grace`)
    console.log(`drain: the unfinished call was cancelled ${elapsedMs.toFixed(0)} ms after stop(${GRACE_MS})`)
  })
})
