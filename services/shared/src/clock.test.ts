import assert from 'node:assert/strict'
import { describe, it, mock } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { FakeClock, MAX_TIMER_MS, systemClock } from './clock.ts'
import { deadline } from './signals.ts'

const DAY_MS = 24 * 3600 * 1000

describe('clock', () => {
  it('systemClock - a timer longer than one Node timer fires after its whole delay, not before', () => {
    mock.timers.enable({ apis: ['setTimeout'] })
    try {
      let fired = 0
      systemClock.setTimeout(() => fired++, 30 * DAY_MS)
      mock.timers.tick(MAX_TIMER_MS)
      assert.equal(fired, 0, 'fired after one Node timer step')
      mock.timers.tick(30 * DAY_MS - MAX_TIMER_MS - 1)
      assert.equal(fired, 0, 'fired 1 ms early')
      mock.timers.tick(1)
      assert.equal(fired, 1)
      mock.timers.tick(60 * DAY_MS)
      assert.equal(fired, 1, 'fired twice')
    } finally {
      mock.timers.reset()
    }
  })

  it('systemClock - clearing a long timer after its first step cancels it', () => {
    mock.timers.enable({ apis: ['setTimeout'] })
    try {
      let fired = 0
      const timer = systemClock.setTimeout(() => fired++, 3 * MAX_TIMER_MS)
      mock.timers.tick(MAX_TIMER_MS + 1)
      timer.clear()
      mock.timers.tick(3 * MAX_TIMER_MS)
      assert.equal(fired, 0)
    } finally {
      mock.timers.reset()
    }
  })

  it('systemClock - a 30-day deadline on real timers is not aborted within a second', async () => {
    const d = deadline(30 * DAY_MS, undefined, systemClock)
    try {
      // Node runs a timer beyond 2^31−1 ms after 1 ms; timers fire in the order they fall due, so this one
      // second is enough to see it.
      await delay(1000)
      assert.equal(d.signal.aborted, false, `aborted: ${String(d.signal.reason)}`)
    } finally {
      d.dispose()
    }
  })

  it('FakeClock - a 720-hour timer fires at 720 hours', async () => {
    const clock = new FakeClock()
    let fired = 0
    clock.setTimeout(() => fired++, 720 * 3600 * 1000)
    await clock.advance(720 * 3600 * 1000 - 1)
    assert.equal(fired, 0)
    await clock.advance(1)
    assert.equal(fired, 1)
  })
})
