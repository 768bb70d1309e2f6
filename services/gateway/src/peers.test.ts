import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PeerSource } from '@stargate/shared/gen/gateway'
import { PeerBook } from './peers.ts'

function book(max = 100): { peers: PeerBook; clock: { nowMs: number } } {
  const clock = { nowMs: 1_000_000 }
  const peers = new PeerBook({ presenceTtlMs: 120_000, connectionTtlMs: 300_000, maxLearnedPeers: max, now: () => clock.nowMs })
  return { peers, clock }
}

describe('PeerBook', () => {
  it('peers - a presence-learned peer expires presenceTtlMs after its record was issued; a static one never', () => {
    const { peers, clock } = book()
    peers.upsert('static', { source: PeerSource.STATIC, directAddrs: ['/ip4/1.2.3.4/tcp/1'] })
    peers.upsert('p', { source: PeerSource.PRESENCE, lastSeenAtMs: clock.nowMs })
    clock.nowMs += 120_000
    assert.ok(peers.get('p') != null)
    clock.nowMs += 1
    assert.equal(peers.get('p'), undefined)
    clock.nowMs += 10 ** 9
    assert.deepEqual(
      peers.all().map((p) => p.peerId),
      ['static'],
    )
  })

  it('peers - a connection-learned peer stays while connected and expires connectionTtlMs after it disconnected', () => {
    const { peers, clock } = book()
    peers.connected('c')
    assert.equal(peers.get('c')?.source, PeerSource.CONNECTION)
    clock.nowMs += 10 * 300_000
    assert.ok(peers.get('c') != null, 'still connected')
    peers.disconnected('c')
    clock.nowMs += 300_000
    assert.ok(peers.get('c') != null)
    clock.nowMs += 1
    assert.deepEqual(peers.all(), [])
  })

  it('peers - a connection does not prolong a presence-learned peer past its records', () => {
    const { peers, clock } = book()
    peers.upsert('p', { source: PeerSource.PRESENCE, lastSeenAtMs: clock.nowMs, capabilities: ['x'] })
    peers.connected('p')
    assert.equal(peers.get('p')?.source, PeerSource.PRESENCE)
    assert.deepEqual(peers.get('p')?.capabilities, ['x'])
    clock.nowMs += 120_001
    assert.equal(peers.get('p'), undefined)
  })

  it('peers - learned peers are bounded: the least recently heard of goes first, static peers and open connections stay', () => {
    const { peers, clock } = book(3)
    peers.upsert('static', { source: PeerSource.STATIC })
    peers.connected('conn')
    for (const id of ['p1', 'p2', 'p3', 'p4']) {
      clock.nowMs += 1
      peers.upsert(id, { source: PeerSource.PRESENCE, lastSeenAtMs: clock.nowMs })
    }
    assert.deepEqual(
      peers.all().map((p) => p.peerId),
      ['conn', 'p3', 'p4', 'static'],
    )
    // Heard of again, p3 becomes the most recent: p4 is dropped for p5.
    peers.upsert('p3', { source: PeerSource.PRESENCE, lastSeenAtMs: clock.nowMs })
    peers.upsert('p5', { source: PeerSource.PRESENCE, lastSeenAtMs: clock.nowMs })
    assert.deepEqual(
      peers.all().map((p) => p.peerId),
      ['conn', 'p3', 'p5', 'static'],
    )
  })

  it('peers - the newest presence sequence is kept across updates from other sources', () => {
    const { peers } = book()
    peers.upsert('p', { source: PeerSource.PRESENCE, presenceSequence: 7n })
    peers.connected('p')
    peers.disconnected('p')
    assert.equal(peers.get('p')?.presenceSequence, 7n)
  })
})
