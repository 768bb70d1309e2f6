/**
 * Discovery failover with real processes: two gateways expose the same service (each in front of its own
 * server, Go and Python) and advertise it in their presence records on NATS; caller gateway A has no route
 * and the clients set no header, so A finds the service by discovery. The gateway that served the calls is
 * killed; calls keep succeeding through the other.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { assertEchoed, ECHO_METADATA } from '../interop/echo-checks.ts'
import { ECHO_KINDS, ECHO_SERVICE, type EchoServer, prepareEchoPrograms, runEchoClient, startEchoServer } from '../interop/echo-programs.ts'
import { exposeFlag } from '../interop/tunnel-stack.ts'
import { eventually } from '../lib/eventually.ts'
import { type GatewayHandle, Harness } from '../lib/harness.ts'

describe('tunnel discovery failover (two gateways expose the service, one dies)', { timeout: 600_000 }, () => {
  const h = new Harness()
  let a: GatewayHandle
  const exposers: Array<{ gateway: GatewayHandle; server: EchoServer }> = []

  before(async () => {
    const [nats, relay] = await Promise.all([h.nats(), h.relay(), prepareEchoPrograms()])
    const common = ['--nats', nats.url, '--relay', relay.multiaddr, '--relay-health-interval-ms', '500']
    for (const lang of ['go', 'python'] as const) {
      const server = await startEchoServer(h, lang)
      const gateway = await h.gateway([...common, ...exposeFlag(server)], { name: `gateway-b-${lang}` })
      exposers.push({ gateway, server })
    }
    a = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...common], { name: 'gateway-a' })
    // A knows both exposers from their presence records (Discover lists the peers it learned on NATS).
    await eventually(`gateway A discovers both gateways exposing ${ECHO_SERVICE}`, async () => {
      const { peers } = await a.client.discover({ capability: `grpc:${ECHO_SERVICE}` })
      return exposers.every((e) => peers.some((p) => p.peerId === e.gateway.peerId))
    })
  })
  after(async () => {
    await h.close()
  })

  it('failover - with no header and no --route, calls find an exposer; stopped, the other one serves every later call', async () => {
    const served = (): number[] => exposers.map((e) => e.server.calls('Unary').length)
    const first = await runEchoClient('go', a.api, { sizes: [100], count: 2, metadata: ECHO_METADATA })
    for (const r of first.results) assertEchoed(r, { count: 2, metadata: ECHO_METADATA })
    const [go, python] = served()
    assert.equal(go! + python!, 1, 'one server got the unary call')
    const used = go === 1 ? 0 : 1
    const other = 1 - used
    console.log(`discovery chose gateway-b-${exposers[used]!.server.lang}; stopping it`)
    await exposers[used]!.gateway.proc.stop('SIGTERM')
    const before = served()
    for (const client of ['go', 'python'] as const) {
      for (let i = 0; i < 3; i++) {
        const run = await runEchoClient(client, a.api, { sizes: [100], count: 2, metadata: ECHO_METADATA })
        assert.deepEqual(
          run.results.map((r) => [r.kind, r.code, r.message]),
          ECHO_KINDS.map((k) => [k, 0, '']),
          `${client} call ${i + 1} after the kill`,
        )
        for (const r of run.results) assertEchoed(r, { count: 2, metadata: ECHO_METADATA })
      }
    }
    const after = served()
    assert.equal(after[other]! - before[other]!, 6, 'the surviving exposer served every call after the kill')
    assert.equal(after[used], before[used], 'the dead one served none')
  })
})
