import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { durationToMs, FakeClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry, PeerFrame, StreamOpen } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import { createLogger } from '@stargate/shared/log'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import { type ClientStreamEvents, TunnelClient, type TunnelClientStream } from './client.ts'
import type { TunnelLink, TunnelStatus } from './endpoint.ts'
import { dataFrame, metadataEntry, OPEN_CREDIT_BYTES, openFrame, windowFrame } from './frames.ts'
import { Loopback } from './loopback.ts'
import { type ServerStreamEvents, TunnelServer, type TunnelServerStream } from './server.ts'

const log = createLogger('test:tunnel', { level: 'silent' })
const CALLER = '12D3KooWCaller'
const CALLEE = '12D3KooWCallee'

/** Message bytes: a gRPC length prefix and `length` bytes of a pattern. */
function message(length: number, seed = 0): Uint8Array {
  return new Uint8Array(encodeFrame(Uint8Array.from({ length }, (_, i) => (seed + i) & 0xff)))
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks))
}

/** Records what a stream delivers; `accepting` false makes onData pause delivery. */
class Recorder implements ClientStreamEvents, ServerStreamEvents {
  headers?: MetadataEntry[]
  readonly chunks: Uint8Array[] = []
  bytes = 0
  ended = false
  status?: TunnelStatus
  writable = 0
  accepting = true
  private closeWaiters: Array<(s: TunnelStatus) => void> = []
  private byteWaiters: Array<{ n: number; resolve: () => void }> = []

  onHeaders(metadata: MetadataEntry[]): void {
    this.headers = metadata
  }
  onData(data: Uint8Array): boolean {
    this.chunks.push(data)
    this.bytes += data.byteLength
    for (const w of this.byteWaiters.filter((w) => this.bytes >= w.n)) {
      this.byteWaiters.splice(this.byteWaiters.indexOf(w), 1)
      w.resolve()
    }
    return this.accepting
  }
  onEnd(): void {
    this.ended = true
  }
  onClose(status: TunnelStatus): void {
    assert.equal(this.status, undefined, 'onClose is called once')
    this.status = status
    for (const w of this.closeWaiters.splice(0)) w(status)
  }
  onWritable(): void {
    this.writable++
  }
  closed(): Promise<TunnelStatus> {
    return this.status != null ? Promise.resolve(this.status) : new Promise((resolve) => this.closeWaiters.push(resolve))
  }
  received(n: number): Promise<void> {
    return this.bytes >= n ? Promise.resolve() : new Promise((resolve) => this.byteWaiters.push({ n, resolve }))
  }
  get data(): Uint8Array {
    return concat(this.chunks)
  }
  /** The status so far (a method, so that TypeScript does not narrow it across calls). */
  last(): TunnelStatus | undefined {
    return this.status
  }
}

interface Accepted {
  stream: TunnelServerStream
  open: StreamOpen
  events: Recorder
}

interface PairOptions {
  windowBytes?: number
  maxStreams?: number
  maxMessageBytes?: number
  serverMaxMessageBytes?: number
  highWaterMarkBytes?: number
}

/** A caller and a callee endpoint over an encoding loopback; the callee records what it accepts. */
function pair(options: PairOptions = {}) {
  const clock = new FakeClock()
  const loop = new Loopback({ encode: true, highWaterMarkBytes: options.highWaterMarkBytes })
  const accepted: Accepted[] = []
  const acceptWaiters: Array<(a: Accepted) => void> = []
  const common = {
    log,
    clock,
    ...(options.windowBytes != null ? { windowBytes: options.windowBytes } : {}),
    ...(options.maxStreams != null ? { maxStreams: options.maxStreams } : {}),
  }
  const client = new TunnelClient(loop.callerLink, {
    ...common,
    ...(options.maxMessageBytes != null ? { maxMessageBytes: options.maxMessageBytes } : {}),
    localPeerId: CALLER,
    remotePeerId: CALLEE,
    tier: Tier.RELAY,
  })
  const server = new TunnelServer(loop.calleeLink, {
    ...common,
    ...((options.serverMaxMessageBytes ?? options.maxMessageBytes) != null
      ? { maxMessageBytes: options.serverMaxMessageBytes ?? options.maxMessageBytes }
      : {}),
    remotePeerId: CALLER,
    handler: (stream, open) => {
      const a = { stream, open, events: new Recorder() }
      accepted.push(a)
      const w = acceptWaiters.shift()
      if (w != null) w(a)
      return a.events
    },
  })
  loop.bind(client, server)
  const nextAccepted = (): Promise<Accepted> => {
    const already = accepted.find((a) => !(a as { taken?: boolean }).taken)
    const take = (a: Accepted): Accepted => {
      ;(a as { taken?: boolean }).taken = true
      return a
    }
    if (already != null) return Promise.resolve(take(already))
    return new Promise((resolve) => acceptWaiters.push((a) => resolve(take(a))))
  }
  const open = (events: Recorder, init: Partial<Parameters<TunnelClient['open']>[0]> = {}): TunnelClientStream =>
    client.open({ method: '/stargate.test.v1.EchoService/Bidi', requestId: 'r1', metadata: [], ...init }, events)
  return { clock, loop, client, server, accepted, nextAccepted, open }
}

/** Writes `total` bytes as messages of `size` from a producer that honours write() and onWritable(). */
function produce(
  stream: { write(d: Uint8Array): boolean },
  rec: Recorder,
  total: number,
  size: number,
): { sent: () => number; blocked: () => boolean; resume: () => void } {
  let sent = 0
  let blocked = false
  const pump = (): void => {
    blocked = false
    while (sent < total) {
      const chunk = message(Math.min(size, total - sent) - 5, sent)
      sent += chunk.byteLength
      if (!stream.write(chunk)) {
        blocked = true
        return
      }
    }
  }
  const before = rec.writable
  pump()
  return {
    sent: () => sent,
    blocked: () => blocked,
    resume: () => {
      if (rec.writable > before && blocked) pump()
    },
  }
}

describe('tunnel', () => {
  it('tunnel - a unary call is one frame to the callee; headers, data, status and trailers come back in order', async () => {
    const { loop, nextAccepted, open } = pair()
    const rec = new Recorder()
    const s = open(rec, { metadata: [metadataEntry('x-a', '1'), metadataEntry('x-b-bin', 'AAE=')] })
    const req = message(100)
    assert.equal(s.write(req), true)
    s.end()
    const a = await nextAccepted()
    assert.equal(a.open.method, '/stargate.test.v1.EchoService/Bidi')
    assert.equal(a.open.callerPeerId, CALLER)
    assert.equal(a.open.tier, Tier.RELAY)
    assert.equal(a.open.initialWindowBytes, GATEWAY_DEFAULTS.tunnelWindowBytes)
    assert.deepEqual(
      a.open.metadata.map((m) => [m.key, m.value]),
      [
        ['x-a', '1'],
        ['x-b-bin', 'AAE='],
      ],
    )
    assert.deepEqual(a.events.data, req)
    assert.equal(a.events.ended, true)
    a.stream.sendHeaders([metadataEntry('h', 'v')])
    a.stream.write(message(3))
    a.stream.close(Code.NotFound, 'no such thing', [metadataEntry('grpc-status-details-bin', 'CAUSA2ZvbyI=')])
    const status = await rec.closed()
    assert.deepEqual(
      rec.headers?.map((m) => [m.key, m.value]),
      [['h', 'v']],
    )
    assert.deepEqual(rec.data, message(3))
    assert.equal(status.code, Code.NotFound)
    assert.equal(status.message, 'no such thing')
    assert.deepEqual(
      status.trailers.map((m) => [m.key, m.value]),
      [['grpc-status-details-bin', 'CAUSA2ZvbyI=']],
    )
    await loop.settled()
    assert.equal(loop.delivered.toCallee, 1, 'open, data and end of stream travel in one frame')
  })

  it('tunnel - bidi: both directions in order, half-close, then the status', async () => {
    const { loop, nextAccepted, open, client, server } = pair()
    const rec = new Recorder()
    const s = open(rec)
    const parts = [message(10, 1), message(70_000, 2), message(0), message(5, 3)]
    for (const p of parts) s.write(p)
    const a = await nextAccepted()
    await a.events.received(parts.reduce((n, p) => n + p.byteLength, 0))
    assert.deepEqual(a.events.data, concat(parts))
    assert.equal(a.events.ended, false)
    for (const p of parts) a.stream.write(p)
    await rec.received(parts.reduce((n, p) => n + p.byteLength, 0))
    assert.deepEqual(rec.data, concat(parts))
    s.end()
    await loop.settled()
    assert.equal(a.events.ended, true, 'the half-close reached the callee')
    a.stream.close(0, '', [])
    assert.equal((await rec.closed()).code, 0)
    assert.equal(client.stats.streams, 0)
    assert.equal(server.stats.streams, 0)
    assert.equal(client.stats.bufferedBytes + server.stats.bufferedBytes, 0)
  })

  it('tunnel - a stalled caller consumer stops the callee producer: buffered bytes stay within the window', async () => {
    const windowBytes = 128 * 1024
    const { loop, nextAccepted, open, client, server } = pair({ windowBytes })
    const rec = new Recorder()
    rec.accepting = false
    const s = open(rec)
    s.end()
    const a = await nextAccepted()
    const total = 4 * 1024 * 1024
    const p = produce(a.stream, a.events, total, 16 * 1024)
    await loop.settled()
    // The consumer took one chunk and paused; the rest is held by credit.
    assert.equal(p.blocked(), true, 'the producer is told to wait')
    assert.ok(p.sent() <= windowBytes + 2 * 16 * 1024, `producer sent ${p.sent()} bytes into a ${windowBytes} byte window`)
    assert.ok(client.stats.bufferedBytes <= windowBytes, `caller holds ${client.stats.bufferedBytes}`)
    assert.ok(server.stats.bufferedBytes <= 16 * 1024, `callee holds ${server.stats.bufferedBytes}`)
    const stalledAt = p.sent()
    await loop.settled()
    assert.equal(p.sent(), stalledAt, 'nothing more is produced while the consumer is stalled')
    // Draining resumes the producer; every byte arrives in order.
    rec.accepting = true
    s.resume()
    while (p.sent() < total || rec.bytes < total) {
      p.resume()
      await loop.settled()
    }
    const expected: Uint8Array[] = []
    for (let sent = 0; sent < total; ) {
      const m = message(Math.min(16 * 1024, total - sent) - 5, sent)
      expected.push(m)
      sent += m.byteLength
    }
    assert.ok(Buffer.from(rec.data).equals(Buffer.from(concat(expected))))
    assert.ok(client.stats.peakBufferedBytes <= windowBytes, `caller peak ${client.stats.peakBufferedBytes}`)
    console.log(
      `stalled consumer: producer stopped at ${stalledAt} bytes; peak buffered caller ${client.stats.peakBufferedBytes}, callee ${server.stats.peakBufferedBytes} (window ${windowBytes})`,
    )
  })

  it('tunnel - a stalled callee consumer stops the caller producer: buffered bytes stay within the window', async () => {
    const windowBytes = 96 * 1024
    const { loop, nextAccepted, open, client, server } = pair({ windowBytes })
    const rec = new Recorder()
    const s = open(rec)
    const p = produce(s, rec, 2 * 1024 * 1024, 10_000)
    const a = await nextAccepted()
    a.events.accepting = false
    await loop.settled()
    assert.equal(p.blocked(), true)
    assert.ok(server.stats.bufferedBytes <= windowBytes, `callee holds ${server.stats.bufferedBytes}`)
    assert.ok(client.stats.bufferedBytes <= 10_000, `caller holds ${client.stats.bufferedBytes}`)
    assert.ok(p.sent() <= windowBytes + 3 * 10_000, `producer sent ${p.sent()}`)
    a.events.accepting = true
    a.stream.resume()
    while (a.events.bytes < 2 * 1024 * 1024) {
      p.resume()
      await loop.settled()
    }
    assert.ok(server.stats.peakBufferedBytes <= windowBytes, `callee peak ${server.stats.peakBufferedBytes}`)
  })

  it('tunnel - a congested link holds data frames until it drains, then resumes the producer', async () => {
    // A window large enough that no credit grant (which also resumes a producer) happens in this test.
    const { loop, nextAccepted, open, client } = pair({ highWaterMarkBytes: 20_000, windowBytes: 1024 * 1024 })
    const rec = new Recorder()
    const s = open(rec)
    s.write(message(10))
    const a = await nextAccepted()
    await loop.settled()
    // A write that congests the link: the producer waits and is resumed when the link drains.
    loop.pause()
    assert.equal(s.write(message(30_000)), false, 'past the high-water mark the producer is told to wait')
    let writable = rec.writable
    loop.resume()
    await loop.settled()
    assert.equal(rec.writable, writable + 1, 'the producer is resumed once the link drained')
    // Data written while congested waits in the endpoint, not on the link.
    loop.pause()
    assert.equal(s.write(message(30_000, 1)), false)
    assert.equal(s.write(message(30_000, 2)), false)
    assert.equal(client.stats.bufferedBytes, 30_005)
    writable = rec.writable
    loop.resume()
    await a.events.received(15 + 3 * 30_005)
    await loop.settled()
    assert.equal(rec.writable, writable + 1)
    assert.equal(client.stats.bufferedBytes, 0)
    assert.deepEqual(a.events.data, concat([message(10), message(30_000), message(30_000, 1), message(30_000, 2)]))
  })

  it('tunnel - the open carries the time left; the caller ends DEADLINE_EXCEEDED at its deadline and resets the callee', async () => {
    const { clock, nextAccepted, open, client } = pair()
    const rec = new Recorder()
    // The call's 1000 ms deadline was set 300 ms before the stream opened (time spent at the ingress).
    const s = open(rec, { deadlineAtMs: clock.nowMs() - 300 + 1_000 })
    s.write(message(1))
    const a = await nextAccepted()
    assert.ok(a.open.timeout != null)
    assert.equal(Number(a.open.timeout.seconds) * 1000 + a.open.timeout.nanos / 1e6, 700)
    await clock.advance(699)
    assert.equal(rec.status, undefined)
    await clock.advance(1)
    assert.equal(rec.last()?.code, Code.DeadlineExceeded)
    assert.match(rec.last()?.message ?? '', /700 ms deadline/)
    const st = await a.events.closed()
    assert.equal(st.code, Code.DeadlineExceeded)
    assert.equal(client.stats.streams, 0)
  })

  it('tunnel - less than 1 ms left goes as 1 ms, not as a deadline already passed', async () => {
    const { clock, nextAccepted, open } = pair()
    const s = open(new Recorder(), { deadlineAtMs: clock.nowMs() + 0.9 })
    s.write(message(1))
    const a = await nextAccepted()
    assert.ok(a.open.timeout != null)
    assert.equal(durationToMs(a.open.timeout), 1)
  })

  it('tunnel - the callee enforces the time left too', async () => {
    const clock = new FakeClock()
    const sent: PeerFrame[] = []
    const rec = new Recorder()
    const server = new TunnelServer({ send: (f) => sent.push(f) > 0 }, { log, clock, remotePeerId: CALLER, handler: () => rec })
    server.receive(openFrame(openOf(1n, { timeout: { $typeName: 'google.protobuf.Duration', seconds: 2n, nanos: 0 } })))
    await clock.advance(1_999)
    assert.equal(rec.status, undefined)
    await clock.advance(1)
    assert.equal(rec.last()?.code, Code.DeadlineExceeded)
    const reset = sent.find((f) => f.kind.case === 'streamReset')
    assert.ok(reset?.kind.case === 'streamReset')
    assert.equal(reset.kind.value.code, Code.DeadlineExceeded)
    assert.match(reset.kind.value.message, /callee's gateway/)
  })

  it('tunnel - cancel: a caller reset reaches the callee consumer, a callee reset reaches the caller', async () => {
    const { nextAccepted, open, client, server } = pair()
    const r1 = new Recorder()
    const s1 = open(r1)
    s1.write(message(1))
    const a1 = await nextAccepted()
    s1.reset(Code.Canceled, 'the client cancelled the call')
    const st = await a1.events.closed()
    assert.equal(st.code, Code.Canceled)
    assert.equal(st.message, 'the client cancelled the call')
    assert.equal(r1.status, undefined, "a consumer's own reset is not reported back to it")
    const r2 = new Recorder()
    const s2 = open(r2)
    s2.write(message(1))
    const a2 = await nextAccepted()
    a2.stream.reset(Code.Aborted, 'backend went away')
    const st2 = await r2.closed()
    assert.equal(st2.code, Code.Aborted)
    assert.equal(st2.message, 'backend went away')
    assert.equal(client.stats.streams + server.stats.streams, 0)
  })

  it('tunnel - a reset before the open left sends nothing at all', async () => {
    const { loop, open } = pair()
    const s = open(new Recorder())
    s.write(message(1))
    s.reset(Code.Canceled, 'gone')
    await loop.settled()
    assert.deepEqual(loop.delivered, { toCallee: 0, toCaller: 0 })
  })

  it('tunnel - a link failure ends every stream UNAVAILABLE on both sides and nothing is replayed', async () => {
    const { loop, nextAccepted, open, client } = pair()
    const recs = [new Recorder(), new Recorder()]
    const streams = recs.map((r) => open(r))
    for (const s of streams) s.write(message(1))
    const accepted = [await nextAccepted(), await nextAccepted()]
    const before = loop.delivered
    loop.fail(new StargateError(Code.Unavailable, 'relay circuit closed'))
    for (const r of [...recs, ...accepted.map((a) => a.events)]) {
      const st = await r.closed()
      assert.equal(st.code, Code.Unavailable)
      assert.match(st.message, /relay circuit closed.*not replayed/)
    }
    assert.throws(
      () => open(new Recorder()),
      (err: unknown) => err instanceof StargateError && err.code === Code.Unavailable,
    )
    assert.equal(client.usable, false)
    await loop.settled()
    assert.deepEqual(loop.delivered, before, 'no frame crosses a failed link')
  })

  it('tunnel - stream caps: the caller refuses an open past the limit, the callee resets one', async () => {
    const { open } = pair({ maxStreams: 2 })
    open(new Recorder())
    open(new Recorder())
    assert.throws(
      () => open(new Recorder()),
      (err: unknown) => err instanceof StargateError && err.code === Code.ResourceExhausted && /2 tunnelled streams/.test(err.message),
    )
    const sent: PeerFrame[] = []
    const server = new TunnelServer(
      { send: (f) => sent.push(f) > 0 },
      { log, clock: new FakeClock(), maxStreams: 1, remotePeerId: CALLER, handler: () => new Recorder() },
    )
    server.receive(openFrame(openOf(1n)))
    server.receive(openFrame(openOf(2n)))
    const resets = sent.filter((f) => f.kind.case === 'streamReset')
    assert.equal(resets.length, 1)
    assert.ok(resets[0]!.kind.case === 'streamReset' && resets[0]!.kind.value.exchangeId === 2n)
    assert.equal(resets[0]!.kind.value.code, Code.ResourceExhausted)
    assert.equal(server.stats.streams, 1)
  })

  it('tunnel - a message over the max size ends the stream RESOURCE_EXHAUSTED naming the limit, either direction', async () => {
    const { nextAccepted, open } = pair({ maxMessageBytes: 1000 })
    // Request: refused by the caller's own endpoint before it leaves.
    const r1 = new Recorder()
    const s1 = open(r1)
    s1.write(message(10))
    const a1 = await nextAccepted()
    assert.equal(s1.write(message(1001).subarray(0, 100)), false)
    assert.equal(r1.last()?.code, Code.ResourceExhausted)
    assert.equal(r1.last()?.message, 'request message of 1001 bytes exceeds the max message size of 1000 bytes')
    assert.equal((await a1.events.closed()).code, Code.ResourceExhausted)
    // Response: refused by the callee's endpoint; the caller gets the same status.
    const r2 = new Recorder()
    open(r2).write(message(1))
    const a2 = await nextAccepted()
    a2.stream.write(message(5000))
    assert.equal(a2.events.last()?.code, Code.ResourceExhausted)
    const st = await r2.closed()
    assert.equal(st.code, Code.ResourceExhausted)
    assert.equal(st.message, 'response message of 5000 bytes exceeds the max message size of 1000 bytes')
  })

  it('tunnel - the callee enforces its own max message size on what arrives', async () => {
    const { nextAccepted, open } = pair({ maxMessageBytes: 1 << 20, serverMaxMessageBytes: 1000 })
    const rec = new Recorder()
    const s = open(rec)
    s.write(message(2000))
    const a = await nextAccepted()
    assert.equal((await a.events.closed()).code, Code.ResourceExhausted)
    const st = await rec.closed()
    assert.equal(st.code, Code.ResourceExhausted)
    assert.equal(st.message, 'request message of 2000 bytes exceeds the max message size of 1000 bytes')
  })

  it('tunnel - a peer sending beyond its credit gets its stream reset and nothing is buffered', () => {
    const sent: PeerFrame[] = []
    const rec = new Recorder()
    rec.accepting = false
    const server = new TunnelServer(
      { send: (f) => sent.push(f) > 0 },
      { log, clock: new FakeClock(), windowBytes: OPEN_CREDIT_BYTES, remotePeerId: CALLER, handler: () => rec },
    )
    server.receive(openFrame(openOf(1n)))
    // The consumer takes the first window and pauses; credit for it goes back, and the next window queues.
    server.receive(dataFrame(1n, message(OPEN_CREDIT_BYTES - 5), false))
    assert.equal(server.stats.bufferedBytes, 0, 'the first chunk went to the consumer')
    server.receive(dataFrame(1n, message(OPEN_CREDIT_BYTES - 5), false))
    assert.equal(server.stats.bufferedBytes, OPEN_CREDIT_BYTES)
    assert.equal(rec.last(), undefined)
    server.receive(dataFrame(1n, new Uint8Array(1), false))
    assert.equal(rec.last()?.code, Code.Internal)
    assert.match(rec.last()?.message ?? '', /1 bytes with only 0 bytes of flow-control credit/)
    assert.equal(server.stats.bufferedBytes, 0)
    assert.equal(server.stats.streams, 0)
    assert.ok(sent.some((f) => f.kind.case === 'streamReset' && f.kind.value.code === Code.Internal))
    // Later frames of the reset stream are ignored.
    server.receive(dataFrame(1n, new Uint8Array(1), false))
    assert.equal(server.stats.bufferedBytes, 0)
  })

  it('tunnel - the callee grants its window at open and more credit as its consumer drains', () => {
    const sent: PeerFrame[] = []
    const rec = new Recorder()
    const windowBytes = 256 * 1024
    const server = new TunnelServer(
      { send: (f) => sent.push(f) > 0 },
      { log, clock: new FakeClock(), windowBytes, remotePeerId: CALLER, handler: () => rec },
    )
    server.receive(openFrame(openOf(1n)))
    const credits = (): number[] => sent.flatMap((f) => (f.kind.case === 'streamWindow' ? [f.kind.value.creditBytes] : []))
    assert.deepEqual(credits(), [windowBytes - OPEN_CREDIT_BYTES])
    // The whole window arrives; the consumer took it all, so credit comes back a quarter at a time.
    for (let i = 0; i < 16; i++) server.receive(dataFrame(1n, new Uint8Array(windowBytes / 16), false))
    assert.deepEqual(credits().slice(1), [windowBytes / 4, windowBytes / 4, windowBytes / 4, windowBytes / 4])
    assert.equal(rec.bytes, windowBytes)
  })

  it('tunnel - a StreamOpen naming another caller than the link is refused PERMISSION_DENIED', () => {
    const sent: PeerFrame[] = []
    let handled = 0
    const server = new TunnelServer(
      { send: (f) => sent.push(f) > 0 },
      {
        log,
        clock: new FakeClock(),
        remotePeerId: CALLER,
        handler: () => {
          handled++
          return new Recorder()
        },
      },
    )
    server.receive(openFrame(openOf(1n, { callerPeerId: '12D3KooWSomeoneElse' })))
    assert.equal(handled, 0)
    assert.ok(sent[0]?.kind.case === 'streamReset' && sent[0].kind.value.code === Code.PermissionDenied)
  })

  it('tunnel - frames for the other side are counted and dropped', () => {
    const rec = new Recorder()
    const server = new TunnelServer({ send: () => true }, { log, clock: new FakeClock(), remotePeerId: CALLER, handler: () => rec })
    server.receive({ $typeName: 'stargate.v1.PeerFrame', kind: { case: 'streamClose', value: closeValue(1n) }, sequence: 0n })
    assert.equal(server.stats.unexpectedFrames, 1)
    const client = new TunnelClient({ send: () => true } satisfies TunnelLink, {
      log,
      clock: new FakeClock(),
      localPeerId: CALLER,
      remotePeerId: CALLEE,
      tier: Tier.DIRECT,
    })
    client.receive(openFrame(openOf(1n)))
    client.receive(windowFrame(99n, 5))
    assert.equal(client.stats.unexpectedFrames, 1)
  })

  it('tunnel - options out of range are refused naming the option', () => {
    assert.throws(
      () =>
        new TunnelClient({ send: () => true }, { log, windowBytes: 1000, localPeerId: CALLER, remotePeerId: CALLEE, tier: Tier.DIRECT }),
      /windowBytes must be an integer from 65536/,
    )
  })
})

function openOf(exchangeId: bigint, extra: Partial<StreamOpen> = {}): StreamOpen {
  return {
    $typeName: 'stargate.v1.StreamOpen',
    exchangeId,
    requestId: `r${exchangeId}`,
    method: '/stargate.test.v1.EchoService/Bidi',
    metadata: [],
    traceContext: {},
    callerPeerId: CALLER,
    tier: Tier.DIRECT,
    initialWindowBytes: 65_536,
    data: new Uint8Array(0),
    endOfStream: false,
    idempotent: false,
    ...extra,
  }
}

function closeValue(exchangeId: bigint) {
  return { $typeName: 'stargate.v1.StreamClose' as const, exchangeId, code: 0, message: '', trailers: [] }
}
