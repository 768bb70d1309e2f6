import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FakeClock } from '@stargate/shared/clock'
import { FailureHistory } from './failure-history.ts'

const PEER = 'peer-x'
const R1 = 'relay-1'

describe('failure history', () => {
  it('cool-down - a new failure restarts it; a success ends it', async () => {
    const clock = new FakeClock()
    const history = new FailureHistory({ cooldownMs: 10_000, maxEntries: 100, clock })
    history.failed(PEER, R1)
    await clock.advance(8_000)
    history.failed(PEER, R1)
    await clock.advance(8_000)
    assert.equal(history.failedAtMs(PEER, R1), clock.nowMs() - 8_000)
    history.succeeded(PEER, R1)
    assert.equal(history.failedAtMs(PEER, R1), undefined)
  })

  it('cool-down - a failure older than the cool-down is forgotten when consulted', async () => {
    const clock = new FakeClock()
    const history = new FailureHistory({ cooldownMs: 10_000, maxEntries: 100, clock })
    history.failed(PEER, 1)
    history.failed(PEER, 2)
    await clock.advance(10_000)
    assert.equal(history.failedAtMs(PEER, 1), undefined)
    assert.equal(history.size, 1, 'the expired pair left the map; the one not consulted yet stays until looked at')
    assert.equal(history.failedAtMs(PEER, 2), undefined)
    assert.equal(history.size, 0)
  })

  it('cool-down - memory is bounded: past maxEntries the oldest failure is forgotten', () => {
    const clock = new FakeClock()
    const history = new FailureHistory({ cooldownMs: 60_000, maxEntries: 3, clock })
    for (const target of ['a', 'b', 'c', 'd']) history.failed(target, R1)
    assert.equal(history.size, 3)
    assert.equal(history.failedAtMs('a', R1), undefined)
    assert.notEqual(history.failedAtMs('d', R1), undefined)
    // A repeated failure makes a pair the newest again: 'b' outlives 'c' now.
    history.failed('b', R1)
    history.failed('e', R1)
    assert.notEqual(history.failedAtMs('b', R1), undefined)
    assert.equal(history.failedAtMs('c', R1), undefined)
  })
})
