import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RateLimiter } from './rate-limiter.ts'

describe('rate-limiter', () => {
  it('rate-limiter - allows perSecond events per key per window, then refuses until the window ends', () => {
    let t = 10_000
    const rl = new RateLimiter(3, () => t)
    assert.deepEqual(
      [1, 2, 3, 4, 5].map(() => rl.take('a')),
      [true, true, true, false, false],
    )
    assert.equal(rl.take('b'), true, 'keys are independent')
    t += 999
    assert.equal(rl.take('a'), false)
    t += 1
    assert.equal(rl.take('a'), true)
  })

  it('rate-limiter - forgets idle keys', () => {
    let t = 0
    const rl = new RateLimiter(1, () => t)
    for (let i = 0; i < 100; i++) rl.take(`k${i}`)
    assert.equal(rl.size, 100)
    t = 5_000
    rl.take('x')
    assert.equal(rl.size, 1)
  })
})
