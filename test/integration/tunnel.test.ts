/**
 * Tunnelled gRPC through the real machinery, in process: a gRPC client (grpc-js, or raw node:http2 where
 * bytes are compared) → HTTP/2 ingress → TunnelClient → in-memory link (frames encoded as on the wire) →
 * TunnelServer → egress → a gRPC backend (grpc-js EchoService from test/proto, or raw node:http2).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  createSecureServer,
  createServer,
  type Http2SecureServer,
  type Http2Server,
  type ServerHttp2Stream,
} from 'node:http2'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { gunzipSync, gzipSync } from 'node:zlib'
import { create } from '@bufbuild/protobuf'
import * as grpc from '@grpc/grpc-js'
import { GATEWAY_DEFAULTS } from '@stargate/gateway/defaults'
import { Code, StargateError } from '@stargate/shared/errors'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import {
  type BidiResponse,
  ClientStreamRequestSchema,
  type ClientStreamResponse,
  type ServerStreamResponse,
  type UnaryResponse,
} from '../gen/stargate/test/v1/echo_pb.js'
import { bytesOf, type CancelledCall, EchoBackend, EchoClient, generatedPayload } from '../lib/echo.ts'
import { eventually } from '../lib/eventually.ts'
import { TunnelStack } from '../lib/tunnel-stack.ts'

const RAW_SERVICE = 'raw.v1.Bytes'
const WINDOW = GATEWAY_DEFAULTS.tunnelWindowBytes
/** node:http2 hands data over in chunks of at most one DATA frame (16 KiB unless a peer raises it). */
const MAX_CHUNK = 16 * 1024

type Client = grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall & grpc.ClientDuplexStream<unknown, unknown>>

interface RawCall {
  path: string
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/**
 * A raw node:http2 gRPC backend: records what arrives byte for byte; /raw.v1.Bytes/Echo answers with the
 * configured response bytes; /raw.v1.Bytes/Download writes `total` bytes of messages honouring 'drain'
 * (counting what it wrote); /raw.v1.Bytes/Upload hashes what it reads and answers in trailers.
 */
class RawBackend {
  readonly server: Http2Server | Http2SecureServer
  readonly calls: RawCall[] = []
  echoResponse: Buffer = Buffer.alloc(0)
  echoHeaders: Record<string, string> = {}
  written = 0
  writtenHash = createHash('sha256')
  blocked = false
  port = 0

  /** h2c, or TLS with this certificate. */
  constructor(tls?: { cert: Buffer; key: Buffer }) {
    this.server = tls == null ? createServer() : createSecureServer({ ...tls, allowHTTP1: false })
  }

  async start(): Promise<number> {
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers as RawCall['headers']))
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as AddressInfo).port
    return this.port
  }

  private onStream(stream: ServerHttp2Stream, headers: RawCall['headers']): void {
    const path = headers[':path'] as string
    stream.on('error', () => {})
    if (path === `/${RAW_SERVICE}/Download`) {
      const total = Number(headers['x-total'])
      stream.resume()
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      this.written = 0
      this.writtenHash = createHash('sha256')
      const pump = (): void => {
        this.blocked = false
        while (this.written < total) {
          const m = encodeFrame(bytesOf(Math.min(64 * 1024, total - this.written) - 5, this.written))
          this.written += m.byteLength
          this.writtenHash.update(m)
          if (!stream.write(m)) {
            this.blocked = true
            stream.once('drain', pump)
            return
          }
        }
        stream.end()
      }
      pump()
      return
    }
    if (path === `/${RAW_SERVICE}/Upload`) {
      const hash = createHash('sha256')
      let bytes = 0
      // A backend slower than the client now and then (a 5 ms pause every 4 MiB).
      stream.on('data', (chunk: Buffer) => {
        bytes += chunk.byteLength
        hash.update(chunk)
        if ((bytes & 0x3fffff) < chunk.byteLength) {
          stream.pause()
          setTimeout(() => stream.resume(), 5)
        }
      })
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
        stream.on('wantTrailers', () =>
          stream.sendTrailers({ 'grpc-status': '0', 'x-bytes': String(bytes), 'x-sha256': hash.digest('hex') }),
        )
        stream.end()
      })
      return
    }
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      this.calls.push({ path, headers, body: Buffer.concat(chunks) })
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...this.echoHeaders }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      stream.end(this.echoResponse)
    })
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

interface RawResult {
  status: number
  headers: Record<string, unknown>
  trailers: Record<string, unknown>
  body: Buffer
}

/** One raw HTTP/2 gRPC call: sends the body chunks, collects the response. */
function rawCall(session: ClientHttp2Session, path: string, headers: Record<string, string>, body: Buffer[]): Promise<RawResult> {
  const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers })
  const chunks: Buffer[] = []
  let resHeaders: Record<string, unknown> = {}
  let trailers: Record<string, unknown> = {}
  req.on('response', (h) => {
    resHeaders = h
  })
  req.on('trailers', (t) => {
    trailers = t
  })
  req.on('data', (c: Buffer) => chunks.push(c))
  for (const b of body) req.write(b)
  req.end()
  return new Promise((resolve, reject) => {
    req.on('error', reject)
    req.on('close', () => resolve({ status: Number(resHeaders[':status']), headers: resHeaders, trailers, body: Buffer.concat(chunks) }))
  })
}

/** The promise's value, or a rejection naming what did not happen within ms. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Asks the raw backend for `total` bytes of messages (a server stream). */
function download(session: ClientHttp2Session, total: number): ClientHttp2Stream {
  const req = session.request({
    ':method': 'POST',
    ':path': `/${RAW_SERVICE}/Download`,
    'content-type': 'application/grpc',
    te: 'trailers',
    'x-total': String(total),
  })
  req.end()
  return req
}

/** Runs a unary grpc-js call: the answer or error, with response headers and trailers. */
function unary(
  client: Client,
  request: unknown,
  metadata = new grpc.Metadata(),
  options: grpc.CallOptions = {},
): Promise<{ err?: grpc.ServiceError; res?: UnaryResponse; headers?: grpc.Metadata; trailers?: grpc.Metadata }> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | undefined
    let trailers: grpc.Metadata | undefined
    let result: { err?: grpc.ServiceError; res?: UnaryResponse } | undefined
    const call = client.unary!(request, metadata, options, (err: grpc.ServiceError | null, res: UnaryResponse) => {
      result = err != null ? { err } : { res }
      if (trailers != null) resolve({ ...result, ...(headers != null ? { headers } : {}), trailers })
    })
    call.on('metadata', (m: grpc.Metadata) => {
      headers = m
    })
    call.on('status', (s: grpc.StatusObject) => {
      trailers = s.metadata
      if (result != null) resolve({ ...result, ...(headers != null ? { headers } : {}), trailers })
    })
  })
}

function collect<T>(
  call: grpc.ClientReadableStream<unknown>,
): Promise<{ messages: T[]; status: grpc.StatusObject; headers?: grpc.Metadata }> {
  return new Promise((resolve) => {
    const messages: T[] = []
    let headers: grpc.Metadata | undefined
    call.on('metadata', (m: grpc.Metadata) => {
      headers = m
    })
    call.on('data', (m: T) => messages.push(m))
    call.on('error', () => {})
    call.on('status', (status: grpc.StatusObject) => resolve({ messages, status, ...(headers != null ? { headers } : {}) }))
  })
}

function nextCancel(backend: EchoBackend, method: string, timeoutMs: number): Promise<CancelledCall> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`backend saw no cancellation of ${method} within ${timeoutMs} ms`)), timeoutMs)
    const on = (c: CancelledCall): void => {
      if (c.method !== method) return
      clearTimeout(timer)
      backend.off('cancelled', on)
      resolve(c)
    }
    backend.on('cancelled', on)
  })
}

describe('tunnel (in-process, real HTTP/2 both ends)', () => {
  const echo = new EchoBackend()
  const raw = new RawBackend()
  let tlsRaw: RawBackend
  let pki: string
  let stack: TunnelStack
  let client: Client
  let session: ClientHttp2Session
  let deadPort = 0

  before(async () => {
    const dead = createServer().listen(0, '127.0.0.1')
    await once(dead, 'listening')
    deadPort = (dead.address() as AddressInfo).port
    await new Promise<void>((resolve) => dead.close(() => resolve()))
    const echoPort = await echo.start()
    const rawPort = await raw.start()
    // A TLS backend with a self-signed certificate for 127.0.0.1, trusted through the pool's CA option.
    pki = await mkdtemp(join(tmpdir(), 'stargate-tunnel-'))
    await promisify(execFile)(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        'key.pem',
        '-out',
        'cert.pem',
      ].concat(['-days', '2', '-subj', '/CN=tunnel-test-backend', '-addext', 'subjectAltName=IP:127.0.0.1']),
      { cwd: pki, timeout: 30_000 },
    )
    const cert = await readFile(join(pki, 'cert.pem'))
    tlsRaw = new RawBackend({ cert, key: await readFile(join(pki, 'key.pem')) })
    tlsRaw.echoResponse = encodeFrame(Buffer.from('over TLS'))
    const tlsPort = await tlsRaw.start()
    stack = await new TunnelStack({
      expose: [
        `stargate.test.v1.EchoService=127.0.0.1:${echoPort}`,
        `${RAW_SERVICE}=127.0.0.1:${rawPort}`,
        `dead.v1.Service=127.0.0.1:${deadPort}`,
        `tls.v1.Service=https://127.0.0.1:${tlsPort}`,
      ],
      backendCaPem: cert.toString(),
    }).start()
    client = new EchoClient(stack.address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
    }) as unknown as Client
    session = connect(`http://${stack.address}`)
    session.on('error', () => {})
  })

  after(async () => {
    client?.close()
    session?.destroy()
    await stack?.stop()
    await echo.stop()
    await raw.stop()
    await tlsRaw?.stop()
    if (pki != null) await rm(pki, { recursive: true, force: true })
  })

  it('tunnel - a TLS backend is reached with the configured CA, and refused without it', async () => {
    const r = await rawCall(session, '/tls.v1.Service/Echo', {}, [encodeFrame(Buffer.from('hello'))])
    assert.equal(r.trailers['grpc-status'], '0')
    assert.ok(r.body.equals(encodeFrame(Buffer.from('over TLS'))))
    assert.ok(tlsRaw.calls.at(-1)!.body.equals(encodeFrame(Buffer.from('hello'))))
    const untrusting = await new TunnelStack({ expose: [`tls.v1.Service=https://127.0.0.1:${tlsRaw.port}`] }).start()
    const s = connect(`http://${untrusting.address}`)
    try {
      const refused = await rawCall(s, '/tls.v1.Service/Echo', {}, [encodeFrame(Buffer.from('hello'))])
      assert.equal(refused.headers['grpc-status'], String(grpc.status.UNAVAILABLE))
      assert.match(
        decodeURIComponent(String(refused.headers['grpc-message'])),
        new RegExp(`backend 127\\.0\\.0\\.1:${tlsRaw.port} \\(exposing tls\\.v1\\.Service\\) is unreachable: self[- ]signed certificate`),
      )
    } finally {
      s.destroy()
      await untrusting.stop()
    }
  })

  it('tunnel - all four call kinds arrive byte for byte', async () => {
    const payload = bytesOf(50_000, 1)
    const u = await unary(client, { payload })
    assert.equal(u.err, undefined)
    assert.ok(Buffer.from(u.res!.payload).equals(payload))

    const ss = await collect<ServerStreamResponse>(client.serverStream!({ responseCount: 7, responseBytes: 30_000 }) as never)
    assert.equal(ss.status.code, grpc.status.OK)
    assert.deepEqual(
      ss.messages.map((m) => m.index),
      [0, 1, 2, 3, 4, 5, 6],
    )
    for (const m of ss.messages) assert.ok(Buffer.from(m.payload).equals(generatedPayload(m.index, 30_000)))

    const parts = [bytesOf(10, 2), bytesOf(100_000, 3), bytesOf(0, 4), bytesOf(70_000, 5)]
    const cs = await new Promise<ClientStreamResponse>((resolve, reject) => {
      const call = client.clientStream!((err: Error | null, res: ClientStreamResponse) => (err != null ? reject(err) : resolve(res)))
      for (const p of parts) call.write(create(ClientStreamRequestSchema, { payload: p }))
      call.end()
    })
    assert.equal(cs.receivedMessages, parts.length)
    assert.equal(cs.receivedBytes, BigInt(parts.reduce((n, p) => n + p.length, 0)))
    assert.equal(Buffer.from(cs.sha256).toString('hex'), createHash('sha256').update(Buffer.concat(parts)).digest('hex'))

    const bidi = client.bidi!() as grpc.ClientDuplexStream<unknown, BidiResponse>
    const got: BidiResponse[] = []
    // Each request is answered before the next is sent: messages really go both ways on one open stream.
    for (const p of parts) {
      const answered = once(bidi, 'data')
      bidi.write({ payload: p })
      got.push((await answered)[0] as BidiResponse)
    }
    const status = once(bidi, 'status')
    bidi.end()
    assert.equal(((await status)[0] as grpc.StatusObject).code, grpc.status.OK)
    assert.deepEqual(
      got.map((m) => m.index),
      [0, 1, 2, 3],
    )
    for (const [i, m] of got.entries()) assert.ok(Buffer.from(m.payload).equals(parts[i]!))
  })

  it('tunnel - headers, trailers and -bin metadata cross both ways as they do directly; stargate-* does not, the ingress names peer and tier', async () => {
    const md = new grpc.Metadata()
    md.set('echo-text', 'hello there')
    md.add('echo-multi', 'one')
    md.add('echo-multi', 'two')
    md.set('echo-data-bin', Buffer.from([0, 1, 2, 0xfe, 0xff]))
    md.set('stargate-peer', '12D3KooWNotForwarded')
    const u = await unary(client, { payload: bytesOf(3, 9) }, md)
    assert.equal(u.err, undefined)
    const tunnelled = echo.lastMetadata!.toJSON()
    for (const [m, prefix] of [
      [u.headers!, ''],
      [u.trailers!, 'trailer-'],
    ] as const) {
      assert.deepEqual(m.get(`${prefix}echo-text`), ['hello there'])
      assert.deepEqual(m.get(`${prefix}echo-data-bin`), [Buffer.from([0, 1, 2, 0xfe, 0xff])])
    }
    assert.equal(tunnelled['stargate-peer'], undefined, 'stargate-* headers stay at the gateway')
    // Exactly what the same call made directly to the backend sees and gets (the date aside).
    const direct = new EchoClient(`127.0.0.1:${echo.port}`, grpc.credentials.createInsecure()) as unknown as Client
    md.remove('stargate-peer')
    const d = await unary(direct, { payload: bytesOf(3, 9) }, md)
    direct.close()
    const withoutDate = (m: grpc.Metadata | undefined): unknown => {
      const json = m?.toJSON() ?? {}
      delete json.date
      return json
    }
    assert.deepEqual(tunnelled, echo.lastMetadata!.toJSON(), 'the backend sees the same metadata')
    // The caller gateway adds the peer and tier the call went to (the stack's link: peer "callee", direct).
    assert.deepEqual(withoutDate(u.headers), {
      ...(withoutDate(d.headers) as object),
      'stargate-peer': ['callee'],
      'stargate-tier': ['TIER_DIRECT'],
    })
    assert.deepEqual(u.trailers?.toJSON(), d.trailers?.toJSON())
    // The same on a bidi stream (headers before the first message, trailers after the last).
    const bidi = client.bidi!(md) as grpc.ClientDuplexStream<unknown, BidiResponse>
    const done = collect<BidiResponse>(bidi)
    bidi.write({ payload: bytesOf(1, 1) })
    bidi.end()
    const r = await done
    assert.deepEqual(r.headers?.get('echo-data-bin'), [Buffer.from([0, 1, 2, 0xfe, 0xff])])
    assert.deepEqual(r.status.metadata.get('trailer-echo-data-bin'), [Buffer.from([0, 1, 2, 0xfe, 0xff])])
  })

  it('tunnel - a status with details arrives intact (trailers-only and after headers)', async () => {
    const details = Buffer.from('0809120f736f6d657468696e672062726f6b656e1a0a0a08747970652f75726c', 'hex')
    const failure = { code: grpc.status.FAILED_PRECONDITION, message: 'the widget is 50% broken ✗ (try again)', details }
    // No echo metadata: the backend answers with trailers only.
    const a = await unary(client, { behavior: { failure } })
    const withHeaders = new grpc.Metadata()
    withHeaders.set('echo-x', 'y')
    const b = await unary(client, { behavior: { failure } }, withHeaders)
    for (const r of [a, b]) {
      assert.equal(r.err?.code, grpc.status.FAILED_PRECONDITION)
      assert.equal(r.err?.details, failure.message)
      assert.deepEqual(r.err?.metadata.get('grpc-status-details-bin'), [details])
    }
    assert.equal(a.headers, undefined, 'trailers-only: no response headers')
    assert.deepEqual(b.headers?.get('echo-x'), ['y'])
    assert.deepEqual(b.trailers?.get('trailer-echo-x'), ['y'])
  })

  it('tunnel - a backend sleeping past the deadline: DEADLINE_EXCEEDED within deadline + 1 s, backend call cancelled', async () => {
    const deadlineMs = 500
    const cancelled = nextCancel(echo, 'Unary', 10_000)
    const t0 = Date.now()
    const r = await unary(client, { behavior: { delay: { seconds: 5n } } }, new grpc.Metadata(), { deadline: Date.now() + deadlineMs })
    const elapsed = Date.now() - t0
    assert.equal(r.err?.code, grpc.status.DEADLINE_EXCEEDED)
    assert.ok(elapsed <= deadlineMs + 1_000, `DEADLINE_EXCEEDED after ${elapsed} ms`)
    const c = await cancelled
    console.log(
      `deadline ${deadlineMs} ms: client got DEADLINE_EXCEEDED after ${elapsed} ms; backend call cancelled after ${c.atMs - t0} ms`,
    )
    assert.ok(c.atMs - t0 <= deadlineMs + 1_000)
  })

  it('tunnel - a client cancel reaches the backend as a cancelled call within 1 s', async () => {
    // A server stream the backend holds open (a 30 s delay): its response headers show it is running.
    const md = new grpc.Metadata()
    md.set('echo-started', 'yes')
    const call = client.serverStream!({ responseCount: 1, behavior: { delay: { seconds: 30n } } }, md) as grpc.ClientReadableStream<unknown>
    call.on('error', () => {})
    await once(call, 'metadata')
    const cancelled = nextCancel(echo, 'ServerStream', 10_000)
    const t0 = Date.now()
    call.cancel()
    const c = await cancelled
    console.log(`client cancel reached the backend after ${c.atMs - t0} ms`)
    assert.ok(c.atMs - t0 <= 1_000, `backend saw the cancel after ${c.atMs - t0} ms`)
    // Nothing is left behind in the machinery.
    await stack.loop.settled()
    assert.equal(stack.client.stats.streams, 0)
    assert.equal(stack.server.stats.streams, 0)
  })

  it('tunnel - gzip-compressed messages pass untouched both ways (byte-compared); time left and trace context reach the backend', async () => {
    const requestMessage = encodeFrame(gzipSync(bytesOf(20_000, 7)), 1)
    raw.echoResponse = encodeFrame(gzipSync(bytesOf(30_000, 8)), 1)
    raw.echoHeaders = { 'grpc-encoding': 'gzip' }
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
    stack.traceContext = { traceparent, tracestate: 'sg=1' }
    const r = await rawCall(
      session,
      `/${RAW_SERVICE}/Echo`,
      {
        'grpc-encoding': 'gzip',
        'grpc-accept-encoding': 'gzip,identity',
        'grpc-timeout': '20S',
        traceparent: '00-11111111111111111111111111111111-2222222222222222-01',
      },
      [requestMessage],
    )
    stack.traceContext = undefined
    const seen = raw.calls.at(-1)!
    // The deadline goes on as the time left; the gateway's trace context replaces the client's.
    const left = /^(\d+)m$/.exec(String(seen.headers['grpc-timeout']))
    assert.ok(left != null && Number(left[1]) <= 20_000 && Number(left[1]) > 10_000, `grpc-timeout ${seen.headers['grpc-timeout']}`)
    assert.equal(seen.headers.traceparent, traceparent)
    assert.equal(seen.headers.tracestate, 'sg=1')
    assert.ok(seen.body.equals(requestMessage), 'the backend got the compressed request byte for byte')
    assert.equal(seen.headers['grpc-encoding'], 'gzip')
    assert.equal(seen.headers['grpc-accept-encoding'], 'gzip,identity')
    assert.ok(r.body.equals(raw.echoResponse), 'the client got the compressed response byte for byte')
    assert.equal(r.headers['grpc-encoding'], 'gzip')
    assert.ok(gunzipSync(r.body.subarray(5)).equals(bytesOf(30_000, 8)))
    // grpc-js compressing its requests: the backend decompresses what the tunnel carried untouched.
    const gz = new EchoClient(stack.address, grpc.credentials.createInsecure(), {
      'grpc.default_compression_algorithm': grpc.compressionAlgorithms.gzip,
    }) as unknown as Client
    const payload = Buffer.alloc(100_000, 0x61)
    const u = await unary(gz, { payload })
    gz.close()
    assert.equal(u.err, undefined)
    assert.ok(Buffer.from(u.res!.payload).equals(payload))
  })

  it('tunnel - unexposed service UNIMPLEMENTED naming --expose, malformed grpc-timeout INVALID_ARGUMENT, unreachable backend UNAVAILABLE naming it', async () => {
    const a = await rawCall(session, '/nobody.v1.Service/Method', {}, [encodeFrame(Buffer.alloc(1))])
    assert.equal(a.headers['grpc-status'], String(grpc.status.UNIMPLEMENTED))
    assert.match(
      decodeURIComponent(String(a.headers['grpc-message'])),
      /service nobody\.v1\.Service is not exposed .*--expose nobody\.v1\.Service=HOST:PORT/,
    )
    const t = await rawCall(session, `/${RAW_SERVICE}/Echo`, { 'grpc-timeout': 'soon' }, [encodeFrame(Buffer.alloc(1))])
    assert.equal(t.headers['grpc-status'], String(grpc.status.INVALID_ARGUMENT))
    assert.match(decodeURIComponent(String(t.headers['grpc-message'])), /malformed grpc-timeout header "soon"/)
    const b = await rawCall(session, '/dead.v1.Service/Method', {}, [encodeFrame(Buffer.alloc(1))])
    assert.equal(b.headers['grpc-status'], String(grpc.status.UNAVAILABLE))
    assert.match(
      decodeURIComponent(String(b.headers['grpc-message'])),
      new RegExp(`backend 127\\.0\\.0\\.1:${deadPort} \\(exposing dead\\.v1\\.Service\\) is unreachable: connection refused`),
    )
  })

  it('tunnel - the connect phase: its error is the status, the deadline and a client cancel abort it', async () => {
    try {
      // The routing / establish failure reaches the client as it is.
      stack.connector = async (request) => {
        throw new StargateError(Code.Unavailable, `peer for ${request.service} unreachable: direct: refused; relay: no reservation`)
      }
      const failed = await unary(client, { payload: bytesOf(1, 1) })
      assert.equal(failed.err?.code, grpc.status.UNAVAILABLE)
      assert.equal(failed.err?.details, 'peer for stargate.test.v1.EchoService unreachable: direct: refused; relay: no reservation')
      // A connect that never finishes: the deadline ends the call and aborts the connect.
      const signals: AbortSignal[] = []
      stack.connector = (request, signal) => {
        signals.push(signal)
        assert.ok(request.deadlineAtMs == null || request.deadlineAtMs > Date.now())
        return new Promise(() => {})
      }
      // A raw client, which enforces no deadline itself: the gateway answers, and aborts the connect.
      const t0 = Date.now()
      const late = await within(
        rawCall(session, '/stargate.test.v1.EchoService/Unary', { 'grpc-timeout': '300m' }, [encodeFrame(Buffer.alloc(0))]),
        5_000,
        'an answer at the deadline',
      )
      assert.equal(late.headers['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED))
      assert.match(decodeURIComponent(String(late.headers['grpc-message'])), /deadline exceeded before the call reached the peer/)
      assert.ok(Date.now() - t0 <= 1_300, `after ${Date.now() - t0} ms`)
      assert.equal(signals[0]?.aborted, true, 'the connect is aborted at the deadline')
      // A client that cancels while connecting aborts the connect at once.
      const call = client.serverStream!({ responseCount: 1 }) as grpc.ClientReadableStream<unknown>
      call.on('error', () => {})
      while (signals.length < 2) await new Promise((r) => setImmediate(r))
      const aborted = once(signals[1]!, 'abort')
      call.cancel()
      await within(aborted, 1_000, 'the connect aborted by the client cancel')
    } finally {
      stack.connector = undefined
    }
  })

  it('tunnel - a link failure mid-stream ends the call UNAVAILABLE and cancels the backend call; nothing is replayed', async () => {
    const own = await new TunnelStack({ expose: [`stargate.test.v1.EchoService=127.0.0.1:${echo.port}`] }).start()
    const c = new EchoClient(own.address, grpc.credentials.createInsecure()) as unknown as Client
    try {
      const md = new grpc.Metadata()
      md.set('echo-started', 'yes')
      const call = c.serverStream!({ responseCount: 1, behavior: { delay: { seconds: 30n } } }, md) as grpc.ClientReadableStream<unknown>
      const done = collect(call)
      await once(call, 'metadata')
      const cancelled = nextCancel(echo, 'ServerStream', 5_000)
      own.loop.fail(new StargateError(Code.Unavailable, 'relay circuit closed'))
      const { status } = await done
      assert.equal(status.code, grpc.status.UNAVAILABLE)
      assert.match(status.details, /tunnel link to peer callee failed \(relay circuit closed\).*not replayed/)
      await cancelled
      const again = await unary(c, { payload: bytesOf(1, 1) })
      assert.equal(again.err?.code, grpc.status.UNAVAILABLE)
      assert.match(again.err?.details ?? '', /the tunnel link to peer callee failed/)
    } finally {
      c.close()
      await own.stop()
    }
  })

  it('tunnel - a message over the max size is RESOURCE_EXHAUSTED naming the limit', async () => {
    const r = await unary(client, { payload: Buffer.alloc(GATEWAY_DEFAULTS.tunnelMaxMessageBytes + 1) })
    assert.equal(r.err?.code, grpc.status.RESOURCE_EXHAUSTED)
    assert.match(r.err?.details ?? '', new RegExp(`exceeds the max message size of ${GATEWAY_DEFAULTS.tunnelMaxMessageBytes} bytes`))
  })

  it('tunnel - 100 MB each way with the buffered bytes bounded by the window', async () => {
    const total = 100 * 1024 * 1024
    const rss0 = process.memoryUsage().rss
    // Download (server stream).
    let t0 = Date.now()
    const down = download(session, total)
    const hash = createHash('sha256')
    let got = 0
    let rssPeak = rss0
    // A client slower than the backend now and then (a 5 ms pause every 4 MiB), so the tunnel has to hold back.
    down.on('data', (c: Buffer) => {
      got += c.byteLength
      hash.update(c)
      if ((got & 0xfffff) < c.byteLength) rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
      if ((got & 0x3fffff) < c.byteLength) {
        down.pause()
        setTimeout(() => down.resume(), 5)
      }
    })
    const [trailers] = (await once(down, 'trailers')) as [Record<string, string>]
    if (!down.readableEnded) await once(down, 'end')
    const downMs = Date.now() - t0
    assert.equal(trailers['grpc-status'], '0')
    assert.equal(got, raw.written)
    assert.equal(hash.digest('hex'), raw.writtenHash.digest('hex'))
    // Upload (client stream).
    t0 = Date.now()
    const up = session.request({ ':method': 'POST', ':path': `/${RAW_SERVICE}/Upload`, 'content-type': 'application/grpc', te: 'trailers' })
    up.resume()
    const upHash = createHash('sha256')
    for (let sent = 0; sent < total; ) {
      const m = encodeFrame(bytesOf(Math.min(64 * 1024, total - sent) - 5, sent))
      sent += m.byteLength
      upHash.update(m)
      if (!up.write(m)) await once(up, 'drain')
      if ((sent & 0xfffff) < m.byteLength) rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
    }
    up.end()
    const [upTrailers] = (await once(up, 'trailers')) as [Record<string, string>]
    const upMs = Date.now() - t0
    assert.equal(upTrailers['grpc-status'], '0')
    assert.equal(upTrailers['x-bytes'], String(total))
    assert.equal(upTrailers['x-sha256'], upHash.digest('hex'))
    const peaks = { caller: stack.client.stats.peakBufferedBytes, callee: stack.server.stats.peakBufferedBytes }
    console.log(
      `100 MB down in ${downMs} ms (${((total / downMs) * 1000) / 1e6} MB/s), up in ${upMs} ms; ` +
        `peak buffered bytes: caller ${peaks.caller}, callee ${peaks.callee} (window ${WINDOW}); ` +
        `RSS ${(rss0 / 1e6).toFixed(0)} MB before, ${(rssPeak / 1e6).toFixed(0)} MB peak, ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB after`,
    )
    // Each side holds at most its window of received data plus one HTTP/2 chunk waiting for credit.
    assert.ok(peaks.caller <= WINDOW + MAX_CHUNK, `caller peak ${peaks.caller}`)
    assert.ok(peaks.callee <= WINDOW + MAX_CHUNK, `callee peak ${peaks.callee}`)
  })

  it('tunnel - a stalled client stops the backend: nothing grows while it does not read, everything arrives after', async () => {
    const total = 32 * 1024 * 1024
    const down = download(session, total)
    await once(down, 'response')
    down.pause()
    // There is no event for "nothing moves": watch the backend's byte count until it has not changed for 1 s.
    let last = -1
    let stableSinceMs = Date.now()
    await eventually(
      'the backend stopped (no byte written for 1 s)',
      () => {
        if (raw.written !== last) {
          last = raw.written
          stableSinceMs = Date.now()
        }
        return Date.now() - stableSinceMs >= 1_000
      },
      { timeoutMs: 30_000, intervalMs: 50, context: () => `the backend wrote ${raw.written} of ${total} bytes` },
    )
    const buffered = { caller: stack.client.stats.bufferedBytes, callee: stack.server.stats.bufferedBytes }
    console.log(
      `stalled client: backend stopped after writing ${raw.written} of ${total} bytes; tunnel holds caller ${buffered.caller}, callee ${buffered.callee}`,
    )
    assert.equal(raw.blocked, true, 'the backend waits for drain')
    assert.ok(buffered.caller <= WINDOW && buffered.callee <= MAX_CHUNK, JSON.stringify(buffered))
    // What the backend got out is bounded by the windows on the way (client HTTP/2, tunnel, backend HTTP/2) and buffers.
    assert.ok(raw.written <= 4 * WINDOW, `backend wrote ${raw.written} bytes into a stalled call`)
    const hash = createHash('sha256')
    let got = 0
    down.on('data', (c: Buffer) => {
      got += c.byteLength
      hash.update(c)
    })
    down.resume()
    const [trailers] = (await once(down, 'trailers')) as [Record<string, string>]
    if (!down.readableEnded) await once(down, 'end')
    assert.equal(trailers['grpc-status'], '0')
    assert.equal(got, total)
    assert.equal(hash.digest('hex'), raw.writtenHash.digest('hex'))
  })
})
