import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Connection } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { Code, StargateError } from '@stargate/shared/errors'
import { createLogger } from '@stargate/shared/log'
import { PeerChannel } from './channel.ts'

const log = createLogger('test', { level: 'silent' })
const connection = { remotePeer: { toString: () => 'peer' }, status: 'open' } as unknown as Connection

describe('peer channel', () => {
  it('channel - a request stuck behind a stream that never drains ends with the call signal', async () => {
    const [outbound, inbound] = await streamPair()
    const channel = new PeerChannel(outbound, connection, 1024 * 1024, log)
    try {
      // The muxer reports a full send window that never drains again (the remote stopped reading).
      ;(outbound as unknown as { onMuxerNeedsDrain(): void }).onMuxerNeedsDrain()
      const t0 = Date.now()
      const call = channel.call({ requestId: 'r1', method: 'echo', callerPeerId: 'me' }, AbortSignal.timeout(200))
      await assert.rejects(call, (err: unknown) => err instanceof StargateError && err.code !== Code.Unavailable)
      assert.ok(Date.now() - t0 < 5_000, `the blocked send ended after ${Date.now() - t0} ms`)
      assert.equal(channel.inflight, 0)
      assert.ok(channel.open, 'the channel itself stays usable')
    } finally {
      outbound.abort(new Error('test over'))
      inbound.abort(new Error('test over'))
    }
  })
})
