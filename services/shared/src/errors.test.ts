import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code, isTransportFailure, StargateError } from './errors.ts'

describe('errors', () => {
  it('errors - infrastructure errors map to gRPC codes with a reason and keep the cause', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })
    const e = StargateError.from(refused)
    assert.equal(e.code, Code.Unavailable)
    assert.match(e.rawMessage, /^connection refused: connect ECONNREFUSED/)
    assert.equal(e.cause, refused)
    const noResponders = Object.assign(new Error('503'), { code: '503' })
    assert.equal(StargateError.from(noResponders).code, Code.Unavailable)
    const timeout = Object.assign(new Error('t'), { name: 'TimeoutError' })
    assert.equal(StargateError.from(timeout).code, Code.DeadlineExceeded)
    const agg = new AggregateError([Object.assign(new Error('x'), { name: 'DialError' })], 'all failed')
    assert.equal(StargateError.from(agg).code, Code.Unavailable)
  })

  it('errors - unknown errors use the fallback code; StargateErrors pass through', () => {
    assert.equal(StargateError.from(new Error('boom')).code, Code.Unknown)
    assert.equal(StargateError.from('boom', Code.Internal).code, Code.Internal)
    const own = new StargateError(Code.NotFound, 'no such peer')
    assert.equal(StargateError.from(own), own)
  })

  it('errors - only transport failures are worth another tier', () => {
    assert.equal(isTransportFailure(new StargateError(Code.Unavailable, 'x')), true)
    assert.equal(isTransportFailure(new StargateError(Code.DeadlineExceeded, 'x')), true)
    assert.equal(isTransportFailure(new StargateError(Code.InvalidArgument, 'x')), false)
    assert.equal(isTransportFailure(new StargateError(Code.NotFound, 'x')), false)
  })
})
