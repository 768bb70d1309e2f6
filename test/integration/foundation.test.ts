import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import * as grpc from '@grpc/grpc-js'
import { GATEWAY_DEFAULTS } from '@stargate/gateway/defaults'
import { RELAY_DEFAULTS } from '@stargate/relay/defaults'
import { NatsState } from '@stargate/shared/gen/gateway'
import { STARGATE_VERSION } from '@stargate/shared/version'
import { eventually } from '../lib/eventually.ts'
import { type GatewayHandle, Harness, type RelayHandle } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)

async function grpcurl(...args: string[]): Promise<string> {
  const { stdout } = await run(tool('grpcurl'), ['-plaintext', ...args], { timeout: 20_000 })
  return stdout
}

/** Calls reflection v1alpha directly (grpcurl prefers v1), listing services. */
async function listServicesV1alpha(hostPort: string): Promise<string[]> {
  const client = new grpc.Client(hostPort, grpc.credentials.createInsecure())
  const call = client.makeBidiStreamRequest(
    '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
    // ServerReflectionRequest{ list_services (field 7) = "*" }
    (v: Buffer) => v,
    (b: Buffer) => b,
  )
  const services: string[] = []
  const done = new Promise<void>((resolve, reject) => {
    call.on('data', (b: Buffer) => {
      // ServerReflectionResponse.list_services_response (field 6) → ListServiceResponse.service (1) → ServiceResponse.name (1)
      const text = b.toString('latin1')
      for (const m of text.matchAll(/(stargate\.v1\.\w+|grpc\.health\.v1\.Health)/g)) services.push(m[1]!)
      call.end()
    })
    call.on('error', reject)
    call.on('end', resolve)
  })
  call.write(Buffer.from([0x3a, 0x01, 0x2a]))
  await done
  client.close()
  return [...new Set(services)]
}

describe('foundation', () => {
  const h = new Harness()
  let relay: RelayHandle
  let gateway: GatewayHandle

  before(async () => {
    relay = await h.relay()
    gateway = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--relay', relay.multiaddr])
  })
  after(async () => {
    await h.close()
  })

  it('relay - prints its peer id and multiaddrs and answers GetRelayInfo', async () => {
    const info = await relay.client.getRelayInfo({})
    assert.equal(info.peerId, relay.peerId)
    assert.equal(info.version, STARGATE_VERSION)
    assert.ok(info.multiaddrs.length > 0)
    for (const a of info.multiaddrs) assert.match(a, new RegExp(`/tcp/\\d+/p2p/${relay.peerId}$`))
    assert.equal(info.limits?.maxConnections, RELAY_DEFAULTS.maxConnections)
    assert.equal(info.limits?.maxReservations, RELAY_DEFAULTS.maxConnections)
    assert.equal(info.limits?.maxCircuitBytes, 0n)
  })

  it('relay - reports the gateway reservation in GetRelayStats', async () => {
    const stats = await eventually('the relay reports the reservation', async () => {
      const s = await relay.client.getRelayStats({})
      return s.reservations >= 1 && s
    })
    assert.equal(stats.reservations, 1)
    assert.ok(stats.connections >= 1)
  })

  it('gateway - GetStatus reports identity, addresses, relays and NATS state', async () => {
    const s = await gateway.client.getStatus({})
    assert.equal(s.peerId, gateway.peerId)
    assert.equal(s.version, STARGATE_VERSION)
    assert.ok(s.listenAddrs.some((a) => /^\/ip4\/127\.0\.0\.1\/tcp\/\d+/.test(a)))
    assert.equal(s.relays.length, 1)
    assert.equal(s.relays[0]?.peerId, relay.peerId)
    assert.equal(s.nats?.state, NatsState.DISABLED)
  })

  it('gateway - GetStatus counts the calls in flight: a call being handled, none once it answered', async () => {
    const server = await h.serveClient(gateway.api, ['slow'], { name: 'serve-slow' })
    try {
      const call = gateway.client.call({
        peerId: gateway.peerId,
        method: 'slow',
        payload: { case: 'json', value: fromJson(ValueSchema, { ms: 2_000 }) },
      })
      await server.waitFor(/^HANDLED slow /)
      const during = await gateway.client.getStatus({})
      assert.ok(during.inflightCalls >= 1, `in flight while the handler runs: ${during.inflightCalls}`)
      await call
      // the count drops before the answer leaves the gateway
      assert.equal((await gateway.client.getStatus({})).inflightCalls, 0)
    } finally {
      await server.stop()
    }
  })

  it('grpcurl - lists and describes both services through reflection', async () => {
    const gwList = await grpcurl(gateway.api, 'list')
    assert.match(gwList, /^stargate\.v1\.GatewayService$/m)
    assert.match(gwList, /^grpc\.health\.v1\.Health$/m)
    const relayList = await grpcurl(relay.admin, 'list')
    assert.match(relayList, /^stargate\.v1\.RelayService$/m)
    assert.doesNotMatch(relayList, /GatewayService/)
    const described = await grpcurl(gateway.api, 'describe', 'stargate.v1.GatewayService')
    assert.match(described, /\/\/ GatewayService is the local API of a Stargate gateway/)
    assert.match(described, /rpc Call \( \.stargate\.v1\.CallRequest \) returns \( \.stargate\.v1\.CallResponse \)/)
    const msg = await grpcurl(relay.admin, 'describe', 'stargate.v1.GetRelayStatsResponse')
    assert.match(msg, /bytes_from_initiator/)
  })

  it('grpcurl - calls GetRelayInfo and the health check with no proto files', async () => {
    const info = JSON.parse(await grpcurl(relay.admin, 'stargate.v1.RelayService/GetRelayInfo')) as { peerId: string }
    assert.equal(info.peerId, relay.peerId)
    for (const target of [gateway.api, relay.admin]) {
      assert.match(await grpcurl(target, 'grpc.health.v1.Health/Check'), /"status": "SERVING"/)
    }
    const svc = await grpcurl('-d', '{"service":"stargate.v1.GatewayService"}', gateway.api, 'grpc.health.v1.Health/Check')
    assert.match(svc, /SERVING/)
  })

  it('reflection - v1alpha lists the services too', async () => {
    const services = await listServicesV1alpha(gateway.api)
    assert.ok(services.includes('stargate.v1.GatewayService'), services.join(','))
    assert.ok(services.includes('grpc.health.v1.Health'))
  })

  it('gateway - serves the Connect protocol (HTTP/1.1 JSON) on the same port', async () => {
    const res = await fetch(`http://${gateway.api}/stargate.v1.GatewayService/GetStatus`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    })
    assert.equal(res.status, 200)
    const body = (await res.json()) as { peerId: string }
    assert.equal(body.peerId, gateway.peerId)
  })

  it('gateway - serves gRPC-Web on the same port', async () => {
    // gRPC-Web binary: 5-byte frame header + empty GetStatusRequest.
    const res = await fetch(`http://${gateway.api}/stargate.v1.GatewayService/GetStatus`, {
      method: 'POST',
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
      body: new Uint8Array([0, 0, 0, 0, 0]),
    })
    assert.equal(res.status, 200)
    const bytes = new Uint8Array(await res.arrayBuffer())
    assert.ok(Buffer.from(bytes).toString('latin1').includes(gateway.peerId))
    assert.match(Buffer.from(bytes).toString('latin1'), /grpc-status: ?0/)
  })
})

describe('lifecycle', () => {
  it('identity - a restarted relay and gateway keep their peer ids', async () => {
    const h = new Harness()
    try {
      const r1 = await h.relay()
      const g1 = await h.gateway()
      assert.equal(await r1.proc.stop(), 0)
      assert.equal(await g1.proc.stop(), 0)
      const r2 = await h.relay([], { identity: r1.identity })
      const g2 = await h.gateway([], { identity: g1.identity })
      assert.equal(r2.peerId, r1.peerId)
      assert.equal(g2.peerId, g1.peerId)
      const g3 = await h.gateway()
      assert.notEqual(g3.peerId, g1.peerId)
    } finally {
      await h.close()
    }
  })

  it('shutdown - SIGTERM reports NOT_SERVING, closes the API and exits 0', async () => {
    const h = new Harness()
    try {
      const g = await h.gateway()
      const code = await g.proc.stop('SIGTERM')
      assert.equal(code, 0)
      assert.ok(g.proc.stderr.some((l) => l.includes('"shutting down"')))
      await assert.rejects(g.client.getStatus({}, { timeoutMs: 2000 }))
    } finally {
      await h.close()
    }
  })

  it('cli - a bad flag prints what is wrong and exits 2', async () => {
    const h = new Harness()
    try {
      const unknown = await h.spawnCli('bad', ['gateway', '--no-such-flag'])
      assert.equal(await unknown.exited, 2)
      assert.match(unknown.stderr.join('\n'), /no-such-flag/)
      const badPort = await h.spawnCli('bad', ['relay', '--port', 'seventy'])
      assert.equal(await badPort.exited, 2)
      assert.match(badPort.stderr.join('\n'), /--port must be an integer/)
      const badPeer = await h.spawnCli('bad', ['gateway', '--peer', 'nope=/ip4/1.2.3.4/tcp/1'])
      assert.equal(await badPeer.exited, 2)
      assert.match(badPeer.stderr.join('\n'), /not a valid peer id/)
      const badEnv = await h.spawnCli('bad', ['relay'], { STARGATE_MAX_CONNECTIONS: 'lots' })
      assert.equal(await badEnv.exited, 2)
      assert.match(badEnv.stderr.join('\n'), /--max-connections must be an integer/)
      const help = await h.spawnCli('help', ['gateway', '--help'])
      assert.equal(await help.exited, 0)
      assert.match(help.stdout.join('\n'), /--p2p-listen/)
      assert.match(help.stdout.join('\n'), new RegExp(`default ${GATEWAY_DEFAULTS.apiHost}:${GATEWAY_DEFAULTS.apiPort}`))
    } finally {
      await h.close()
    }
  })

  it('cli - flags can come from STARGATE_* environment variables', async () => {
    const h = new Harness()
    try {
      const r = await h.relay([], { env: { STARGATE_MAX_CONNECTIONS: '77' } })
      const info = await r.client.getRelayInfo({})
      assert.equal(info.limits?.maxConnections, 77)
    } finally {
      await h.close()
    }
  })

  it('cli - keygen writes an identity the gateway then uses', async () => {
    const h = new Harness()
    try {
      const file = `${await h.tmp()}/k.key`
      const keygen = await h.spawnCli('keygen', ['keygen', '--out', file])
      assert.equal(await keygen.exited, 0)
      const peerId = keygen.stdout[0]
      const g = await h.gateway([], { identity: file })
      assert.equal(g.peerId, peerId)
    } finally {
      await h.close()
    }
  })
})
