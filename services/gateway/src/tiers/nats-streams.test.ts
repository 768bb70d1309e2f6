/**
 * NATS stream links between two gateways' NatsStreams over an in-memory bus that behaves as NATS does for
 * them (ordered asynchronous delivery, reply subjects, "no responders", request-reply, max_payload), with
 * real sealing (seal.ts) and real TunnelClient / TunnelServer endpoints. The bus can drop or reorder the
 * messages a test picks. Real nats-server runs are in test/integration/tunnel-nats.test.ts.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { FakeClock } from '@stargate/shared/clock'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { Code, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry, PeerFrame } from '@stargate/shared/gen/envelope'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import { createLogger } from '@stargate/shared/log'
import { Sealer } from '@stargate/shared/seal'
import { eventually } from '../../../../test/lib/eventually.ts'
import type { BusHandler, BusSubscription } from '../nats.ts'
import type { StreamSink } from '../peer/server.ts'
import type { ClientStreamEvents } from '../tunnel/client.ts'
import type { TunnelStatus } from '../tunnel/endpoint.ts'
import type { ServerStreamEvents, TunnelHandler } from '../tunnel/server.ts'
import { NATS_STREAM_MIN_PAYLOAD_BYTES, NatsStreams, type StreamBus } from './nats-streams.ts'

const log = createLogger('test', { level: 'silent' })

interface Message {
  subject: string
  data: Uint8Array
  reply: string
  from: MemoryBus
}

type Entry = { bus: MemoryBus; handler: BusHandler }

/**
 * The shared message space of the in-memory connections. As in NATS, a connection's subscribe, unsubscribe
 * and publish take effect in the order it made them (one queue here), and messages arrive asynchronously.
 */
class Space {
  readonly subs = new Map<string, Set<Entry>>()
  readonly queue: Array<Message | { subject: string; entry: Entry; op: 'sub' | 'unsub' }> = []
  /** Sees every message before delivery: return 'drop' or 'hold' (kept for `release`) to interfere. */
  tap?: (m: Message) => 'deliver' | 'drop' | 'hold'
  held: Message[] = []
  delivered = 0
  private scheduled = false

  publish(m: Message | { subject: string; entry: Entry; op: 'sub' | 'unsub' }): void {
    this.queue.push(m)
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.run)
    }
  }

  /** Delivers held messages now, in the order given. */
  release(messages: Message[]): void {
    for (const m of messages) this.deliver(m)
  }

  private readonly run = (): void => {
    this.scheduled = false
    for (const m of this.queue.splice(0)) {
      // What a dropped connection sent and the server had not yet read is gone with it.
      if (!('op' in m ? m.entry.bus : m.from).connected) continue
      if ('op' in m) {
        this.change(m.subject, m.entry, m.op)
        continue
      }
      const verdict = this.tap?.(m) ?? 'deliver'
      if (verdict === 'drop') continue
      if (verdict === 'hold') {
        this.held.push(m)
        continue
      }
      this.deliver(m)
    }
  }

  private change(subject: string, entry: Entry, op: 'sub' | 'unsub'): void {
    let set = this.subs.get(subject)
    if (op === 'sub') {
      if (set == null) {
        set = new Set()
        this.subs.set(subject, set)
      }
      set.add(entry)
    } else {
      set?.delete(entry)
      if (set?.size === 0) this.subs.delete(subject)
    }
  }

  private deliver(m: Message): void {
    const targets = [...(this.subs.get(m.subject) ?? [])]
    if (targets.length === 0) {
      // NATS answers a message with a reply subject that nobody takes with a 503 status on the reply subject.
      if (m.reply !== '') {
        for (const t of this.subs.get(m.reply) ?? []) t.handler(new Uint8Array(0), undefined, { replySubject: '', noResponders: true })
      }
      return
    }
    this.delivered++
    for (const t of targets) {
      t.handler(m.data, m.reply !== '' ? (bytes) => t.bus.publish(m.reply, bytes) : undefined, {
        replySubject: m.reply,
        noResponders: false,
      })
    }
  }
}

/** One gateway's connection to the space (StreamBus), request-reply on the given clock. */
class MemoryBus implements StreamBus {
  connected = true
  maxPayloadBytes = NATS_STREAM_MIN_PAYLOAD_BYTES
  readonly space: Space
  readonly clock: FakeClock
  private readonly own = new Set<{ subject: string; entry: Entry }>()
  private readonly disconnected: Array<(reason: string) => void> = []
  private inbox = 0

  constructor(space: Space, clock: FakeClock) {
    this.space = space
    this.clock = clock
  }

  /** Subscriptions this connection holds. */
  get subscriptions(): number {
    return this.own.size
  }

  callSubject(peerId: string): string {
    return `t.call.${peerId}`
  }

  streamSubject(peerId: string, token: string): string {
    return `t.stream.${peerId}.${token}`
  }

  subscribe(subject: string, handler: BusHandler): BusSubscription {
    // A handler stops at once when its client unsubscribes, though the server learns of it in order.
    let live = true
    const entry: Entry = {
      bus: this,
      handler: (data, reply, info) => {
        if (live) handler(data, reply, info)
      },
    }
    const own = { subject, entry }
    this.space.publish({ subject, entry, op: 'sub' })
    this.own.add(own)
    return {
      unsubscribe: () => {
        if (!this.own.delete(own)) return
        live = false
        this.space.publish({ subject, entry, op: 'unsub' })
      },
    }
  }

  publish(subject: string, data: Uint8Array, reply = ''): boolean {
    if (!this.connected) return false
    assert.ok(data.byteLength <= this.maxPayloadBytes, `a ${data.byteLength}-byte message over max_payload ${this.maxPayloadBytes}`)
    this.space.publish({ subject, data, reply, from: this })
    return true
  }

  request<T>(subject: string, data: Uint8Array, timeoutMs: number, _signal: AbortSignal, accept: (answer: Uint8Array) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const inbox = `t.inbox.${++this.inbox}`
      const sub = this.subscribe(inbox, (answer, _reply, info) => {
        sub.unsubscribe()
        timer.clear()
        if (info.noResponders) reject(new StargateError(Code.Unavailable, `no gateway listens on ${subject}`))
        else resolve(accept(answer))
      })
      const timer = this.clock.setTimeout(() => {
        sub.unsubscribe()
        reject(new StargateError(Code.DeadlineExceeded, `no answer on ${subject} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.publish(subject, data, inbox)
    })
  }

  onDisconnected(fn: (reason: string) => void): void {
    this.disconnected.push(fn)
  }

  /** The connection drops: every subscription goes, the hooks run. */
  drop(): void {
    this.connected = false
    for (const own of [...this.own]) {
      this.own.delete(own)
      this.space.subs.get(own.subject)?.delete(own.entry)
    }
    for (const fn of this.disconnected) fn('lost the NATS connection')
  }
}

/** The callee's backend: echoes request data as it arrives, closes OK after the request ended (unless held). */
class EchoSink implements StreamSink {
  readonly limits = {}
  calls = 0
  cancelled: TunnelStatus[] = []
  received = 0
  /** Answer nothing until the caller ends or resets. */
  silent = false

  handler(): TunnelHandler {
    return (stream) => {
      this.calls++
      const events: ServerStreamEvents = {
        onData: (data) => {
          this.received += data.byteLength
          if (!this.silent) stream.write(data)
          return true
        },
        onEnd: () => {
          if (!this.silent) stream.close(0, '', [])
        },
        onClose: (status) => {
          this.cancelled.push(status)
        },
        onWritable: () => {},
      }
      return events
    }
  }
}

/** What a caller's client sees. */
class Consumer implements ClientStreamEvents {
  headers?: MetadataEntry[]
  readonly chunks: Uint8Array[] = []
  status?: TunnelStatus
  onHeaders(metadata: MetadataEntry[]): void {
    this.headers = metadata
  }
  onData(data: Uint8Array): boolean {
    this.chunks.push(data)
    return true
  }
  onClose(status: TunnelStatus): void {
    this.status = status
  }
  onWritable(): void {}
  get data(): Buffer {
    return Buffer.concat(this.chunks)
  }
}

/** Waits for a condition that an event will make true (polled every timer turn). */
async function until(cond: () => boolean, what: string): Promise<void> {
  await eventually(what, cond, { intervalMs: 0 })
}

/** A gRPC length-prefixed message of n bytes. */
function message(n: number, seed = 0): Uint8Array {
  return new Uint8Array(encodeFrame(Uint8Array.from({ length: n }, (_, i) => (seed + i * 7) & 0xff)))
}

const PROBE_MS = 1_000
const PROBE_TIMEOUT_MS = 1_000

async function gateway(space: Space, clock: FakeClock, sink: StreamSink, options: { maxStreamsPerPeer?: number; inbound?: boolean } = {}) {
  const key = await generateKeyPair('Ed25519')
  const sealer = new Sealer(key)
  /** Opens what is sealed to this gateway without touching its own replay guard (for looking at frames). */
  const peek = new Sealer(key)
  const bus = new MemoryBus(space, clock)
  const streams = new NatsStreams({
    bus,
    codec: sealer,
    selfPeerId: sealer.peerId,
    sink,
    limits: {},
    maxStreamsPerPeer: options.maxStreamsPerPeer ?? 16,
    maxInboundStreams: 64,
    probeMs: PROBE_MS,
    probeTimeoutMs: PROBE_TIMEOUT_MS,
    clock,
    log,
  })
  // The call subject, as natsInbound serves it: StreamOpens to the streams, empty probes answered.
  if (options.inbound !== false) {
    bus.subscribe(bus.callSubject(sealer.peerId), (data, reply, info) => {
      if (data.byteLength === 0) {
        reply?.(data)
        return
      }
      const opened = sealer.open(data)
      streams.accept(decodePeerFrame(opened.frame), opened.senderPeerId, info.replySubject)
    })
  }
  return { sealer, peek, bus, streams, peerId: sealer.peerId }
}

async function pair(options: { maxStreamsPerPeer?: number } = {}) {
  const space = new Space()
  const clock = new FakeClock()
  const sink = new EchoSink()
  const a = await gateway(space, clock, new EchoSink())
  const b = await gateway(space, clock, sink, options)
  return { space, clock, sink, a, b }
}

/** The PeerFrame inside a message sealed to the gateway whose peek sealer is `to`. */
function frameIn(m: Message, to: Sealer): PeerFrame {
  return decodePeerFrame(to.open(m.data).frame)
}

/** Subscriptions a gateway holds with no stream: its call subject. */
const IDLE = 1

describe('NATS stream links', () => {
  it('nats streams - a stream crosses both ways, data split to fit max_payload, sequence numbers 1, 2, 3 ... each way', async () => {
    const { space, a, b, sink } = await pair()
    const seen: Array<{ to: string; seq: bigint; kind: string | undefined }> = []
    space.tap = (m) => {
      if (m.data.byteLength > 0 && m.subject !== '') {
        const to = m.from === a.bus ? b.peek : a.peek
        const f = frameIn(m, to)
        seen.push({ to: to.peerId, seq: f.sequence, kind: f.kind.case })
      }
      return 'deliver'
    }
    const consumer = new Consumer()
    const stream = a.streams.openStream(b.peerId, { method: '/pkg.Svc/Echo', requestId: 'r1', metadata: [] }, consumer)
    const request = message(300_000, 1)
    for (let at = 0; at < request.byteLength; at += 16_384) stream.write(request.subarray(at, at + 16_384))
    stream.end()
    await until(() => consumer.status != null, 'the status')
    assert.equal(consumer.status?.code, 0, consumer.status?.message)
    assert.ok(consumer.data.equals(Buffer.from(request)), 'the echo is the request, byte for byte')
    assert.equal(sink.received, request.byteLength)
    for (const who of [a.peerId, b.peerId]) {
      const seqs = seen.filter((s) => s.to === who).map((s) => s.seq)
      assert.deepEqual(
        seqs,
        seqs.map((_, i) => BigInt(i + 1)),
        `frames to ${who === a.peerId ? 'A' : 'B'} numbered in order from 1`,
      )
    }
    assert.equal(seen[0]?.kind, 'streamOpen')
    // Everything is released on both sides.
    await until(() => a.bus.subscriptions === IDLE && b.bus.subscriptions === IDLE, 'the stream subscriptions gone')
    assert.deepEqual([a.streams.stats.callerStreams, b.streams.stats.calleeStreams], [0, 0])
  })

  it('nats streams - a StreamOpen larger than max_payload goes without its data, which follows once the callee answered', async () => {
    const { space, a, b } = await pair()
    const kinds: Array<string | undefined> = []
    space.tap = (m) => {
      if (m.from === a.bus && m.data.byteLength > 0) kinds.push(frameIn(m, b.peek).kind.case)
      return 'deliver'
    }
    const consumer = new Consumer()
    const stream = a.streams.openStream(b.peerId, { method: '/pkg.Svc/Echo', requestId: 'r2', metadata: [] }, consumer)
    // One chunk the size of the opening credit: it rides in the StreamOpen, which then exceeds 64 KiB.
    const request = message(65_536 - 5, 2)
    stream.write(request)
    stream.end()
    await until(() => consumer.status != null, 'the status')
    assert.equal(consumer.status?.code, 0, consumer.status?.message)
    assert.ok(consumer.data.equals(Buffer.from(request)))
    assert.equal(kinds[0], 'streamOpen')
    assert.equal(kinds[1], 'streamData')
  })

  for (const [name, interfere, pattern] of [
    ['a frame lost', 'drop', /NATS delivered frame 5 where frame 4 was due \(1 lost\)/],
    ['two frames swapped', 'swap', /NATS delivered frame 5 where frame 4 was due \(1 lost\)/],
  ] as const) {
    it(`nats streams - ${name} on the way to the caller ends the stream UNAVAILABLE on both sides, never replayed`, async () => {
      const { space, a, b, sink } = await pair()
      let toCaller = 0
      space.tap = (m) => {
        if (m.from !== b.bus || m.data.byteLength === 0) return 'deliver'
        toCaller++
        // Frame 1 is B's window, 2 its headers, 3, 4 and 5 echoed data: frame 4 goes missing (or comes late).
        if (toCaller === 4) return interfere === 'drop' ? 'drop' : 'hold'
        if (toCaller === 5 && interfere === 'swap') {
          setImmediate(() => space.release(space.held.splice(0)))
        }
        return 'deliver'
      }
      const consumer = new Consumer()
      const stream = a.streams.openStream(b.peerId, { method: '/pkg.Svc/Echo', requestId: 'r3', metadata: [] }, consumer)
      stream.write(message(10, 3))
      await until(() => consumer.chunks.length === 1, 'the first echo')
      stream.write(message(20, 4))
      stream.write(message(30, 5))
      await until(() => consumer.status != null, 'the status')
      assert.equal(consumer.status?.code, Code.Unavailable)
      assert.match(consumer.status?.message ?? '', pattern)
      assert.match(consumer.status?.message ?? '', /not replayed/)
      assert.equal(consumer.chunks.length, 1, 'nothing after the loss reached the client')
      assert.equal(a.streams.stats.failures.lost, 1)
      // B heard of it (A's reset) and ended the call at its backend.
      await until(() => sink.cancelled.length === 1, 'the callee side ended')
      assert.equal(sink.cancelled[0]?.code, Code.Unavailable)
      assert.match(sink.cancelled[0]?.message ?? '', pattern)
      assert.equal(sink.calls, 1, 'the call was not opened again')
      await until(() => a.bus.subscriptions === IDLE && b.bus.subscriptions === IDLE, 'the stream subscriptions gone')
    })
  }

  it('nats streams - a StreamOpen nobody listens for ends the stream as undelivered; nothing is left subscribed', async () => {
    const space = new Space()
    const clock = new FakeClock()
    const a = await gateway(space, clock, new EchoSink())
    const absent = await gateway(space, clock, new EchoSink(), { inbound: false })
    const consumer = new Consumer()
    const stream = a.streams.openStream(absent.peerId, { method: '/pkg.Svc/Echo', requestId: 'r4', metadata: [] }, consumer)
    stream.write(message(10))
    stream.end()
    await until(() => consumer.status != null, 'the status')
    assert.equal(consumer.status?.code, Code.Unavailable)
    assert.equal(consumer.status?.undelivered, true)
    assert.match(consumer.status?.message ?? '', /failed before the stream reached the peer \(no gateway listens on t\.call\./)
    assert.equal(a.bus.subscriptions, IDLE)
    assert.equal(a.streams.stats.failures.peer_gone, 1)
  })

  it('nats streams - a callee that answers its call subject but never took the StreamOpen: undelivered after a probe', async () => {
    const space = new Space()
    const clock = new FakeClock()
    const a = await gateway(space, clock, new EchoSink())
    const deaf = await gateway(space, clock, new EchoSink(), { inbound: false })
    // Answers probes on its call subject, drops StreamOpens (as when their seal is refused).
    deaf.bus.subscribe(deaf.bus.callSubject(deaf.peerId), (data, reply) => {
      if (data.byteLength === 0) reply?.(data)
    })
    const consumer = new Consumer()
    a.streams.openStream(deaf.peerId, { method: '/pkg.Svc/Echo', requestId: 'r5', metadata: [] }, consumer).end()
    await until(() => space.delivered === 1, 'the StreamOpen delivered')
    await clock.advance(PROBE_MS)
    await until(() => consumer.status != null, 'the status')
    assert.equal(consumer.status?.undelivered, true)
    assert.match(consumer.status?.message ?? '', /answers on NATS but did not take the stream/)
    assert.equal(a.bus.subscriptions, IDLE)
  })

  it('nats streams - a peer that went away is found by the probe of a quiet stream; its subscription is released', async () => {
    const { clock, a, b, sink } = await pair()
    sink.silent = true
    const consumer = new Consumer()
    a.streams.openStream(b.peerId, { method: '/pkg.Svc/Wait', requestId: 'r6', metadata: [] }, consumer).write(message(1))
    await until(() => sink.received > 0 && b.streams.stats.calleeStreams === 1, 'the stream at B')
    // B's process dies: its subscriptions vanish with its connection.
    b.bus.drop()
    await clock.advance(PROBE_MS)
    await until(() => consumer.status != null, 'the status')
    assert.equal(consumer.status?.code, Code.Unavailable)
    assert.match(consumer.status?.message ?? '', /no longer listens on NATS for the stream/)
    assert.notEqual(consumer.status?.undelivered, true)
    assert.equal(a.bus.subscriptions, IDLE)
    // B's side ended too (its connection dropped), with nothing left.
    assert.equal(sink.cancelled.length, 1)
    assert.equal(b.streams.stats.calleeStreams, 0)
  })

  it('nats streams - a quiet stream whose peer still listens stays open (the probe is answered)', async () => {
    const { clock, a, b, sink } = await pair()
    sink.silent = true
    const consumer = new Consumer()
    const stream = a.streams.openStream(b.peerId, { method: '/pkg.Svc/Wait', requestId: 'r7', metadata: [] }, consumer)
    stream.write(message(1))
    await until(() => sink.received > 0, 'the stream at B')
    for (let i = 0; i < 5; i++) {
      await clock.advance(PROBE_MS)
      await until(() => a.bus.subscriptions === IDLE + 1, 'the probe answered (its inbox gone)')
      await new Promise((resolve) => setImmediate(resolve))
    }
    assert.equal(consumer.status, undefined, 'the stream is still open')
    stream.reset(Code.Canceled, 'done')
    await until(() => sink.cancelled.length === 1, 'the reset at B')
    assert.equal(sink.cancelled[0]?.code, Code.Canceled)
  })

  it('nats streams - a reset before the callee named its subject still reaches it, then every subscription goes', async () => {
    const { space, a, b, sink } = await pair()
    sink.silent = true
    // Hold B's first frame: A's stream ends while it only knows B's call subject.
    space.tap = (m) => (m.from === b.bus && m.data.byteLength > 0 && space.held.length === 0 ? 'hold' : 'deliver')
    const consumer = new Consumer()
    const stream = a.streams.openStream(b.peerId, { method: '/pkg.Svc/Wait', requestId: 'r8', metadata: [] }, consumer)
    stream.write(message(1))
    await until(() => space.held.length === 1, "B's first frame held")
    stream.reset(Code.Canceled, 'the client cancelled')
    assert.equal(a.bus.subscriptions, IDLE + 1, 'A keeps its subject until B names its own')
    space.tap = undefined
    space.release(space.held.splice(0))
    await until(() => sink.cancelled.length === 1, 'the reset at B')
    assert.equal(sink.cancelled[0]?.code, Code.Canceled)
    await until(() => a.bus.subscriptions === IDLE && b.bus.subscriptions === IDLE, 'the stream subscriptions gone')
  })

  it('nats streams - past the per-peer limit the callee refuses RESOURCE_EXHAUSTED and holds nothing for it', async () => {
    const { a, b, sink } = await pair({ maxStreamsPerPeer: 1 })
    sink.silent = true
    const first = new Consumer()
    a.streams.openStream(b.peerId, { method: '/pkg.Svc/Wait', requestId: 'r9', metadata: [] }, first).write(message(1))
    await until(() => b.streams.stats.calleeStreams === 1, 'the first stream at B')
    const second = new Consumer()
    a.streams.openStream(b.peerId, { method: '/pkg.Svc/Wait', requestId: 'r10', metadata: [] }, second).end()
    await until(() => second.status != null, 'the refusal')
    assert.equal(second.status?.code, Code.ResourceExhausted)
    assert.match(second.status?.message ?? '', /already serves 1 tunnelled streams from peer .* on NATS/)
    assert.equal(b.streams.stats.calleeStreams, 1)
    assert.equal(b.bus.subscriptions, IDLE + 1, "B's call subject and the first stream's")
    await until(() => a.bus.subscriptions === IDLE + 1, "the refused stream's subscription gone at A")
  })

  it('nats streams - losing the NATS connection ends every stream UNAVAILABLE', async () => {
    const { a, b, sink } = await pair()
    sink.silent = true
    const consumers = [new Consumer(), new Consumer()]
    for (const [i, c] of consumers.entries()) {
      a.streams.openStream(b.peerId, { method: '/pkg.Svc/Wait', requestId: `r${20 + i}`, metadata: [] }, c).write(message(1))
    }
    await until(() => b.streams.stats.calleeStreams === 2, 'both streams at B')
    a.bus.drop()
    for (const c of consumers) {
      assert.equal(c.status?.code, Code.Unavailable)
      assert.match(c.status?.message ?? '', /lost the NATS connection/)
    }
    assert.equal(a.streams.stats.callerStreams, 0)
    assert.equal(a.streams.stats.failures.disconnected, 2)
  })

  it('nats streams - no stream opens while NATS cannot carry it (disconnected, max_payload below the minimum)', async () => {
    const { a, b } = await pair()
    a.bus.maxPayloadBytes = NATS_STREAM_MIN_PAYLOAD_BYTES - 1
    assert.match(a.streams.unavailableReason() ?? '', /max_payload of 65535 bytes is below the 65536 bytes/)
    assert.throws(
      () => a.streams.openStream(b.peerId, { method: '/pkg.Svc/Echo', requestId: 'r30', metadata: [] }, new Consumer()),
      (err: unknown) => err instanceof StargateError && err.code === Code.Unavailable,
    )
    a.bus.maxPayloadBytes = NATS_STREAM_MIN_PAYLOAD_BYTES
    a.bus.connected = false
    assert.equal(a.streams.unavailableReason(), 'NATS is not connected')
    assert.equal(a.bus.subscriptions, IDLE)
  })
})
