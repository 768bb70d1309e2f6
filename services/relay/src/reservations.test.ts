import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ReservationStore } from './reservations.ts'

const limits = { maxReservations: 3, maxPerPeer: 1, maxPerIp: 2, ttlMs: 1000 }

describe('reservations', () => {
  it('reservations - refuses past the total capacity, renewals do not count', () => {
    const s = new ReservationStore<null>({ ...limits, maxPerIp: 10 })
    for (const p of ['a', 'b', 'c']) assert.equal(s.reserve(p, '1.1.1.1', `conn-${p}`, null).ok, true)
    assert.deepEqual(s.reserve('d', '1.1.1.1', 'conn-d', null), { ok: false, reason: 'RESERVATION_LIMIT' })
    const again = s.reserve('a', '1.1.1.1', 'conn-a', null)
    assert.equal(again.ok && again.renewed, true)
    assert.equal(s.size, 3)
  })

  it('reservations - limits per peer and per IP, and frees them when the connection closes', () => {
    const s = new ReservationStore<null>(limits)
    assert.equal(s.reserve('a', '10.0.0.1', 'c1', null).ok, true)
    assert.deepEqual(s.reserve('a', '10.0.0.2', 'c2', null), { ok: false, reason: 'PER_PEER_LIMIT' })
    assert.equal(s.reserve('b', '10.0.0.1', 'c3', null).ok, true)
    assert.deepEqual(s.reserve('c', '10.0.0.1', 'c4', null), { ok: false, reason: 'PER_IP_LIMIT' })
    assert.equal(s.remove('c1'), true)
    assert.equal(s.get('a'), undefined)
    assert.equal(s.reserve('c', '10.0.0.1', 'c4', null).ok, true)
    assert.equal(s.reserve('a', '10.0.0.2', 'c2', null).ok, true)
  })

  it('reservations - expire after the TTL unless renewed', () => {
    let t = 0
    const s = new ReservationStore<string>(limits, () => t)
    s.reserve('a', 'ip', 'c1', 'conn1')
    s.reserve('b', 'ip', 'c2', 'conn2')
    t = 900
    s.reserve('a', 'ip', 'c1', 'conn1')
    t = 1000
    assert.equal(s.get('b'), undefined)
    assert.equal(s.get('a')?.connection, 'conn1')
    assert.equal(s.size, 1)
    t = 1900
    assert.equal(s.size, 0)
  })
})
