import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { CircuitAdmission, type CircuitLimits, type OpenResult } from './circuit-limits.ts'

const generous: CircuitLimits = {
  maxCircuitsPerIpPerSecond: 1000,
  maxCircuitsToPeerPerSecond: 1000,
  maxCircuitsPerIp: 1000,
  maxCircuitsPerPeer: 1000,
  maxCircuitsToPeer: 1000,
}

function reason(r: OpenResult): string {
  return r.ok ? 'ok' : `${r.reason} (${r.limit})`
}

describe('circuit-limits', () => {
  it('circuit-limits - CONNECTs per source IP per second, then refused until the window ends', () => {
    let t = 50_000
    const a = new CircuitAdmission({ ...generous, maxCircuitsPerIpPerSecond: 3 }, () => t)
    assert.deepEqual(
      [1, 2, 3, 4].map(() => a.sourceAllowed('10.0.0.1')),
      [true, true, true, false],
    )
    assert.equal(a.sourceAllowed('10.0.0.2'), true, 'another IP has its own rate')
    t += 999
    assert.equal(a.sourceAllowed('10.0.0.1'), false)
    t += 1
    assert.equal(a.sourceAllowed('10.0.0.1'), true)
  })

  it('circuit-limits - CONNECTs per destination per second, from any source', () => {
    let t = 0
    const a = new CircuitAdmission({ ...generous, maxCircuitsToPeerPerSecond: 2 }, () => t)
    const opened = ['s1', 's2', 's3'].map((peer, i) => a.open({ peer, ipKey: `10.0.0.${i}` }, 'dst'))
    assert.deepEqual(opened.map(reason), ['ok', 'ok', 'DESTINATION_RATE_LIMITED (max-circuits-to-peer-per-second)'])
    assert.equal(reason(a.open({ peer: 's3', ipKey: '10.0.0.3' }, 'other')), 'ok')
    t = 1000
    assert.equal(reason(a.open({ peer: 's3', ipKey: '10.0.0.3' }, 'dst')), 'ok')
  })

  it('circuit-limits - caps open circuits per source IP, per source peer and per destination; release frees the place', () => {
    const a = new CircuitAdmission({ ...generous, maxCircuitsPerIp: 3, maxCircuitsPerPeer: 2, maxCircuitsToPeer: 4 })
    const p1 = a.open({ peer: 'a', ipKey: 'ip1' }, 'd1')
    const p2 = a.open({ peer: 'a', ipKey: 'ip1' }, 'd2')
    assert.equal(reason(a.open({ peer: 'a', ipKey: 'ip1' }, 'd3')), 'SOURCE_CIRCUIT_LIMIT (max-circuits-per-peer)')
    assert.equal(reason(a.open({ peer: 'b', ipKey: 'ip1' }, 'd1')), 'ok')
    assert.equal(reason(a.open({ peer: 'c', ipKey: 'ip1' }, 'd1')), 'SOURCE_CIRCUIT_LIMIT (max-circuits-per-ip)')
    assert.equal(reason(a.open({ peer: 'c', ipKey: 'ip2' }, 'd1')), 'ok')
    assert.equal(reason(a.open({ peer: 'd', ipKey: 'ip3' }, 'd1')), 'ok')
    assert.equal(reason(a.open({ peer: 'e', ipKey: 'ip4' }, 'd1')), 'DESTINATION_CIRCUIT_LIMIT (max-circuits-to-peer)')
    assert.equal(a.size, 5)
    assert.ok(p1.ok && p2.ok)
    p1.places.release()
    p1.places.release()
    assert.equal(a.size, 4, 'a second release gives nothing back twice')
    assert.equal(reason(a.open({ peer: 'a', ipKey: 'ip1' }, 'd3')), 'ok', 'the peer and IP place is free again')
    assert.equal(reason(a.open({ peer: 'e', ipKey: 'ip4' }, 'd1')), 'ok', 'the destination place is free again')
    assert.equal(reason(a.open({ peer: 'f', ipKey: 'ip5' }, 'd1')), 'DESTINATION_CIRCUIT_LIMIT (max-circuits-to-peer)')
  })

  it('circuit-limits - a refused circuit holds no place, and released circuits leave no key behind', () => {
    const a = new CircuitAdmission({ ...generous, maxCircuitsPerPeer: 1 })
    const ok = a.open({ peer: 'a', ipKey: 'ip1' }, 'd1')
    for (let i = 0; i < 100; i++) assert.equal(a.open({ peer: 'a', ipKey: 'ip1' }, `d${i}`).ok, false)
    assert.equal(a.size, 1)
    assert.ok(ok.ok)
    ok.places.release()
    assert.equal(a.size, 0)
    assert.equal(a.keys, 0)
  })
})
