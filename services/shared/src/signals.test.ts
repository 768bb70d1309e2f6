import assert from 'node:assert/strict'
import { getEventListeners } from 'node:events'
import { describe, it, mock } from 'node:test'
import { deadline } from './signals.ts'

describe('deadline signals', () => {
  it('deadline - aborts with a TimeoutError after ms and reports timedOut', () => {
    mock.timers.enable({ apis: ['setTimeout'] })
    try {
      const d = deadline(100)
      mock.timers.tick(99)
      assert.equal(d.signal.aborted, false)
      mock.timers.tick(1)
      assert.equal(d.signal.aborted, true)
      assert.equal(d.timedOut, true)
      assert.equal((d.signal.reason as DOMException).name, 'TimeoutError')
    } finally {
      mock.timers.reset()
    }
  })

  it('deadline - follows the parent with its reason, and not the timer afterwards', () => {
    mock.timers.enable({ apis: ['setTimeout'] })
    try {
      const parent = new AbortController()
      const d = deadline(100, parent.signal)
      parent.abort(new Error('client went away'))
      assert.equal(d.signal.aborted, true)
      assert.equal((d.signal.reason as Error).message, 'client went away')
      mock.timers.tick(200)
      assert.equal(d.timedOut, false)
      const already = deadline(100, parent.signal)
      assert.equal(already.signal.aborted, true)
    } finally {
      mock.timers.reset()
    }
  })

  it('deadline - dispose releases the timer and the parent listener: nothing aborts afterwards', () => {
    mock.timers.enable({ apis: ['setTimeout'] })
    try {
      const parent = new AbortController()
      const d = deadline(100, parent.signal)
      assert.equal(getEventListeners(parent.signal, 'abort').length, 1)
      d.dispose()
      d.dispose()
      assert.equal(getEventListeners(parent.signal, 'abort').length, 0)
      mock.timers.tick(1000)
      parent.abort()
      assert.equal(d.signal.aborted, false)
      assert.equal(d.timedOut, false)
    } finally {
      mock.timers.reset()
    }
  })
})
