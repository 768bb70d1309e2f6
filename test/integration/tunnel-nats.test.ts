/**
 * Tunnelled gRPC over the NATS tier, every part real: a nats-server (max_payload at the 64 KiB minimum, so
 * data frames are split), gateway A (the caller, NATS only) and gateway B (NATS only: no libp2p listener,
 * no relay) exposing a grpc-js EchoService backend, and a grpc-js client pointed at A with the stargate-peer
 * header. The server's monitoring endpoint counts each gateway's subscriptions from the outside. Bad peers
 * (a NATS client holding a gateway identity of its own, sealing as a gateway does) send frames out of order.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { create, toBinary } from '@bufbuild/protobuf'
import * as grpc from '@grpc/grpc-js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { type PeerFrame, PeerFrameSchema } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import { Sealer } from '@stargate/shared/seal'
import { connect, type Msg, type NatsConnection } from 'nats'
import {
  type BidiResponse,
  type ClientStreamResponse,
  ServerStreamRequestSchema,
  type ServerStreamResponse,
  ServerStreamResponseSchema,
  type UnaryResponse,
} from '../gen/stargate/test/v1/echo_pb.js'
import { rssBytes } from '../interop/echo-programs.ts'
import { lastTier } from '../interop/tunnel-stack.ts'
import { bytesOf, EchoBackend, EchoClient, generatedPayload } from '../lib/echo.ts'
import { eventually } from '../lib/eventually.ts'
import { freePort, type GatewayHandle, Harness } from '../lib/harness.ts'

const SERVICE = 'stargate.test.v1.EchoService'
const MiB = 1024 * 1024
/** The smallest max_payload NATS streams work with (NATS_STREAM_MIN_PAYLOAD_BYTES). */
const MAX_PAYLOAD = 64 * 1024

type Client = grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall & grpc.ClientDuplexStream<unknown, unknown>>

function deadline(ms = 60_000): Date {
  return new Date(Date.now() + ms)
}

function peerMetadata(peerId: string): grpc.Metadata {
  const md = new grpc.Metadata()
  md.set('stargate-peer', peerId)
  return md
}

function sha256(...parts: Uint8Array[]): string {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return h.digest('hex')
}

function unary(
  c: Client,
  request: object,
  md: grpc.Metadata,
  deadlineMs = 60_000,
  onHeaders?: (h: grpc.Metadata) => void,
): Promise<UnaryResponse> {
  return new Promise((resolve, reject) => {
    const call = c.unary(request, md, { deadline: deadline(deadlineMs) }, (err: grpc.ServiceError | null, res: UnaryResponse) =>
      err != null ? reject(err) : resolve(res),
    )
    if (onHeaders != null) call.on('metadata', onHeaders)
  })
}

/** The tier gateway A names in a tunnelled call's response headers (stargate-tier). */
function tierOf(headers: grpc.Metadata | undefined): string | undefined {
  return headers?.get('stargate-tier')[0] as string | undefined
}

function serverStream(c: Client, request: object, md: grpc.Metadata): grpc.ClientReadableStream<ServerStreamResponse> {
  return c.serverStream(request, md, { deadline: deadline() }) as unknown as grpc.ClientReadableStream<ServerStreamResponse>
}

function collect<T>(call: grpc.ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = []
    call.on('data', (m: T) => out.push(m))
    call.on('error', reject)
    call.on('end', () => resolve(out))
  })
}

function clientStream(
  c: Client,
  payloads: Uint8Array[],
  md: grpc.Metadata,
  onHeaders?: (h: grpc.Metadata) => void,
): Promise<ClientStreamResponse> {
  return new Promise((resolve, reject) => {
    const call = c.clientStream(md, { deadline: deadline() }, (err: grpc.ServiceError | null, res: ClientStreamResponse) =>
      err != null ? reject(err) : resolve(res),
    ) as unknown as grpc.ClientWritableStream<object>
    if (onHeaders != null) call.on('metadata', onHeaders)
    for (const payload of payloads) call.write({ payload })
    call.end()
  })
}

function bidi(c: Client, md: grpc.Metadata, ms = 60_000): grpc.ClientDuplexStream<object, BidiResponse> {
  return c.bidi(md, { deadline: deadline(ms) }) as unknown as grpc.ClientDuplexStream<object, BidiResponse>
}

function statusOf(err: unknown): { code: number; details: string } {
  const e = err as grpc.ServiceError
  return { code: e.code, details: e.details }
}

/** The nats-server's count of the subscriptions of the gateway named `stargate-gateway-<peer id>` (monitoring /connz). */
async function natsSubscriptions(monitor: string, peerId: string): Promise<number> {
  const res = await fetch(`${monitor}/connz?subs=1&limit=1024`)
  const body = (await res.json()) as { connections: Array<{ name?: string; subscriptions: number }> }
  const conn = body.connections.find((c) => c.name === `stargate-gateway-${peerId}`)
  if (conn == null) throw new Error(`gateway ${peerId} has no connection to the nats-server`)
  return conn.subscriptions
}

/** A PeerFrame of one stream kind. */
function frameOf(kind: 'streamHeaders' | 'streamData' | 'streamWindow', value: object): PeerFrame {
  return create(PeerFrameSchema, { kind: { case: kind, value } as never })
}

/** Resolves with the first event for which `pick` returns a value, or rejects after ms naming `what`. */
function nextEvent<T>(on: (fn: (v: T) => void) => () => void, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`${what} did not happen within ${ms} ms`))
    }, ms)
    const off = on((v) => {
      clearTimeout(timer)
      off()
      resolve(v)
    })
  })
}

/**
 * A misbehaving gateway on NATS: a NATS client holding a gateway identity of its own, sealing frames as a
 * gateway does (services/shared/src/seal.ts), that numbers the frames of its streams as the test says. It
 * records the StreamOpens arriving on its call subject and the frames arriving on its stream subject.
 */
class BadPeer {
  readonly opens: Array<{ frame: PeerFrame; reply: string }> = []
  readonly frames: Array<{ frame: PeerFrame; reply: string }> = []
  readonly subject: string
  private readonly listeners = new Set<() => void>()
  readonly nc: NatsConnection
  readonly sealer: Sealer

  private constructor(nc: NatsConnection, sealer: Sealer) {
    this.nc = nc
    this.sealer = sealer
    this.subject = `stargate.stream.${sealer.peerId}.bad`
    const record = (into: Array<{ frame: PeerFrame; reply: string }>) => (_err: unknown, msg: Msg) => {
      if (msg.data.length === 0) return
      into.push({ frame: decodePeerFrame(this.sealer.open(msg.data).frame), reply: msg.reply ?? '' })
      for (const fn of this.listeners) fn()
    }
    nc.subscribe(`stargate.call.${sealer.peerId}`, { callback: record(this.opens) })
    nc.subscribe(this.subject, { callback: record(this.frames) })
  }

  static async start(url: string): Promise<BadPeer> {
    const nc = await connect({ servers: url, noEcho: true })
    const peer = new BadPeer(nc, new Sealer(await generateKeyPair('Ed25519')))
    await nc.flush()
    return peer
  }

  get peerId(): string {
    return this.sealer.peerId
  }

  /** Resolves once `check` holds after a frame arrived (or at once). */
  until<T>(check: () => T | undefined, what: string, ms = 30_000): Promise<T> {
    const now = check()
    if (now !== undefined) return Promise.resolve(now)
    return nextEvent<T>(
      (fn) => {
        const listener = (): void => {
          const v = check()
          if (v !== undefined) fn(v)
        }
        this.listeners.add(listener)
        return () => this.listeners.delete(listener)
      },
      ms,
      what,
    )
  }

  /** Seals frame, numbered seq, to gateway `to` and publishes it on subject, this peer's stream subject as reply. */
  send(subject: string, to: string, frame: PeerFrame, seq: number): void {
    const bytes = toBinary(PeerFrameSchema, { ...frame, sequence: BigInt(seq) })
    this.nc.publish(subject, this.sealer.seal(bytes, to), { reply: this.subject })
  }

  async close(): Promise<void> {
    await this.nc.close()
  }
}

describe('tunnel over NATS (real nats-server, gateways and EchoService backend)', { timeout: 600_000 }, () => {
  const h = new Harness()
  const echo = new EchoBackend()
  let natsUrl: string
  let monitor: string
  let a: GatewayHandle
  let b: GatewayHandle
  let ca: Client
  /** Subscriptions each gateway holds with no stream open. */
  let baseline: { a: number; b: number }
  let metricsPorts: { a: number; b: number }

  /** The value of one series on a gateway's Prometheus endpoint (0 when absent). */
  async function metric(gateway: 'a' | 'b', name: string, labels: Record<string, string>): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${metricsPorts[gateway]}/metrics`)).text()
    for (const line of text.split('\n')) {
      const m = /^([a-z_]+)\{([^}]*)\} ([0-9.e+-]+)/.exec(line)
      if (m == null || m[1] !== name) continue
      if (Object.entries(labels).every(([k, v]) => m[2]!.includes(`${k}="${v}"`))) return Number(m[3])
    }
    return 0
  }

  /** The backend's next cancelled call of method. */
  const backendCancel = (method: string): Promise<{ method: string; atMs: number }> =>
    nextEvent(
      (fn) => {
        const on = (c: { method: string; atMs: number }): void => {
          if (c.method === method) fn(c)
        }
        echo.on('cancelled', on)
        return () => echo.off('cancelled', on)
      },
      30_000,
      `the backend sees a ${method} call cancelled`,
    )

  before(async () => {
    await echo.start()
    const monitorPort = await freePort()
    const nats = await h.nats({ config: `max_payload: ${MAX_PAYLOAD}\nhttp: 127.0.0.1:${monitorPort}` })
    natsUrl = nats.url
    monitor = `http://127.0.0.1:${monitorPort}`
    const varz = (await (await fetch(`${monitor}/varz`)).json()) as { max_payload: number }
    assert.equal(varz.max_payload, MAX_PAYLOAD, 'the server runs with the smallest max_payload streams work with')
    metricsPorts = { a: await freePort(), b: await freePort() }
    // Neither gateway has a libp2p listener or a relay: NATS is the only tier between them.
    b = await h.gateway(
      ['--nats', natsUrl, '--expose', `${SERVICE}=127.0.0.1:${echo.port}`, '--metrics-listen', `127.0.0.1:${metricsPorts.b}`],
      { name: 'gateway-b' },
    )
    a = await h.gateway(['--nats', natsUrl, '--metrics-listen', `127.0.0.1:${metricsPorts.a}`], { name: 'gateway-a' })
    ca = new EchoClient(a.api, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': -1,
    }) as unknown as Client
    baseline = { a: await natsSubscriptions(monitor, a.peerId), b: await natsSubscriptions(monitor, b.peerId) }
  })

  after(async () => {
    ca?.close()
    await h.close()
    await echo.stop()
  })

  it('nats - all four call kinds through A to the backend on B over NATS only, bytes compared', async () => {
    const md = peerMetadata(b.peerId)
    // Unary, larger than max_payload (split into several frames) and larger than the opening credit.
    const tiers: Record<string, string | undefined> = {}
    const payload = bytesOf(200_000, 1)
    const res = await unary(ca, { payload }, md, 60_000, (h) => {
      tiers.unary = tierOf(h)
    })
    assert.equal(sha256(res.payload), sha256(payload))
    // Server stream: 40 responses of 100 000 generated bytes.
    const server = serverStream(ca, { responseCount: 40, responseBytes: 100_000 }, md)
    server.on('metadata', (h: grpc.Metadata) => {
      tiers.serverStream = tierOf(h)
    })
    const streamed = await collect(server)
    assert.equal(streamed.length, 40)
    for (const [n, m] of streamed.entries()) {
      assert.equal(m.index, n)
      assert.equal(sha256(m.payload), sha256(generatedPayload(n, 100_000)))
    }
    // Client stream: 50 messages of 30 000 bytes, hashed by the backend.
    const sent = Array.from({ length: 50 }, (_, i) => bytesOf(30_000, 100 + i))
    const summary = await clientStream(ca, sent, md, (h) => {
      tiers.clientStream = tierOf(h)
    })
    assert.equal(summary.receivedMessages, 50)
    assert.equal(Number(summary.receivedBytes), 50 * 30_000)
    assert.equal(Buffer.from(summary.sha256).toString('hex'), sha256(...sent))
    // Bidi: each message echoed as it is sent (the next waits for the echo).
    const call = bidi(ca, md)
    call.on('metadata', (h: grpc.Metadata) => {
      tiers.bidi = tierOf(h)
    })
    const echoes: BidiResponse[] = []
    const ended = new Promise<void>((resolve, reject) => {
      call.on('error', reject)
      call.on('end', resolve)
    })
    for (let i = 0; i < 20; i++) {
      const m = bytesOf(1_000 * (i + 1), 200 + i)
      const next = new Promise<BidiResponse>((resolve) => call.once('data', resolve))
      call.write({ payload: m })
      const r = await next
      echoes.push(r)
      assert.equal(r.index, i)
      assert.equal(sha256(r.payload), sha256(m))
    }
    call.end()
    await ended
    assert.equal(echoes.length, 20)
    // Gateway A names the tier of each call in its response headers.
    assert.deepEqual(tiers, { unary: 'TIER_NATS', serverStream: 'TIER_NATS', clientStream: 'TIER_NATS', bidi: 'TIER_NATS' })
    assert.equal(await lastTier(a, b.peerId), Tier.NATS)
  })

  it('nats - a service B does not expose is UNIMPLEMENTED naming --expose, as on the libp2p tiers', async () => {
    const generic = new grpc.Client(a.api, grpc.credentials.createInsecure())
    try {
      const err = await new Promise<unknown>((resolve) =>
        generic.makeUnaryRequest(
          '/other.v1.Nobody/Call',
          (x: Buffer) => x,
          (x: Buffer) => x,
          Buffer.alloc(0),
          peerMetadata(b.peerId),
          { deadline: deadline() },
          (e) => resolve(e),
        ),
      )
      const st = statusOf(err)
      assert.equal(st.code, grpc.status.UNIMPLEMENTED)
      assert.match(
        st.details,
        /service other\.v1\.Nobody is not exposed by this gateway: start it with --expose other\.v1\.Nobody=HOST:PORT/,
      )
    } finally {
      generic.close()
    }
  })

  it('nats - the caller policy applies on NATS as on libp2p: a caller no rule allows is PERMISSION_DENIED before the backend', async () => {
    const guarded = await h.gateway(
      ['--nats', natsUrl, '--expose', `${SERVICE}=127.0.0.1:${echo.port}`, '--allow-caller', `${b.peerId}=${SERVICE}.*`],
      { name: 'gateway-guarded' },
    )
    const runs = echo.runs.get('Unary') ?? 0
    const err = await unary(ca, { payload: Buffer.from('denied') }, peerMetadata(guarded.peerId)).then(
      () => assert.fail('a caller no rule allows must be refused'),
      (e: unknown) => statusOf(e),
    )
    assert.equal(err.code, grpc.status.PERMISSION_DENIED, err.details)
    assert.match(err.details, new RegExp(`peer ${a.peerId} may not call "${SERVICE.replaceAll('.', '\\.')}\\.Unary"`))
    assert.equal(echo.runs.get('Unary') ?? 0, runs, 'the backend never saw the call')
    await guarded.proc.stop()
  })

  describe('50 MiB server stream and a stalled consumer', () => {
    const COUNT = 800
    const SIZE = 64 * 1024
    const TOTAL = COUNT * SIZE
    /**
     * RSS growth allowed per gateway while 50 MiB pass: a third of the stream, so a gateway that buffered
     * it would fail, with room for the garbage collector on a loaded machine.
     */
    const RSS_GROWTH_MAX = 16 * MiB
    /**
     * What the backend may write after its client stopped reading: the flow-control windows on the way
     * (grpc-js client, A's HTTP/2 stream, the tunnel's credit, B's HTTP/2 session to the backend, grpc-js
     * server): a few MiB. A gateway that did not pass backpressure on lets it write all 50 MiB.
     */
    const STALLED_WRITE_MAX = 8 * MiB
    const STALLED_RSS_GROWTH_MAX = 8 * MiB
    const pids = (): Array<[string, number]> => [
      ['gateway A', a.proc.child.pid!],
      ['gateway B', b.proc.child.pid!],
    ]

    before(async () => {
      // A fresh process grows its heap to a working size on its first large traffic (measured: up to 80 MiB
      // for A during its first 50 MiB over NATS, flat after): one stream of the same size first, so what is
      // measured below is what passing 50 MiB adds, not the heap's first growth.
      const before = new Map(pids().map(([n, pid]) => [n, rssBytes(pid)]))
      const warm = await collect(serverStream(ca, { responseCount: COUNT, responseBytes: SIZE }, peerMetadata(b.peerId)))
      assert.equal(warm.length, COUNT)
      for (const [n, pid] of pids()) {
        console.log(`# warm-up (50 MiB): ${n} RSS ${(before.get(n)! / MiB).toFixed(1)} → ${(rssBytes(pid) / MiB).toFixed(1)} MiB`)
      }
    })

    it('nats - 50 MiB from the backend through B and A over NATS, every byte in order, both gateways bounded', async () => {
      const before = new Map(pids().map(([n, pid]) => [n, rssBytes(pid)]))
      const peak = new Map(before)
      const timer = setInterval(() => {
        for (const [n, pid] of pids()) peak.set(n, Math.max(peak.get(n)!, rssBytes(pid)))
      }, 100)
      const started = Date.now()
      let received = 0
      let index = 0
      const hash = createHash('sha256')
      const expected = createHash('sha256')
      try {
        await new Promise<void>((resolve, reject) => {
          const call = serverStream(ca, { responseCount: COUNT, responseBytes: SIZE }, peerMetadata(b.peerId))
          call.on('data', (m: ServerStreamResponse) => {
            assert.equal(m.index, index)
            expected.update(generatedPayload(index, SIZE))
            index++
            received += m.payload.byteLength
            hash.update(m.payload)
          })
          call.on('error', reject)
          call.on('end', resolve)
        })
      } finally {
        clearInterval(timer)
      }
      const seconds = (Date.now() - started) / 1000
      console.log(
        `# 50 MiB server stream over NATS: ${(TOTAL / MiB).toFixed(0)} MiB in ${seconds.toFixed(1)} s (${(TOTAL / MiB / seconds).toFixed(1)} MiB/s)`,
      )
      assert.equal(received, TOTAL)
      assert.equal(hash.digest('hex'), expected.digest('hex'))
      for (const [n] of pids()) {
        const growth = peak.get(n)! - before.get(n)!
        console.log(
          `# 50 MiB server stream over NATS: ${n} RSS ${(before.get(n)! / MiB).toFixed(1)} MiB → peak ${(peak.get(n)! / MiB).toFixed(1)} MiB (+${(growth / MiB).toFixed(1)} MiB)`,
        )
        assert.ok(growth < RSS_GROWTH_MAX, `${n} RSS grew ${(growth / MiB).toFixed(1)} MiB while ${TOTAL / MiB} MiB passed`)
      }
    })

    it('nats - a client that stops reading stops the backend; no gateway grows; every byte arrives after it resumes', async () => {
      const written0 = echo.serverStreamWritten
      const call = serverStream(ca, { responseCount: COUNT, responseBytes: SIZE }, peerMetadata(b.peerId))
      const messages: ServerStreamResponse[] = []
      const ended = new Promise<void>((resolve, reject) => {
        call.on('error', reject)
        call.on('end', resolve)
      })
      await new Promise<void>((resolve) =>
        call.once('data', (m: ServerStreamResponse) => {
          messages.push(m)
          call.pause()
          resolve()
        }),
      )
      call.on('data', (m: ServerStreamResponse) => messages.push(m))
      // Watch the stalled call: the backend must stop (flow control reaches it) and neither gateway may grow.
      const start = new Map(pids().map(([n, pid]) => [n, rssBytes(pid)]))
      const peak = new Map(start)
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, 250))
        for (const [n, pid] of pids()) peak.set(n, Math.max(peak.get(n)!, rssBytes(pid)))
      }
      const writtenWhileStalled = echo.serverStreamWritten - written0
      console.log(`# stalled over NATS: the backend wrote ${(writtenWhileStalled / MiB).toFixed(1)} MiB of ${TOTAL / MiB} MiB in 5 s`)
      for (const [n] of pids()) {
        const growth = peak.get(n)! - start.get(n)!
        console.log(
          `# stalled over NATS: ${n} RSS ${(start.get(n)! / MiB).toFixed(1)} MiB → peak ${(peak.get(n)! / MiB).toFixed(1)} MiB (+${(growth / MiB).toFixed(1)} MiB)`,
        )
        assert.ok(growth < STALLED_RSS_GROWTH_MAX, `${n} grew ${(growth / MiB).toFixed(1)} MiB while the client was stalled`)
      }
      assert.ok(
        writtenWhileStalled < STALLED_WRITE_MAX,
        `the backend kept writing (${writtenWhileStalled} B) while the client read nothing`,
      )
      call.resume()
      await ended
      assert.equal(messages.length, COUNT)
      for (const [n, m] of messages.entries()) assert.equal(m.index, n)
      assert.equal(sha256(...messages.map((m) => m.payload)), sha256(...messages.map((_, n) => generatedPayload(n, SIZE))))
    })
  })

  describe('frames lost or repeated', () => {
    let bad: BadPeer
    before(async () => {
      bad = await BadPeer.start(natsUrl)
    })
    after(async () => {
      await bad?.close()
    })

    /** A's stream to the bad peer: the StreamOpen as the bad peer got it, and the client call. */
    async function openToBadPeer(): Promise<{
      call: grpc.ClientReadableStream<ServerStreamResponse>
      open: { frame: PeerFrame; reply: string }
      exchangeId: bigint
    }> {
      const opensBefore = bad.opens.length
      const call = serverStream(ca, { responseCount: 3 }, peerMetadata(bad.peerId))
      const open = await bad.until(() => bad.opens[opensBefore], 'the StreamOpen reaches the bad peer')
      assert.equal(open.frame.kind.case, 'streamOpen')
      assert.equal(open.frame.sequence, 1n)
      return { call, open, exchangeId: (open.frame.kind.value as { exchangeId: bigint }).exchangeId }
    }

    function response(index: number): Uint8Array {
      return encodeFrame(
        toBinary(ServerStreamResponseSchema, create(ServerStreamResponseSchema, { index, payload: Buffer.from(`m${index}`) })),
      )
    }

    for (const [name, secondSeq, pattern] of [
      ['a gap (frame 3 never sent)', 4, /NATS delivered frame 4 where frame 3 was due \(1 lost\)/],
      ['a repeat (frame 2 sent twice)', 2, /NATS delivered frame 2 again where frame 3 was due \(a repeat\)/],
    ] as const) {
      it(`nats - ${name} from the callee ends the stream UNAVAILABLE at the client; nothing after it is delivered or replayed`, async () => {
        const { call, open, exchangeId } = await openToBadPeer()
        const framesBefore = bad.frames.length
        const got: ServerStreamResponse[] = []
        call.on('data', (m: ServerStreamResponse) => got.push(m))
        const failed = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve))
        const to = a.peerId
        bad.send(open.reply, to, frameOf('streamHeaders', { exchangeId, metadata: [] }), 1)
        bad.send(open.reply, to, frameOf('streamData', { exchangeId, data: response(0), endOfStream: false }), 2)
        bad.send(open.reply, to, frameOf('streamData', { exchangeId, data: response(1), endOfStream: false }), secondSeq)
        bad.send(open.reply, to, frameOf('streamData', { exchangeId, data: response(2), endOfStream: false }), secondSeq + 1)
        const err = await failed
        assert.equal(err.code, grpc.status.UNAVAILABLE, err.details)
        assert.match(err.details, pattern)
        assert.match(err.details, /not replayed/)
        assert.deepEqual(
          got.map((m) => m.index),
          [0],
          'only what came before the loss was delivered',
        )
        // A told the bad peer (on the subject the bad peer named), and never opened the stream again.
        const reset = await bad.until(
          () => bad.frames.slice(framesBefore).find((f) => f.frame.kind.case === 'streamReset'),
          'A resets the stream at the bad peer',
        )
        const value = reset.frame.kind.value as { code: number; message: string }
        assert.equal(value.code, grpc.status.UNAVAILABLE)
        assert.match(value.message, pattern)
        assert.equal(bad.opens.filter((o) => o.frame.kind.case === 'streamOpen' && o.reply === open.reply).length, 1)
        assert.equal(bad.opens.length, bad.opens.indexOf(open) + 1, 'no second StreamOpen: the call was not replayed')
      })
    }

    it('nats - a gap from the caller ends the stream at the callee: the backend call is cancelled and the caller reset', async () => {
      const framesBefore = bad.frames.length
      const called = nextEvent<{ method: string }>(
        (fn) => {
          echo.on('call', fn)
          return () => echo.off('call', fn)
        },
        30_000,
        'the backend gets the call',
      )
      const cancelled = backendCancel('ServerStream')
      const open = create(PeerFrameSchema, {
        kind: {
          case: 'streamOpen',
          value: {
            exchangeId: 7n,
            requestId: `bad-${Date.now()}`,
            method: `/${SERVICE}/ServerStream`,
            // The backend sends its headers at once (they echo echo-started), then sleeps 30 s.
            metadata: [{ key: 'echo-started', value: 'yes' }],
            callerPeerId: bad.peerId,
            tier: Tier.NATS,
            initialWindowBytes: 65_536,
            data: encodeFrame(
              toBinary(
                ServerStreamRequestSchema,
                create(ServerStreamRequestSchema, { responseCount: 1, behavior: { delay: { seconds: 30n, nanos: 0 } } }),
              ),
            ),
            endOfStream: true,
          },
        },
      })
      bad.send(`stargate.call.${b.peerId}`, b.peerId, open, 1)
      assert.equal((await called).method, 'ServerStream')
      // B's first frame names its stream subject; the backend's headers show the call running.
      const first = await bad.until(() => bad.frames[framesBefore], "B's first frame")
      assert.notEqual(first.reply, '')
      await bad.until(() => bad.frames.slice(framesBefore).find((f) => f.frame.kind.case === 'streamHeaders'), "the backend's headers")
      // Frame 2 never comes: frame 3 (credit for the response) is a gap.
      bad.send(first.reply, b.peerId, frameOf('streamWindow', { exchangeId: 7n, creditBytes: 1024 }), 3)
      await cancelled
      const reset = await bad.until(
        () => bad.frames.slice(framesBefore).find((f) => f.frame.kind.case === 'streamReset'),
        'B resets the stream at the bad caller',
      )
      const value = reset.frame.kind.value as { code: number; message: string }
      assert.equal(value.code, grpc.status.UNAVAILABLE)
      assert.match(value.message, /NATS delivered frame 3 where frame 2 was due \(1 lost\)/)
    })
  })

  it('nats - a client cancel reaches the backend as a cancelled call within 1 s', async () => {
    // A server stream the backend holds open (a 30 s delay): its response headers show it is running.
    const md = peerMetadata(b.peerId)
    md.set('echo-started', 'yes')
    const call = serverStream(ca, { responseCount: 1, behavior: { delay: { seconds: 30n, nanos: 0 } } }, md)
    call.on('error', () => {})
    await new Promise((resolve) => call.once('metadata', resolve))
    const cancelled = backendCancel('ServerStream')
    const at = Date.now()
    call.cancel()
    const seen = await cancelled
    console.log(`# client cancel → backend cancelled over NATS in ${seen.atMs - at} ms`)
    assert.ok(seen.atMs - at < 1_000, `${seen.atMs - at} ms`)
  })

  it('nats - 1 000 streams (completed, cancelled, past their deadline, failed) leave no subscription behind', async () => {
    const md = peerMetadata(b.peerId)
    let peakA = 0
    let peakB = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        peakA = Math.max(peakA, await natsSubscriptions(monitor, a.peerId))
        peakB = Math.max(peakB, await natsSubscriptions(monitor, b.peerId))
        await new Promise((r) => setTimeout(r, 20))
      }
    })()
    const outcomes = new Map<string, number>()
    const one = async (i: number): Promise<void> => {
      const kind = i % 4
      let outcome: string
      try {
        if (kind === 0) {
          await unary(ca, { payload: bytesOf(100, i) }, md)
          outcome = 'ok'
        } else if (kind === 1) {
          // Deadline passes while the backend sleeps.
          await unary(ca, { payload: Buffer.from('late'), behavior: { delay: { seconds: 5n, nanos: 0 } } }, md, 300)
          outcome = 'ok'
        } else if (kind === 2) {
          // The backend fails the call.
          await unary(ca, { behavior: { failure: { code: grpc.status.NOT_FOUND, message: 'failed on purpose' } } }, md)
          outcome = 'ok'
        } else {
          // A bidi call cancelled by its client after one echo.
          const call = bidi(ca, md)
          call.on('error', () => {})
          const first = new Promise<BidiResponse>((resolve) => call.once('data', resolve))
          call.write({ payload: Buffer.from('x') })
          await first
          call.cancel()
          outcome = 'cancelled'
        }
      } catch (err: unknown) {
        outcome = grpc.status[statusOf(err).code] ?? 'unknown'
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    }
    const CONCURRENCY = 40
    let next = 0
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < 1_000) await one(next++)
      }),
    )
    sampling = false
    await sampler
    console.log(`# 1 000 streams over NATS: ${JSON.stringify(Object.fromEntries(outcomes))}`)
    assert.deepEqual(Object.fromEntries(outcomes), { ok: 250, DEADLINE_EXCEEDED: 250, NOT_FOUND: 250, cancelled: 250 })
    const settled = await eventually(
      'both gateways are back to the subscriptions they hold with no stream open',
      async () => {
        const now = { a: await natsSubscriptions(monitor, a.peerId), b: await natsSubscriptions(monitor, b.peerId) }
        return now.a === baseline.a && now.b === baseline.b ? now : undefined
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
    console.log(
      `# subscriptions: A ${baseline.a} → peak ${peakA} → ${settled.a}, B ${baseline.b} → peak ${peakB} → ${settled.b} (per-stream subscriptions came and went)`,
    )
    assert.ok(peakA > baseline.a && peakB > baseline.b, 'the streams did hold subscriptions while they ran')
  })

  it('nats - telemetry as on the other tiers: tunnelled calls and tier attempts counted on NATS, stream gauges and failures', async () => {
    // Counted by now: the calls above (A made them, B served them), all over NATS.
    assert.ok((await metric('a', 'stargate_tunnel_calls_total', { stargate_tier: 'nats', rpc_status_code: 'OK' })) > 0)
    assert.ok((await metric('b', 'stargate_tunnel_inbound_calls_total', { stargate_tier: 'nats' })) > 0)
    assert.ok((await metric('a', 'stargate_tier_attempts_total', { stargate_tier: 'nats', stargate_outcome: 'success' })) > 0)
    // The frames the bad peers lost or repeated (two to A, one to B).
    assert.equal(await metric('a', 'stargate_nats_stream_failures_total', { reason: 'lost' }), 2)
    assert.equal(await metric('b', 'stargate_nats_stream_failures_total', { reason: 'lost' }), 1)
    // Nothing open now.
    for (const g of ['a', 'b'] as const) {
      for (const side of ['caller', 'callee']) assert.equal(await metric(g, 'stargate_nats_streams', { side }), 0, `${g} ${side}`)
    }
  })
})
