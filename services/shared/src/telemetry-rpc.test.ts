import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code } from './errors.ts'
import { grpcStatusName, RPC_SYSTEM_CONNECT, rpcStatusAttributes } from './telemetry-rpc.ts'

describe('telemetry-rpc - status attributes per the RPC semantic conventions', () => {
  it('telemetry-rpc - gRPC status names, as rpc.status_code spells them', () => {
    assert.deepEqual(
      [0, Code.Canceled, Code.InvalidArgument, Code.Unavailable, Code.Unauthenticated, 99].map((c) => grpcStatusName(c as Code)),
      ['OK', 'CANCELLED', 'INVALID_ARGUMENT', 'UNAVAILABLE', 'UNAUTHENTICATED', '99'],
    )
  })

  it("telemetry-rpc - a server's error.type only for its own failures; a client's for every status but OK", () => {
    assert.deepEqual(rpcStatusAttributes('grpc', 0, 'server'), { 'rpc.status_code': 'OK' })
    assert.deepEqual(rpcStatusAttributes('grpc', Code.InvalidArgument, 'server'), { 'rpc.status_code': 'INVALID_ARGUMENT' })
    for (const code of [Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]) {
      const name = grpcStatusName(code)
      assert.deepEqual(rpcStatusAttributes('grpc', code, 'server'), { 'rpc.status_code': name, 'error.type': name })
    }
    assert.deepEqual(rpcStatusAttributes('stargate', Code.InvalidArgument, 'client'), {
      'rpc.status_code': 'INVALID_ARGUMENT',
      'error.type': 'INVALID_ARGUMENT',
    })
    assert.deepEqual(rpcStatusAttributes('stargate', 0, 'client'), { 'rpc.status_code': 'OK' })
  })

  it('telemetry-rpc - Connect codes are lower case, and success has none', () => {
    assert.deepEqual(rpcStatusAttributes(RPC_SYSTEM_CONNECT, 0, 'server'), {})
    assert.deepEqual(rpcStatusAttributes(RPC_SYSTEM_CONNECT, Code.Unavailable, 'server'), {
      'rpc.status_code': 'unavailable',
      'error.type': 'unavailable',
    })
    assert.deepEqual(rpcStatusAttributes(RPC_SYSTEM_CONNECT, Code.NotFound, 'server'), { 'rpc.status_code': 'not_found' })
  })
})
