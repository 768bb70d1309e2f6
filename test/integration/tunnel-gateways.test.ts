/**
 * Tunnelled gRPC through real gateways (separate processes), real relays and a real nats-server: an
 * unmodified grpc-js EchoService client (and gRPC-Web and Connect clients) calls gateway A; unmodified grpc-js
 * EchoService backends sit behind gateways B1 (direct), B2 and B3 (found by discovery over presence on NATS),
 * B4 (only through relay R2) and B5 (through relay R3, and directly through a TCP proxy the test controls).
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Code as ConnectCode, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-node'
import * as grpc from '@grpc/grpc-js'
import { Tier } from '@stargate/shared/gen/gateway'
import { EchoService, type ServerStreamResponse, type UnaryResponse } from '../gen/stargate/test/v1/echo_pb.js'
import { EchoBackend, EchoClient, generatedPayload } from '../lib/echo.ts'
import { eventually } from '../lib/eventually.ts'
import { freePort, type GatewayHandle, Harness, type RelayHandle } from '../lib/harness.ts'
import { TcpProxy } from '../lib/tcp-proxy.ts'

const SERVICE = 'stargate.test.v1.EchoService'

type Client = grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall & grpc.ClientDuplexStream<unknown, unknown>>

function client(api: string): Client {
  return new EchoClient(api, grpc.credentials.createInsecure()) as unknown as Client
}

function metadataOf(entries: Record<string, string>): grpc.Metadata {
  const md = new grpc.Metadata()
  for (const [k, v] of Object.entries(entries)) md.set(k, v)
  return md
}

function deadline(ms = 20_000): Date {
  return new Date(Date.now() + ms)
}

function unary(c: Client, request: object, md: grpc.Metadata): Promise<UnaryResponse> {
  return new Promise((resolve, reject) =>
    c.unary(request, md, { deadline: deadline() }, (err: grpc.ServiceError | null, res: UnaryResponse) =>
      err != null ? reject(err) : resolve(res),
    ),
  )
}

function serverStream(c: Client, request: object, md: grpc.Metadata): Promise<ServerStreamResponse[]> {
  return new Promise((resolve, reject) => {
    const out: ServerStreamResponse[] = []
    const call = c.serverStream(request, md, { deadline: deadline() }) as unknown as grpc.ClientReadableStream<ServerStreamResponse>
    call.on('data', (m: ServerStreamResponse) => out.push(m))
    call.on('error', reject)
    call.on('end', () => resolve(out))
  })
}

function statusOf(err: unknown): { code: number; details: string } {
  const e = err as grpc.ServiceError
  return { code: e.code, details: e.details }
}

/** Runs of one backend method since the last call of `delta`. */
function counter(backend: EchoBackend, method: string): () => number {
  let seen = backend.runs.get(method) ?? 0
  return () => {
    const now = backend.runs.get(method) ?? 0
    const d = now - seen
    seen = now
    return d
  }
}

describe('tunnel through gateways (real processes)', { timeout: 300_000 }, () => {
  const h = new Harness()
  const e1 = new EchoBackend()
  const e2 = new EchoBackend()
  const e3 = new EchoBackend()
  const e4 = new EchoBackend()
  const e5 = new EchoBackend()
  let relay2: RelayHandle
  let relay3: RelayHandle
  let b4: GatewayHandle
  let b5: GatewayHandle
  let proxy: TcpProxy
  let a: GatewayHandle
  let a2: GatewayHandle
  let b1: GatewayHandle
  let b2: GatewayHandle
  let b3: GatewayHandle
  let ca: Client

  before(async () => {
    await Promise.all([e1.start(), e2.start(), e3.start(), e4.start(), e5.start()])
    const nats = await h.nats()
    b1 = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--expose', `${SERVICE}=127.0.0.1:${e1.port}`], { name: 'gateway-b1' })
    // B5: on relay R3 (which the idempotency test kills) and directly through a proxy A first finds refusing.
    const b5Port = await freePort()
    proxy = await new TcpProxy('127.0.0.1', b5Port).start()
    relay3 = await h.relay(['--no-stun'], { name: 'relay-3' })
    b5 = await h.gateway(
      ['--p2p-listen', `/ip4/127.0.0.1/tcp/${b5Port}`, '--relay', relay3.multiaddr, '--expose', `${SERVICE}=127.0.0.1:${e5.port}`],
      { name: 'gateway-b5' },
    )
    // B4 is reachable only through relay R2, which the mid-stream test kills.
    relay2 = await h.relay(['--no-stun'], { name: 'relay-2' })
    b4 = await h.gateway(['--relay', relay2.multiaddr, '--expose', `${SERVICE}=127.0.0.1:${e4.port}`], { name: 'gateway-b4' })
    const b1Addr = `${b1.peerId}=${b1.multiaddrs.find((m) => m.includes('/127.0.0.1/'))!}`
    const b5Addr = `${b5.peerId}=/ip4/127.0.0.1/tcp/${proxy.port}/p2p/${b5.peerId}`
    ;[b2, b3] = await Promise.all(
      [e2, e3].map((e, i) =>
        h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--nats', nats.url, '--expose', `${SERVICE}=127.0.0.1:${e.port}`], {
          name: `gateway-b${i + 2}`,
        }),
      ),
    )
    ;[a, a2] = await Promise.all([
      h.gateway(['--relay', relay2.multiaddr, '--relay', relay3.multiaddr, '--nats', nats.url, '--peer', b1Addr, '--peer', b5Addr], {
        name: 'gateway-a',
      }),
      h.gateway(['--peer', b1Addr, '--route', `${SERVICE}=${b1.peerId}`], { name: 'gateway-a2' }),
    ])
    ca = client(a.api)
  })

  after(async () => {
    ca?.close()
    await h.close()
    await proxy?.stop()
    await Promise.all([e1.stop(), e2.stop(), e3.stop(), e4.stop(), e5.stop()])
  })

  it('tunnel - header routing: stargate-peer takes unary and server-streaming calls to that peer, bytes intact', async () => {
    const runs = counter(e1, 'Unary')
    const payload = generatedPayload(7, 70_000)
    const md = metadataOf({ 'stargate-peer': b1.peerId, 'echo-x': 'y' })
    const res = await unary(ca, { payload }, md)
    assert.ok(Buffer.from(res.payload).equals(Buffer.from(payload)))
    assert.equal(runs(), 1)
    assert.equal(e1.lastMetadata?.get('echo-x')[0], 'y', 'metadata reaches the backend')
    assert.equal(e1.lastMetadata?.get('stargate-peer').length, 0, 'stargate-* headers do not')
    const stream = await serverStream(ca, { responseCount: 20, responseBytes: 10_000 }, md)
    assert.equal(stream.length, 20)
    for (const [n, m] of stream.entries()) assert.ok(Buffer.from(m.payload).equals(Buffer.from(generatedPayload(n, 10_000))))
  })

  it('tunnel - --route SERVICE=PEER_ID routes a call that names no peer', async () => {
    const runs = counter(e1, 'Unary')
    const c = client(a2.api)
    try {
      const res = await unary(c, { payload: Buffer.from('routed') }, new grpc.Metadata())
      assert.equal(Buffer.from(res.payload).toString(), 'routed')
      assert.equal(runs(), 1)
    } finally {
      c.close()
    }
  })

  it('tunnel - gRPC-Web (binary) clients on HTTP/1.1 and HTTP/2 reach a tunnelled service; Connect is UNIMPLEMENTED saying why', async () => {
    const runs = counter(e1, 'Unary')
    const headers = { 'stargate-peer': b1.peerId, 'echo-web': 'w' }
    for (const httpVersion of ['1.1', '2'] as const) {
      const web = createClient(EchoService, createGrpcWebTransport({ baseUrl: `http://${a.api}`, httpVersion }))
      const res = await web.unary({ payload: Buffer.from(`web ${httpVersion}`) }, { headers })
      assert.equal(Buffer.from(res.payload).toString(), `web ${httpVersion}`)
      const trailers: Record<string, string> = {}
      const stream: number[] = []
      for await (const m of web.serverStream(
        { responseCount: 3, responseBytes: 50_000 },
        {
          headers,
          onTrailer: (t) =>
            t.forEach((v, k) => {
              trailers[k] = v
            }),
        },
      )) {
        assert.ok(Buffer.from(m.payload).equals(Buffer.from(generatedPayload(m.index, 50_000))))
        stream.push(m.index)
      }
      assert.deepEqual(stream, [0, 1, 2], `server stream over gRPC-Web on HTTP/${httpVersion}`)
      assert.equal(trailers['trailer-echo-web'], 'w', 'trailers arrive in the gRPC-Web trailers block')
    }
    assert.equal(runs(), 2)
    const connect = createClient(EchoService, createConnectTransport({ baseUrl: `http://${a.api}`, httpVersion: '1.1' }))
    await assert.rejects(connect.unary({ payload: Buffer.from('x') }, { headers }), (err: unknown) => {
      assert.ok(err instanceof ConnectError)
      assert.equal(err.code, ConnectCode.Unimplemented)
      assert.match(err.rawMessage, /tunnelled to another gateway.*not translated.*application\/grpc-web\+proto/)
      return true
    })
  })

  it('tunnel - a service the peer does not expose is UNIMPLEMENTED naming --expose; one nobody routes names the three ways', async () => {
    const generic = new grpc.Client(a.api, grpc.credentials.createInsecure())
    const call = (md: grpc.Metadata): Promise<unknown> =>
      new Promise((resolve, reject) =>
        generic.makeUnaryRequest(
          '/other.v1.Nobody/Call',
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          md,
          { deadline: deadline() },
          (err, res) => (err != null ? reject(err) : resolve(res)),
        ),
      )
    try {
      await assert.rejects(call(metadataOf({ 'stargate-peer': b1.peerId })), (err: unknown) => {
        const s = statusOf(err)
        assert.equal(s.code, grpc.status.UNIMPLEMENTED)
        assert.match(
          s.details,
          /service other\.v1\.Nobody is not exposed by this gateway: start it with --expose other\.v1\.Nobody=HOST:PORT/,
        )
        return true
      })
      await assert.rejects(call(new grpc.Metadata()), (err: unknown) => {
        const s = statusOf(err)
        assert.equal(s.code, grpc.status.UNIMPLEMENTED)
        assert.match(s.details, /stargate-peer: <peer id>/)
        assert.match(s.details, /--route other\.v1\.Nobody=<peer id>/)
        assert.match(s.details, /--expose other\.v1\.Nobody=HOST:PORT/)
        return true
      })
    } finally {
      generic.close()
    }
  })

  it('tunnel - a unary call with stargate-idempotency-key whose relay tier fails after it left is retried on the direct tier and runs once', async () => {
    const runs = counter(e5, 'Unary')
    const arrived = new Promise<void>((resolve) => e5.on('call', (c) => c.method === 'Unary' && resolve()))
    // The direct path refuses at first, so the call goes through relay R3; then R3 dies and the path opens.
    proxy.refusing = true
    const md = metadataOf({ 'stargate-peer': b5.peerId, 'stargate-idempotency-key': `key-${Date.now()}` })
    const answer = unary(ca, { payload: Buffer.from('once'), behavior: { delay: { seconds: 2n, nanos: 0 } } }, md)
    await arrived
    proxy.refusing = false
    relay3.proc.child.kill('SIGKILL')
    const res = await answer
    assert.equal(Buffer.from(res.payload).toString(), 'once')
    assert.equal(runs(), 1, 'the backend ran the call once although it was sent twice')
    const metrics = await a.client.getPeerMetrics({ peerId: b5.peerId })
    assert.equal(metrics.peers[0]?.connectionType, Tier.DIRECT, 'the retry was served on the direct tier')
  })

  it('tunnel - the relay failing mid-stream ends the call UNAVAILABLE, cancels the backend call and never replays it', async () => {
    const runs = counter(e4, 'ServerStream')
    const cancelled = new Promise<void>((resolve) => e4.on('cancelled', (c) => c.method === 'ServerStream' && resolve()))
    // The backend sends its headers at once (echo-* metadata), then waits 30 s before its first message.
    const call = ca.serverStream(
      { responseCount: 1, behavior: { delay: { seconds: 30n, nanos: 0 } } },
      metadataOf({ 'stargate-peer': b4.peerId, 'echo-started': 'yes' }),
      { deadline: deadline() },
    ) as unknown as grpc.ClientReadableStream<ServerStreamResponse>
    const ended = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve))
    call.on('data', () => {})
    await new Promise((resolve) => call.once('metadata', resolve))
    relay2.proc.child.kill('SIGKILL')
    const err = await ended
    assert.equal(err.code, grpc.status.UNAVAILABLE)
    assert.match(err.details, /not replayed/)
    await cancelled
    assert.equal(runs(), 1, 'the backend saw the call once')
  })

  it('tunnel - discovery over presence: a peer whose signed presence advertises the service is found with no header or route', async () => {
    await eventually('A has discovered B2 and B3 through presence', async () => {
      const res = await a.client.discover({ capability: `grpc:${SERVICE}` })
      const ids = res.peers.map((p) => p.peerId)
      return ids.includes(b2.peerId) && ids.includes(b3.peerId)
    })
    const before = (e2.runs.get('Unary') ?? 0) + (e3.runs.get('Unary') ?? 0)
    const res = await unary(ca, { payload: Buffer.from('found') }, new grpc.Metadata())
    assert.equal(Buffer.from(res.payload).toString(), 'found')
    assert.equal((e2.runs.get('Unary') ?? 0) + (e3.runs.get('Unary') ?? 0), before + 1)
  })

  it('tunnel - discovery failover: with the gateway that served killed, calls keep succeeding through the other', async () => {
    const served = (e: EchoBackend): number => e.runs.get('Unary') ?? 0
    const before2 = served(e2)
    await unary(ca, { payload: Buffer.from('who') }, new grpc.Metadata())
    const [victim, survivor, survivorBackend] = served(e2) > before2 ? [b2, b3, e3] : [b3, b2, e2]
    victim.proc.child.kill('SIGKILL')
    await victim.proc.exited
    const runs = counter(survivorBackend, 'Unary')
    for (let i = 0; i < 10; i++) {
      const res = await unary(ca, { payload: Buffer.from(`after ${i}`) }, new grpc.Metadata())
      assert.equal(Buffer.from(res.payload).toString(), `after ${i}`)
    }
    assert.equal(runs(), 10, `every call was served by ${survivor.peerId}`)
  })
})
