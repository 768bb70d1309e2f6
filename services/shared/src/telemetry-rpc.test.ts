import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code } from './errors.ts'
import { grpcStatusName, RPC_SYSTEM_CONNECT, rpcStatusAttributes, serverAddressAttributes } from './telemetry-rpc.ts'

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

  it('telemetry-rpc - server.address and server.port: the authority the client named, the port only when it names one', () => {
    const cases: Array<[string, Record<string, string | number>]> = [
      ['http://127.0.0.1:7000/stargate.v1.GatewayService/Call', { 'server.address': '127.0.0.1', 'server.port': 7000 }],
      ['https://gw.example.com/stargate.v1.GatewayService/Call', { 'server.address': 'gw.example.com' }],
      ['http://gw.example.com:80/a.B/C', { 'server.address': 'gw.example.com', 'server.port': 80 }],
      ['http://[::1]:50051/a.B/C?x=1', { 'server.address': '::1', 'server.port': 50051 }],
      ['http://[fe80::1]/a.B/C', { 'server.address': 'fe80::1' }],
      ['http://user@host:8443/a.B/C', { 'server.address': 'host', 'server.port': 8443 }],
      ['http://host:0/a.B/C', { 'server.address': 'host' }],
      ['http://host:99999/a.B/C', { 'server.address': 'host' }],
      ['/stargate.v1.GatewayService/Call', {}],
      ['http:///a.B/C', {}],
      ['http://host:port/a.B/C', {}],
    ]
    for (const [url, expected] of cases) assert.deepEqual(serverAddressAttributes(url), expected, url)
  })
})
