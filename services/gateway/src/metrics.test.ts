import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Tier } from '@stargate/shared/gen/gateway'
import { PeerMetricsTable } from './metrics.ts'

const ok = { ok: true, tier: Tier.DIRECT, latencyMs: 10 }

describe('peer metrics', () => {
  it('peer metrics - at most maxPeers are kept: the peer called least recently is forgotten first', () => {
    const table = new PeerMetricsTable({ ewmaAlpha: 0.2, maxPeers: 3 })
    for (const peer of ['a', 'b', 'c']) table.record(peer, ok)
    // A call to 'a' makes it the most recent: 'b' is now the least recently called.
    table.record('a', ok)
    table.record('d', ok)
    assert.deepEqual(
      table
        .all()
        .map((m) => m.peerId)
        .sort(),
      ['a', 'c', 'd'],
    )
    assert.equal(table.get('b'), undefined)
    assert.equal(table.get('a')?.totalRequests, 2, 'a kept its counts')
    table.record('e', ok)
    assert.deepEqual(
      table
        .all()
        .map((m) => m.peerId)
        .sort(),
      ['a', 'd', 'e'],
    )
  })

  it('peer metrics - EWMA latency over successes, failures counted without touching it', () => {
    const table = new PeerMetricsTable({ ewmaAlpha: 0.5, maxPeers: 10 })
    table.record('a', { ok: true, tier: Tier.RELAY, latencyMs: 100 })
    table.record('a', { ok: false, tier: Tier.DIRECT, latencyMs: 5 })
    table.record('a', { ok: true, tier: Tier.NATS, latencyMs: 200 })
    const m = table.get('a')
    assert.equal(m?.latencyMs, 150)
    assert.equal(m?.connectionType, Tier.NATS)
    assert.deepEqual([m?.totalRequests, m?.failedRequests], [3, 1])
    assert.equal(PeerMetricsTable.successRate(m!), 2 / 3)
  })
})
