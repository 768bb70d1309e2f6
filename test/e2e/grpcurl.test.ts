/**
 * The real grpcurl (pinned v1.9.3, test/lib/tools.ts) against a running stack: relay + gateway A + gateway B
 * reachable only through the relay + a Node Serve client on B. Every command runs twice, once through each
 * server reflection version:
 * - reflection v1: grpcurl's first choice, through a pass-through HTTP/2 proxy that records the paths used;
 * - reflection v1alpha: grpcurl 1.9.3 has no flag to pick the version, so it runs through the same proxy
 *   with grpc.reflection.v1 answered UNIMPLEMENTED; grpcurl then falls back to v1alpha by itself, and the
 *   recorded paths prove that grpcurl (not another client) exercised grpc.reflection.v1alpha.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { ReflectionProxy } from '../interop/reflection-proxy.ts'
import { type Stack, startStack } from '../interop/stack.ts'
import { Harness, type Proc } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)

interface GrpcurlResult {
  exitCode: number
  stdout: string
  stderr: string
}

async function grpcurl(addr: string, ...args: string[]): Promise<GrpcurlResult> {
  try {
    const { stdout, stderr } = await run(tool('grpcurl'), ['-plaintext', ...withAddr(addr, args)], { timeout: 60_000 })
    return { exitCode: 0, stdout, stderr }
  } catch (err: unknown) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string }
    if (typeof e.code !== 'number') throw err
    return { exitCode: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

/** grpcurl wants its flags (-d, -max-time ...) before the address, and the verb or method after it. */
function withAddr(addr: string, args: string[]): string[] {
  const flags: string[] = []
  const rest: string[] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a === '-d' || a === '-max-time') flags.push(a, args[++i]!)
    else rest.push(a)
  }
  return [...flags, addr, ...rest]
}

function ok(r: GrpcurlResult): string {
  assert.equal(r.exitCode, 0, `grpcurl failed (${r.exitCode}): ${r.stderr}${r.stdout}`)
  return r.stdout
}

describe('grpcurl', { timeout: 300_000 }, () => {
  const h = new Harness()
  let s: Stack
  let serve: Proc
  const proxies: Record<'v1' | 'v1alpha', ReflectionProxy | undefined> = { v1: undefined, v1alpha: undefined }
  const addrs: Record<'v1' | 'v1alpha', string> = { v1: '', v1alpha: '' }

  before(async () => {
    tool('grpcurl')
    s = await startStack(h)
    serve = await h.serveClient(s.b.api, ['echo'])
    proxies.v1 = new ReflectionProxy(s.a.api, { blockReflectionV1: false })
    proxies.v1alpha = new ReflectionProxy(s.a.api, { blockReflectionV1: true })
    addrs.v1 = await proxies.v1.addr
    addrs.v1alpha = await proxies.v1alpha.addr
  })
  after(async () => {
    await Promise.all([proxies.v1?.close(), proxies.v1alpha?.close()])
    await h.close()
  })

  it('direct - grpcurl lists the services straight from the gateway port', async () => {
    const out = ok(await grpcurl(s.a.api, 'list'))
    assert.match(out, /^stargate\.v1\.GatewayService$/m)
  })

  for (const version of ['v1', 'v1alpha'] as const) {
    describe(`reflection ${version}`, () => {
      it(`list - services include GatewayService and health, methods include Call and Serve (${version})`, async () => {
        const out = ok(await grpcurl(addrs[version], 'list'))
        const services = out.trim().split('\n').sort()
        for (const name of ['grpc.health.v1.Health', 'stargate.v1.GatewayService']) {
          assert.ok(services.includes(name), `${name} listed in ${JSON.stringify(services)}`)
        }
        const methods = ok(await grpcurl(addrs[version], 'list', 'stargate.v1.GatewayService'))
        assert.match(methods, /^stargate\.v1\.GatewayService\.Call$/m)
        assert.match(methods, /^stargate\.v1\.GatewayService\.Serve$/m)
      })

      it(`describe - the service, a method and a message show the proto comments (${version})`, async () => {
        const svc = ok(await grpcurl(addrs[version], 'describe', 'stargate.v1.GatewayService'))
        assert.match(svc, /stargate\.v1\.GatewayService is a service:/)
        assert.match(svc, /\/\/ Call sends one unary call to method on peer_id and returns the remote answer\./)
        assert.match(svc, /rpc Call \( \.stargate\.v1\.CallRequest \) returns \( \.stargate\.v1\.CallResponse \);/)
        assert.match(svc, /rpc Serve \( stream \.stargate\.v1\.ServeRequest \) returns \( stream \.stargate\.v1\.ServeResponse \);/)
        const msg = ok(await grpcurl(addrs[version], 'describe', 'stargate.v1.CallRequest'))
        assert.match(msg, /\/\/ peer_id is the libp2p peer id of the target gateway/)
        assert.match(msg, /\.google\.protobuf\.Value json = 4;/)
      })

      it(`Call - a JSON payload reaches the Serve handler on B through the relay (${version})`, async () => {
        const before = serve.stdout.length
        const out = ok(
          await grpcurl(
            addrs[version],
            '-d',
            JSON.stringify({ peer_id: s.b.peerId, method: 'echo', json: { hello: 'world' } }),
            'stargate.v1.GatewayService/Call',
          ),
        )
        const res = JSON.parse(out) as {
          json: unknown
          tier: string
          requestId: string
          attempts: Array<{ tier: string; outcome: string }>
        }
        assert.deepEqual(res.json, { hello: 'world' })
        assert.equal(res.tier, 'TIER_RELAY')
        assert.ok(res.attempts.some((x) => x.tier === 'TIER_RELAY' && x.outcome === 'ATTEMPT_OUTCOME_SUCCESS'))
        assert.ok(
          serve.stdout.slice(before).some((l) => l.startsWith(`HANDLED echo ${res.requestId} `)),
          'the Serve client on B handled exactly this call',
        )
      })

      it(`Call - the built-in ping answers with the target peer id (${version})`, async () => {
        const out = ok(
          await grpcurl(
            addrs[version],
            '-d',
            JSON.stringify({ peer_id: s.b.peerId, method: 'ping', json: { n: 1 } }),
            'stargate.v1.GatewayService/Call',
          ),
        )
        const res = JSON.parse(out) as { json: { echo: unknown; peerId: string; time: string }; tier: string }
        assert.deepEqual(res.json.echo, { n: 1 })
        assert.equal(res.json.peerId, s.b.peerId)
        assert.equal(res.tier, 'TIER_RELAY')
      })

      it(`health - grpc.health.v1.Health/Check reports SERVING (${version})`, async () => {
        const out = ok(await grpcurl(addrs[version], 'grpc.health.v1.Health/Check'))
        assert.deepEqual(JSON.parse(out), { status: 'SERVING' })
      })

      it(`errors - a bad peer id shows Code: InvalidArgument; an unserved method Code: Unimplemented (${version})`, async () => {
        const bad = await grpcurl(
          addrs[version],
          '-d',
          JSON.stringify({ peer_id: 'not-a-peer', method: 'ping' }),
          'stargate.v1.GatewayService/Call',
        )
        assert.notEqual(bad.exitCode, 0)
        assert.match(bad.stderr, /Code: InvalidArgument/)
        assert.match(bad.stderr, /Message: .*not a valid libp2p peer id/)
        const unserved = await grpcurl(
          addrs[version],
          '-d',
          JSON.stringify({ peer_id: s.b.peerId, method: 'nobody.serves', json: 1 }),
          'stargate.v1.GatewayService/Call',
        )
        assert.match(unserved.stderr, /Code: Unimplemented/)
      })

      it(`reflection - grpcurl used grpc.reflection.${version} for all of the above`, () => {
        const paths = proxies[version]!.paths
        const used = (v: string) => paths.some((p) => p === `/grpc.reflection.${v}.ServerReflection/ServerReflectionInfo`)
        assert.ok(used('v1alpha') === (version === 'v1alpha'), `v1alpha ${version === 'v1alpha' ? '' : 'not '}used: ${paths.join(' ')}`)
        assert.ok(used('v1'), 'grpcurl always tries v1 first')
        assert.ok(paths.includes('/stargate.v1.GatewayService/Call'))
        assert.ok(paths.includes('/grpc.health.v1.Health/Check'))
      })
    })
  }
})
