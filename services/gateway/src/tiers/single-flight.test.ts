import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code, StargateError } from '@stargate/shared/errors'
import { SingleFlight } from './single-flight.ts'

/** An operation the test completes by hand; it records the signal it was started with. */
function manual<V>() {
  const starts: AbortSignal[] = []
  const settles: Array<{ resolve: (v: V) => void; reject: (e: unknown) => void }> = []
  const start = (signal: AbortSignal): Promise<V> => {
    starts.push(signal)
    return new Promise<V>((resolve, reject) => {
      settles.push({ resolve, reject })
    })
  }
  return { starts, start, settle: (i = settles.length - 1) => settles[i]! }
}

describe('single flight', () => {
  it('single flight - concurrent callers for one key share one operation and its result', async () => {
    const sf = new SingleFlight<string>()
    const op = manual<string>()
    const a = sf.run('peer/direct', new AbortController().signal, op.start)
    const b = sf.run('peer/direct', new AbortController().signal, op.start)
    const other = sf.run('other/direct', new AbortController().signal, op.start)
    await Promise.resolve()
    await Promise.resolve()
    assert.equal(op.starts.length, 2, 'one operation per key')
    op.settle(1).resolve('other-channel')
    assert.equal(await other, 'other-channel')
    assert.equal(sf.size, 1)
    op.settle(0).resolve('shared-channel')
    assert.deepEqual(await Promise.all([a, b]), ['shared-channel', 'shared-channel'])
    assert.equal(sf.size, 0)
  })

  it('single flight - one caller giving up does not abort the others; the operation ends when all gave up', async () => {
    const sf = new SingleFlight<string>()
    const op = manual<string>()
    const first = new AbortController()
    const second = new AbortController()
    const a = sf.run('k', first.signal, op.start)
    const b = sf.run('k', second.signal, op.start)
    await Promise.resolve()
    await Promise.resolve()
    first.abort(new StargateError(Code.Canceled, 'first call ended'))
    await assert.rejects(a, /first call ended/)
    assert.equal(op.starts[0]?.aborted, false, 'still wanted by the second caller')
    second.abort(new StargateError(Code.Canceled, 'second call ended'))
    await assert.rejects(b, /second call ended/)
    assert.equal(op.starts[0]?.aborted, true, 'nobody waits any more')
  })

  it('single flight - a failure reaches every waiter, and the next call starts afresh', async () => {
    const sf = new SingleFlight<string>()
    const op = manual<string>()
    const a = sf.run('k', new AbortController().signal, op.start)
    const b = sf.run('k', new AbortController().signal, op.start)
    await Promise.resolve()
    await Promise.resolve()
    op.settle().reject(new StargateError(Code.Unavailable, 'dial failed'))
    await assert.rejects(a, /dial failed/)
    await assert.rejects(b, /dial failed/)
    const c = sf.run('k', new AbortController().signal, op.start)
    await Promise.resolve()
    await Promise.resolve()
    assert.equal(op.starts.length, 2)
    op.settle().resolve('fresh')
    assert.equal(await c, 'fresh')
  })
})
