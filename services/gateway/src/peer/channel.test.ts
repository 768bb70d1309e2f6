import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Connection } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerFrame } from '@stargate/shared/gen/envelope'
import { createLogger } from '@stargate/shared/log'
import { PeerChannel } from './channel.ts'
import { onFrames, writeFrame } from './frames.ts'

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
