/**
 * Tunnelled streams on the peer channel and the stream server: the caller's PeerChannel hosts a TunnelClient,
 * serveCallStream hosts a TunnelServer, over a libp2p stream pair (mock muxer, real message streams with
 * backpressure). The router is not involved.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Connection, Stream } from '@libp2p/interface'
import { type StreamPairOptions, streamPair } from '@libp2p/utils'
import { Code } from '@stargate/shared/errors'
import type { MetadataEntry, StreamOpen } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import { createLogger } from '@stargate/shared/log'
import type { InboundMeta, PeerResponseInit } from '../inbound.ts'
import type { ClientStreamEvents } from '../tunnel/client.ts'
import type { TunnelStatus } from '../tunnel/endpoint.ts'
import { metadataEntry } from '../tunnel/frames.ts'
import type { ServerStreamEvents, TunnelServerStream } from '../tunnel/server.ts'
import { ConnectionBudgets } from './budget.ts'
import { PeerChannel } from './channel.ts'
import { serveCallStream } from './server.ts'

const log = createLogger('test', { level: 'silent' })

function connectionOf(peer: string, addr: string): Connection {
  return { remotePeer: { toString: () => peer }, remoteAddr: { toString: () => addr }, status: 'open' } as unknown as Connection
}

/** A gRPC message: flag byte, 4-byte length, payload of a pattern. */
function message(length: number, seed: number): Uint8Array {
  return new Uint8Array(encodeFrame(Uint8Array.from({ length }, (_, i) => (seed + i * 7) & 0xff)))
}

/** Collects one side's events. */
class Events implements ClientStreamEvents, ServerStreamEvents {
  readonly chunks: Uint8Array[] = []
  headers?: MetadataEntry[]
  ended = false
  status?: TunnelStatus
  writable = 0
  private waiters: Array<() => void> = []

  onData(data: Uint8Array): boolean {
    this.chunks.push(data)
    this.wake()
    return true
  }
  onHeaders(metadata: MetadataEntry[]): void {
    this.headers = metadata
  }
  onEnd(): void {
    this.ended = true
    this.wake()
  }
  onClose(status: TunnelStatus): void {
    this.status = status
    this.wake()
  }
  onWritable(): void {
    this.writable++
    this.wake()
  }
  get bytes(): number {
    return this.chunks.reduce((n, c) => n + c.byteLength, 0)
  }
  get data(): Buffer {
    return Buffer.concat(this.chunks)
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }
  async until(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise<void>((resolve) => this.waiters.push(resolve))
  }
}

interface Pair {
  channel: PeerChannel
  outbound: Stream
  inbound: Stream
  accepted: Array<{ stream: TunnelServerStream; open: StreamOpen; meta: InboundMeta; events: Events }>
  next(): Promise<{ stream: TunnelServerStream; open: StreamOpen; meta: InboundMeta; events: Events }>
}

/** A caller channel and a callee stream server over one stream pair; the callee records the streams it accepts. */
async function pair(opts: StreamPairOptions = {}, windowBytes?: number): Promise<Pair> {
  const [outbound, inbound] = await streamPair(opts)
  const limits = windowBytes != null ? { windowBytes } : {}
  const channel = new PeerChannel(
    outbound,
    connectionOf('callee', '/ip4/127.0.0.1/tcp/4001'),
    { maxFrameBytes: 1 << 20, livenessProbeMs: 0, livenessProbeTimeoutMs: 1_000, tunnel: { localPeerId: 'caller', ...limits } },
    log,
  )
  const accepted: Pair['accepted'] = []
  const waiters: Array<() => void> = []
  serveCallStream(
    inbound,
    connectionOf('caller', '/ip4/127.0.0.1/tcp/4001/p2p/relay/p2p-circuit'),
    {
      handle: async (req): Promise<PeerResponseInit> => ({
        exchangeId: req.exchangeId,
        requestId: req.requestId,
        result: { case: 'data', value: new TextEncoder().encode(`answered ${req.method}`) },
      }),
      dropped: () => {},
    },
    {
      limits,
      handler: (meta) => (stream, open) => {
        const events = new Events()
        accepted.push({ stream, open, meta, events })
        for (const w of waiters.splice(0)) w()
        return events
      },
    },
    { maxFrameBytes: 1 << 20 },
    new ConnectionBudgets({ maxStreams: 16, maxBufferedBytes: 1 << 30 }).of(inbound),
    log,
  )
  let taken = 0
  const next = async (): Promise<Pair['accepted'][number]> => {
    while (accepted.length <= taken) await new Promise<void>((resolve) => waiters.push(resolve))
    return accepted[taken++]!
  }
  return { channel, outbound, inbound, accepted, next }
}

describe('peer streams', () => {
  it('peer streams - a tunnelled stream crosses a libp2p stream both ways, large frames intact and in order, beside a Call', async () => {
    const { channel, outbound, inbound, next } = await pair()
    try {
      const caller = new Events()
      const s = channel.tunnel.open(
        { method: '/pkg.Svc/Bidi', requestId: 'r1', metadata: [metadataEntry('x-a', '1')], idempotent: true },
        caller,
      )
      // Small, larger than a batch (zero-copy path) and larger than the opening credit, small again.
      const parts = [message(10, 1), message(200_000, 2), message(3, 3)]
      for (const p of parts) s.write(p)
      s.end()
      const call = channel.call({ requestId: 'c1', method: 'echo', callerPeerId: 'caller' }, AbortSignal.timeout(10_000))
      const a = await next()
      assert.equal(a.open.method, '/pkg.Svc/Bidi')
      assert.equal(a.open.callerPeerId, 'caller')
      assert.equal(a.open.idempotent, true)
      assert.equal(a.meta.tier, Tier.RELAY, "the callee's tier comes from its connection (a circuit)")
      assert.deepEqual(
        a.open.metadata.map((m) => [m.key, m.value]),
        [['x-a', '1']],
      )
      await a.events.until(() => a.events.ended)
      assert.ok(a.events.data.equals(Buffer.concat(parts)), 'request bytes arrive intact and in order')
      // The answer: headers, every request byte back, a status with trailers.
      a.stream.sendHeaders([metadataEntry('h', 'v')])
      a.stream.write(a.events.data)
      a.stream.close(Code.NotFound, 'done here', [metadataEntry('t', 'w')])
      await caller.until(() => caller.status != null)
      assert.equal(caller.status?.code, Code.NotFound)
      assert.equal(caller.status?.from, 'peer')
      assert.deepEqual(
        caller.status?.trailers.map((m) => [m.key, m.value]),
        [['t', 'w']],
      )
      assert.deepEqual(
        caller.headers?.map((m) => [m.key, m.value]),
        [['h', 'v']],
      )
      assert.ok(caller.data.equals(Buffer.concat(parts)), 'response bytes arrive intact and in order')
      const res = await call
      assert.equal(new TextDecoder().decode(res.result.value as Uint8Array), 'answered echo', 'Calls share the stream')
      assert.equal(channel.inflight, 0)
    } finally {
      outbound.abort(new Error('test over'))
      inbound.abort(new Error('test over'))
    }
  })

  it('peer streams - a stream that needs draining holds data until it drains; 4 MiB arrive in order', async () => {
    // Backpressure after two messages per 5 ms: send() returns false again and again.
    const { channel, outbound, inbound, next } = await pair({ delay: 5, capacity: 2 }, 1024 * 1024)
    try {
      const caller = new Events()
      const s = channel.tunnel.open({ method: '/pkg.Svc/Upload', requestId: 'r2', metadata: [] }, caller)
      const total = 4 * 1024 * 1024
      const sent: Uint8Array[] = []
      let bytes = 0
      const pump = (): void => {
        while (bytes < total) {
          const m = message(32 * 1024 - 5, sent.length)
          sent.push(m)
          bytes += m.byteLength
          if (!s.write(m)) return
        }
        s.end()
      }
      pump()
      const a = await next()
      while (!a.events.ended) {
        const before = caller.writable
        await Promise.race([caller.until(() => caller.writable > before), a.events.until(() => a.events.ended)])
        pump()
      }
      assert.equal(a.events.bytes, total)
      assert.ok(a.events.data.equals(Buffer.concat(sent)))
      assert.ok(caller.writable > 0, 'the producer was paused and resumed')
    } finally {
      outbound.abort(new Error('test over'))
      inbound.abort(new Error('test over'))
    }
  })

  it('peer streams - the peer stream closing ends every tunnelled stream UNAVAILABLE on both sides, as a link failure', async () => {
    const { channel, outbound, inbound, next } = await pair()
    try {
      const caller = new Events()
      const s = channel.tunnel.open({ method: '/pkg.Svc/Bidi', requestId: 'r3', metadata: [] }, caller)
      s.write(message(1, 1))
      const a = await next()
      await a.events.until(() => a.events.bytes > 0)
      assert.equal(channel.inflight, 1, 'an open stream counts in flight (the pool never retires the channel under it)')
      outbound.abort(new Error('connection lost'))
      await caller.until(() => caller.status != null)
      await a.events.until(() => a.events.status != null)
      for (const st of [caller.status!, a.events.status!]) {
        assert.equal(st.code, Code.Unavailable)
        assert.equal(st.from, 'link')
        assert.match(st.message, /not replayed/)
      }
      assert.equal(channel.tunnel.usable, false)
      assert.equal(channel.open, false)
    } finally {
      inbound.abort(new Error('test over'))
    }
  })
})
