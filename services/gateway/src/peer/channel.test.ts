import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Connection } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { FakeClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerFrame } from '@stargate/shared/gen/envelope'
import { createLogger } from '@stargate/shared/log'
import { PeerChannel } from './channel.ts'
import { chunkBytes, onFrames, writeFrame } from './frames.ts'

const log = createLogger('test', { level: 'silent' })
const connection = {
  remotePeer: { toString: () => 'peer' },
  remoteAddr: { toString: () => '/ip4/127.0.0.1/tcp/4001' },
  status: 'open',
} as unknown as Connection
const channelOptions = { maxFrameBytes: 1024 * 1024, livenessProbeMs: 0, livenessProbeTimeoutMs: 1_000, tunnel: { localPeerId: 'me' } }

describe('peer channel', () => {
  it('channel - a request stuck behind a stream that never drains ends with the call signal', async () => {
    // A link that delivers nothing for 3 s and applies backpressure after one message: once the first
    // frame is sent, the stream cannot send more until long after the call's 200 ms deadline.
    const [outbound, inbound] = await streamPair({ delay: 3_000, capacity: 1 })
    const channel = new PeerChannel(outbound, connection, channelOptions, log)
    try {
      await writeFrame(outbound, { kind: { case: 'cancel', value: { exchangeId: 99n } } })
      const t0 = Date.now()
      const call = channel.call({ requestId: 'r1', method: 'echo', callerPeerId: 'me' }, AbortSignal.timeout(200))
      await assert.rejects(call, (err: unknown) => err instanceof StargateError && err.code !== Code.Unavailable)
      assert.ok(Date.now() - t0 < 2_000, `the blocked send ended after ${Date.now() - t0} ms, not with its 200 ms deadline`)
      assert.equal(channel.inflight, 0)
      assert.ok(channel.open, 'the channel itself stays usable')
    } finally {
      outbound.abort(new Error('test over'))
      inbound.abort(new Error('test over'))
    }
  })

  it('writeFrame - small frames written in one event-loop turn leave in one send, in order', { timeout: 10_000 }, async () => {
    const [outbound, inbound] = await streamPair()
    try {
      const sends: number[] = []
      const send = outbound.send.bind(outbound)
      outbound.send = (data) => {
        sends.push(data.byteLength)
        return send(data)
      }
      const got: PeerFrame[] = []
      const all = new Promise<void>((resolve) =>
        onFrames(
          inbound,
          { maxFrameBytes: 1 << 20 },
          (f) => {
            got.push(f)
            if (got.length === 6) resolve()
          },
          () => {},
        ),
      )
      const cancel = (id: bigint) => ({ kind: { case: 'cancel' as const, value: { exchangeId: id } } })
      const big = {
        kind: {
          case: 'request' as const,
          value: { exchangeId: 9n, requestId: 'big', method: 'm', payload: { case: 'data' as const, value: new Uint8Array(40_000) } },
        },
      }
      await Promise.all([writeFrame(outbound, cancel(1n)), writeFrame(outbound, cancel(2n)), writeFrame(outbound, cancel(3n))])
      assert.equal(sends.length, 1, 'three frames, one send')
      // A large frame goes on its own, after what was batched before it and before what follows.
      await Promise.all([writeFrame(outbound, cancel(4n)), writeFrame(outbound, big), writeFrame(outbound, cancel(5n))])
      await all
      assert.equal(sends.length, 4)
      assert.deepEqual(
        got.map((f) =>
          f.kind.case === 'cancel' ? String(f.kind.value.exchangeId) : f.kind.case === 'request' ? f.kind.value.requestId : '?',
        ),
        ['1', '2', '3', '4', 'big', '5'],
      )
    } finally {
      outbound.abort(new Error('test over'))
      inbound.abort(new Error('test over'))
    }
  })

  it('writeFrame - every frame of a batch fails when the stream cannot send', async () => {
    const [outbound, inbound] = await streamPair()
    outbound.abort(new Error('gone'))
    inbound.abort(new Error('gone'))
    const cancel = (id: bigint) => ({ kind: { case: 'cancel' as const, value: { exchangeId: id } } })
    const results = await Promise.allSettled([writeFrame(outbound, cancel(1n)), writeFrame(outbound, cancel(2n))])
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected'],
    )
  })
})

/**
 * A connection whose call stream goes to a far side that reads requests but never answers, and whose pings
 * (new streams) are echoed only when `echo` is set. Records when each probe opened its stream.
 */
async function silentPeer(clock: FakeClock, echo = false, busy = false) {
  const [outbound, inbound] = await streamPair()
  const probesAtMs: number[] = []
  const requests: string[] = []
  onFrames(
    inbound,
    { maxFrameBytes: 1 << 20 },
    (f) => {
      if (f.kind.case === 'request') requests.push(f.kind.value.requestId)
    },
    () => {},
  )
  const pingStreams: Array<{ abort(err: Error): void }> = []
  const conn = {
    remotePeer: { toString: () => 'peer' },
    remoteAddr: { toString: () => '/ip4/198.18.0.1/tcp/4001/p2p/relay/p2p-circuit' },
    status: 'open',
    streams: [],
    newStream: async () => {
      probesAtMs.push(clock.nowMs())
      if (busy) {
        const err = new Error('Too many outbound protocol streams for protocol "/ipfs/ping/1.0.0" - 2/1')
        err.name = 'TooManyOutboundProtocolStreamsError'
        throw err
      }
      const [ping, far] = await streamPair()
      pingStreams.push(ping, far)
      if (echo) far.addEventListener('message', (evt) => far.send(chunkBytes(evt.data)))
      return ping
    },
    abort: () => {},
  } as unknown as Connection
  const done = (): void => {
    for (const s of [outbound, inbound, ...pingStreams]) s.abort(new Error('test over'))
  }
  return { outbound, inbound, conn, probesAtMs, requests, done }
}

describe('peer channel liveness', () => {
  const liveness = (clock: FakeClock) => ({
    maxFrameBytes: 1 << 20,
    livenessProbeMs: 1_000,
    livenessProbeTimeoutMs: 1_500,
    tunnel: { localPeerId: 'me' },
    clock,
  })

  it('liveness - a call on a channel silent for livenessProbeMs is raced by a probe from the start; no answer fails it within the probe timeout', async () => {
    const clock = new FakeClock()
    const peer = await silentPeer(clock)
    const channel = new PeerChannel(peer.outbound, peer.conn, liveness(clock), log)
    try {
      await clock.advance(5_000) // pooled and idle: nothing arrived for 5 s
      const sentAtMs = clock.nowMs()
      const call = channel.call({ requestId: 'r1', method: 'echo', callerPeerId: 'me' }, new AbortController().signal)
      let settled = false
      call.then(
        () => (settled = true),
        () => (settled = true),
      )
      await clock.advance(0)
      assert.deepEqual(peer.probesAtMs, [sentAtMs], 'probed as the call was sent')
      await clock.advance(1_499)
      assert.equal(settled, false, 'pending while the probe may still be answered')
      await clock.advance(1)
      await assert.rejects(
        call,
        (err: unknown) => err instanceof StargateError && err.code === Code.Unavailable && /stopped answering/.test(err.rawMessage),
      )
      assert.equal(channel.open, false)
    } finally {
      peer.done()
    }
  })

  it('liveness - a channel that just answered is not probed at once; the watchdog probes after livenessProbeMs of silence', async () => {
    const clock = new FakeClock()
    const peer = await silentPeer(clock)
    const channel = new PeerChannel(peer.outbound, peer.conn, liveness(clock), log)
    try {
      const sentAtMs = clock.nowMs()
      const call = channel.call({ requestId: 'r1', method: 'echo', callerPeerId: 'me' }, new AbortController().signal)
      call.catch(() => {})
      await clock.advance(999)
      assert.deepEqual(peer.probesAtMs, [])
      await clock.advance(1)
      assert.deepEqual(peer.probesAtMs, [sentAtMs + 1_000])
      await clock.advance(1_500)
      await assert.rejects(call, (err: unknown) => err instanceof StargateError && err.code === Code.Unavailable)
    } finally {
      peer.done()
    }
  })

  it('liveness - a probe that cannot start because another ping is in flight (libp2p connection monitor) fails nothing', async () => {
    const clock = new FakeClock()
    const peer = await silentPeer(clock, false, true)
    const channel = new PeerChannel(peer.outbound, peer.conn, liveness(clock), log)
    try {
      await clock.advance(5_000)
      const call = channel.call({ requestId: 'r1', method: 'echo', callerPeerId: 'me' }, new AbortController().signal)
      call.catch(() => {})
      await clock.advance(3_000)
      assert.ok(peer.probesAtMs.length >= 2, 'tried again at the next period')
      assert.ok(channel.open, 'no verdict, no failure')
      assert.equal(channel.inflight, 1)
    } finally {
      peer.done()
    }
  })

  it('liveness - an answered probe keeps a slow call waiting (a long handler is not a dead peer)', async () => {
    const clock = new FakeClock()
    const peer = await silentPeer(clock, true)
    const channel = new PeerChannel(peer.outbound, peer.conn, liveness(clock), log)
    try {
      await clock.advance(5_000)
      const call = channel.call({ requestId: 'r1', method: 'slow', callerPeerId: 'me' }, new AbortController().signal)
      let settled = false
      call.then(
        () => (settled = true),
        () => (settled = true),
      )
      for (let i = 0; i < 10; i++) await clock.advance(1_000)
      assert.equal(settled, false)
      assert.ok(peer.probesAtMs.length >= 5, `probed every period while waiting (${peer.probesAtMs.length} probes)`)
      assert.ok(channel.open)
      await writeFrame(peer.inbound, {
        kind: { case: 'response', value: { exchangeId: 1n, requestId: 'r1', result: { case: 'data', value: new Uint8Array([1]) } } },
      })
      const res = await call
      assert.equal(res.requestId, 'r1')
    } finally {
      peer.done()
    }
  })
})
