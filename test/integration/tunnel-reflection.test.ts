/**
 * Server reflection passthrough with several backends behind one gateway, with real grpcurl: gateway B
 * exposes stargate.test.v1.EchoService (examples/node/echo-server.ts, with reflection) and
 * stargate.v1.GatewayService (a separate gRPC server with reflection); grpcurl asks gateway A with
 * `-H stargate-peer: B`, so B answers reflection by asking both backends.
 */
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { stargateDescriptorSets } from '@stargate/shared/descriptors'
import { GatewayService } from '@stargate/shared/gen/gateway'
import { ApiServer } from '@stargate/shared/grpc/server'
import { createLogger } from '@stargate/shared/log'
import { type GatewayHandle, Harness, Proc } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)

describe('tunnel reflection fan-out (real processes, real grpcurl)', { timeout: 180_000 }, () => {
  const h = new Harness()
  const other = new ApiServer({
    services: [{ service: GatewayService, impl: {} }],
    descriptorSets: stargateDescriptorSets(),
    log: createLogger('test:other', { level: 'silent' }),
  })
  let a: GatewayHandle
  let b: GatewayHandle
  let grpcurl: string

  /** grpcurl against gateway A naming peer B: flags, then the address, then the verb and its symbol. */
  const curl = async (flags: string[], ...verb: string[]): Promise<string> => {
    const { stdout } = await run(grpcurl, ['-plaintext', '-H', `stargate-peer: ${b.peerId}`, ...flags, a.api, ...verb], {
      timeout: 30_000,
    })
    return stdout
  }

  before(async () => {
    grpcurl = tool('grpcurl')
    const echo = new Proc(
      'echo-server',
      spawn(process.execPath, [join(import.meta.dirname, '../../examples/node/echo-server.ts'), '--listen', '127.0.0.1:0'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    )
    h.procs.push(echo)
    const [, echoAddr] = await echo.waitFor(/^LISTENING (\S+)/)
    const otherAddr = await other.listen('127.0.0.1', 0)
    b = await h.gateway(
      [
        '--p2p-listen',
        '/ip4/127.0.0.1/tcp/0',
        '--expose',
        `stargate.test.v1.EchoService=${echoAddr}`,
        '--expose',
        `stargate.v1.GatewayService=127.0.0.1:${otherAddr.port}`,
      ],
      { name: 'gateway-b' },
    )
    const bAddr = b.multiaddrs.find((m) => m.includes('/127.0.0.1/'))!
    a = await h.gateway(['--peer', `${b.peerId}=${bAddr}`], { name: 'gateway-a' })
  })

  after(async () => {
    await h.close()
    await other.stop(0)
  })

  it('reflection - list merges the services of every backend, each listed where its calls go', async () => {
    const listed = (await curl([], 'list')).trim().split('\n').sort()
    assert.ok(listed.includes('stargate.test.v1.EchoService'), listed.join(', '))
    assert.ok(listed.includes('stargate.v1.GatewayService'), listed.join(', '))
    assert.ok(!listed.includes('grpc.health.v1.Health'), 'a service B does not expose is not listed')
  })

  it('reflection - describe finds each symbol at the backend that has it; a call through reflection works', async () => {
    assert.match(await curl([], 'describe', 'stargate.test.v1.EchoService'), /rpc Bidi \( stream \.stargate\.test\.v1\.BidiRequest \)/)
    assert.match(await curl([], 'describe', 'stargate.v1.GatewayService.Call'), /rpc Call \( \.stargate\.v1\.CallRequest \)/)
    assert.match(await curl([], 'describe', 'stargate.test.v1.UnaryRequest'), /bytes payload = 1;/)
    const res = JSON.parse(await curl(['-d', '{"payload":"aGVsbG8="}'], 'stargate.test.v1.EchoService/Unary')) as { payload: string }
    assert.equal(res.payload, 'aGVsbG8=')
  })
})
