import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ReservationStore } from './reservations.ts'

const limits = { maxReservations: 3, maxPerPeer: 1, maxPerIp: 2, ttlMs: 1000, maxStopFailures: 3 }

describe('reservations', () => {
  it('reservations - refuses past the total capacity, renewals do not count', () => {
    const s = new ReservationStore<null>({ ...limits, maxPerIp: 10 })
    for (const p of ['a', 'b', 'c']) assert.equal(s.reserve(p, '1.1.1.1', `conn-${p}`, null).ok, true)
    assert.deepEqual(s.reserve('d', '1.1.1.1', 'conn-d', null), { ok: false, reason: 'RESERVATION_LIMIT' })
    const again = s.reserve('a', '1.1.1.1', 'conn-a', null)
    assert.equal(again.ok && again.renewed, true)
    assert.equal(s.size, 3)
  })

  it('reservations - limits per IP, and frees the slot when the connection closes', () => {
    const s = new ReservationStore<null>(limits)
    assert.equal(s.reserve('a', '10.0.0.1', 'c1', null).ok, true)
    assert.equal(s.reserve('b', '10.0.0.1', 'c2', null).ok, true)
    assert.deepEqual(s.reserve('c', '10.0.0.1', 'c3', null), { ok: false, reason: 'PER_IP_LIMIT' })
    assert.equal(s.reserve('c', '10.0.0.2', 'c4', null).ok, true, 'another IP has its own share')
    assert.equal(s.remove('c1'), true)
    assert.equal(s.get('a'), undefined)
    assert.equal(s.reserve('c', '10.0.0.1', 'c3', null).ok, true)
  })

  it('reservations - a new connection of a peer replaces its reservation at once (newest wins)', () => {
    let t = 0
    const s = new ReservationStore<string>(limits, () => t)
    assert.equal(s.reserve('a', '10.0.0.1', 'old', 'old-conn').ok, true)
    t = 10
    const r = s.reserve('a', '10.0.0.9', 'new', 'new-conn')
    assert.ok(r.ok && !r.renewed)
    assert.equal(r.replaced?.connectionId, 'old')
    assert.equal(s.get('a')?.connection, 'new-conn')
    assert.equal(s.size, 1)
    assert.equal(s.remove('old'), false, 'the replaced reservation is gone, closing its connection changes nothing')
    assert.equal(s.get('a')?.connection, 'new-conn')
    // the old IP's place is free again
    assert.equal(s.reserve('b', '10.0.0.1', 'b1', 'b').ok, true)
    assert.equal(s.reserve('c', '10.0.0.1', 'c1', 'c').ok, true)
  })

  it('reservations - a replacement is checked against the total and per-IP limits as if the old one were gone', () => {
    const s = new ReservationStore<null>({ ...limits, maxReservations: 2 })
    assert.equal(s.reserve('a', '10.0.0.1', 'a1', null).ok, true)
    assert.equal(s.reserve('b', '10.0.0.1', 'b1', null).ok, true)
    // full, and 10.0.0.1 at its share: a's reconnection from the same IP still gets through
    const same = s.reserve('a', '10.0.0.1', 'a2', null)
    assert.equal(same.ok && same.replaced?.connectionId, 'a1')
    assert.deepEqual(s.reserve('c', '10.0.0.2', 'c1', null), { ok: false, reason: 'RESERVATION_LIMIT' }, 'a new peer is not')
    // a reconnection from an IP at its share is refused, and the old reservation stays
    const t = new ReservationStore<null>({ ...limits, maxReservations: 10 })
    t.reserve('x', '10.0.0.3', 'x1', null)
    t.reserve('y', '10.0.0.3', 'y1', null)
    t.reserve('a', '10.0.0.1', 'a1', null)
    assert.deepEqual(t.reserve('a', '10.0.0.3', 'a2', null), { ok: false, reason: 'PER_IP_LIMIT' })
    assert.equal(t.get('a')?.connectionId, 'a1')
  })

  it('reservations - with maxPerPeer 2 a third connection replaces the oldest', () => {
    let t = 0
    const s = new ReservationStore<null>({ ...limits, maxPerPeer: 2, maxPerIp: 10 }, () => t)
    s.reserve('a', 'ip', 'c1', null)
    t = 1
    s.reserve('a', 'ip', 'c2', null)
    t = 2
    const r = s.reserve('a', 'ip', 'c3', null)
    assert.equal(r.ok && r.replaced?.connectionId, 'c1')
    assert.equal(s.size, 2)
    assert.equal(s.get('a')?.connectionId, 'c3')
  })

  it('reservations - dropped after maxStopFailures unanswered STOPs in a row; an answer starts the count again', () => {
    const s = new ReservationStore<null>(limits)
    s.reserve('a', 'ip', 'c1', null)
    assert.equal(s.stopFailed('c1'), undefined)
    assert.equal(s.stopFailed('c1'), undefined)
    s.stopAnswered('c1')
    assert.equal(s.stopFailed('c1'), undefined)
    assert.equal(s.stopFailed('c1'), undefined)
    assert.equal(s.get('a')?.stopFailures, 2)
    assert.equal(s.stopFailed('c1')?.peer, 'a')
    assert.equal(s.get('a'), undefined)
    assert.equal(s.size, 0)
    assert.equal(s.stopFailed('c1'), undefined, 'nothing left to drop')
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
