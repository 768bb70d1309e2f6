/**
 * Every kind of tunnelled call over the NATS tier with the relay down, every part real: ordinary Go and
 * Python EchoService servers behind gateways B-go and B-python, which have no libp2p listener and reach out
 * only to a relay and to NATS; caller gateway A on the same relay and NATS. Once the relay is stopped, NATS
 * is the only way between them. The Go and Python clients (generated stubs, header routing) call every kind
 * with empty, small, multi-frame and larger-than-window messages through A; bytes, metadata and trailers
 * are compared as in tunnel.test.ts.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Tier } from '@stargate/shared/gen/gateway'
import { assertEchoed, assertMetadataIncludes, echoMetadataFor, metadataJson } from '../interop/echo-checks.ts'
import { ECHO_KINDS, ECHO_LANGS, type EchoServer, prepareEchoPrograms, runEchoClient, startEchoServer } from '../interop/echo-programs.ts'
import { exposeFlag, lastTier } from '../interop/tunnel-stack.ts'
import { type GatewayHandle, Harness } from '../lib/harness.ts'

/** Sizes every kind is called with: empty, one byte, more than one HTTP/2 DATA frame, more than a tunnel window. */
const SIZES = [0, 1, 64 * 1024 + 7, 2 * 1024 * 1024]

describe('tunnel over NATS, relay down (real gateways, nats-server, Go/Python servers and clients)', { timeout: 900_000 }, () => {
  const h = new Harness()
  const servers = {} as Record<'go' | 'python', EchoServer>
  const b = {} as Record<'go' | 'python', GatewayHandle>
  let a: GatewayHandle

  before(async () => {
    const [nats, relay] = await Promise.all([h.nats(), h.relay(), prepareEchoPrograms()])
    const common = ['--nats', nats.url, '--relay', relay.multiaddr, '--relay-health-interval-ms', '500']
    for (const lang of ['go', 'python'] as const) {
      servers[lang] = await startEchoServer(h, lang)
      b[lang] = await h.gateway([...common, ...exposeFlag(servers[lang])], { name: `gateway-b-${lang}` })
    }
    a = await h.gateway(common, { name: 'gateway-a' })
    for (const g of Object.values(b)) await g.proc.waitFor(/"msg":"reserved on relay"/)
    await a.proc.waitFor(/"msg":"relay healthy"/)
    // The relay goes down: the callees have no other way in but NATS.
    await relay.proc.stop('SIGKILL')
    await a.proc.waitFor(/"msg":"relay unhealthy"/)
  })
  after(async () => {
    await h.close()
  })

  for (const server of ['go', 'python'] as const) {
    for (const client of ECHO_LANGS) {
      it(`nats - ${client} client → A → NATS → B → ${server} server: every kind, bytes, headers, trailers, -bin`, async () => {
        const metadata = echoMetadataFor(server)
        const since = servers[server].events.length
        const run = await runEchoClient(client, a.api, { peer: b[server].peerId, sizes: SIZES, count: 3, metadata })
        assert.equal(run.results.length, ECHO_KINDS.length * SIZES.length)
        for (const r of run.results) assertEchoed(r, { count: 3, metadata })
        assert.equal(await lastTier(a, b[server].peerId), Tier.NATS, 'the tier A used')
        const calls = servers[server].calls('Bidi', since)
        assert.equal(calls.length, SIZES.length, h.dump())
        for (const c of calls) assertMetadataIncludes(c.metadata, metadataJson(metadata), `${server} server`)
      })
    }
  }
})
