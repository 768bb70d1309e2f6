import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code, type ConnectError } from '@connectrpc/connect'
import { FakeClock } from '../clock.ts'
import { Health } from '../gen/grpc/health/v1/health_pb.js'
import { CallContext } from './call-context.ts'

const HOUR_MS = 3600 * 1000

function context(clock: FakeClock, timeoutMs: number | undefined, onAbort: (reason: unknown) => void = () => {}): CallContext {
  return new CallContext({
    service: Health,
    method: Health.method.check,
    url: '/grpc.health.v1.Health/Check',
    headers: {},
    timeoutMs,
    shutdownSignal: new AbortController().signal,
    onAbort,
    clock,
  })
}

describe('call context', () => {
  it('deadline - grpc-timeout 720H aborts the call at 720 hours on the clock, not before', async () => {
    const clock = new FakeClock()
    const reasons: unknown[] = []
    const ctx = context(clock, 720 * HOUR_MS, (r) => reasons.push(r))
    await clock.advance(1000)
    assert.equal(ctx.signal.aborted, false, `aborted: ${String(ctx.signal.reason)}`)
    assert.equal(ctx.timeoutMs(), 720 * HOUR_MS - 1000)
    await clock.advance(720 * HOUR_MS - 1001)
    assert.equal(ctx.signal.aborted, false)
    await clock.advance(1)
    assert.equal(ctx.signal.aborted, true)
    assert.equal((ctx.signal.reason as ConnectError).code, Code.DeadlineExceeded)
    assert.equal(reasons.length, 1)
  })

  it('deadline - ending the call first releases the timer: the deadline never fires', async () => {
    const clock = new FakeClock()
    const reasons: unknown[] = []
    const ctx = context(clock, 1000, (r) => reasons.push(r))
    ctx.end(new Error('done'))
    assert.equal(clock.pending, 0)
    await clock.advance(2000)
    assert.deepEqual(reasons, [])
    assert.equal((ctx.signal.reason as Error).message, 'done')
  })
})
