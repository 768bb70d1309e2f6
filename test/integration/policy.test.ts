import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import * as grpc from '@grpc/grpc-js'
import { CallerPolicyMode, Tier } from '@stargate/shared/gen/gateway'
import type { UnaryResponse } from '../gen/stargate/test/v1/echo_pb.js'
import { EchoBackend, EchoClient } from '../lib/echo.ts'
import { freePort, type GatewayHandle, Harness, type Proc } from '../lib/harness.ts'

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })

async function expectCode(p: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await p
  } catch (err: unknown) {
    const e = ConnectError.from(err)
    assert.equal(Code[e.code], Code[code], e.rawMessage)
    return e
  }
  assert.fail(`expected ${Code[code]}, the call succeeded`)
}

/** A Prometheus scrape of a gateway, and the sum of the samples of one metric whose labels match. */
async function metric(port: number, name: string, labels: RegExp = /.*/): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line)
    if (m != null && labels.test(m[1] ?? '')) sum += Number(m[2])
  }
  return sum
}

/** Creates an identity with `stargate keygen` and returns its file and peer id. */
async function keygen(h: Harness, name: string): Promise<{ file: string; peerId: string }> {
  const file = join(await h.tmp(), `${name}.key`)
  const proc = await h.spawnCli(`keygen-${name}`, ['keygen', '--out', file])
  const [, peerId] = await proc.waitFor(/^(12D3\S+)$/)
  assert.equal(await proc.exited, 0)
  return { file, peerId: peerId! }
}

const ECHO = 'stargate.test.v1.EchoService'
/** Tier attempts that were made (not skipped). */
const TRIED = /stargate_outcome="(?!skipped")/

/** A tunnelled unary EchoService call through a gateway's API to a target peer; resolves to its status code. */
function tunnelledUnary(api: string, target: string, payload: string): Promise<{ code: number; details: string; res?: UnaryResponse }> {
  const client = new EchoClient(api, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    unary(req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: UnaryResponse) => void): void
  }
  const md = new grpc.Metadata()
  md.set('stargate-peer', target)
  return new Promise((resolve) =>
    client.unary({ payload: Buffer.from(payload) }, md, { deadline: new Date(Date.now() + 20_000) }, (err, res) => {
      client.close()
      resolve(err != null ? { code: err.code, details: err.details } : { code: 0, details: '', res })
    }),
  )
}

function handled(serve: Proc, requestId: string): number {
  return serve.stdout.filter((l) => l.startsWith('HANDLED ') && l.includes(` ${requestId} `)).length
}

describe('caller policy with real gateways', () => {
  const h = new Harness()
  let natsUrl: string
  let alice: GatewayHandle
  let mallory: GatewayHandle
  let target: GatewayHandle
  let targetServe: Proc
  let targetMetrics: number
  let malloryMetrics: number
  const echo = new EchoBackend()

  before(async () => {
    await echo.start()
    natsUrl = (await h.nats()).url
    const aliceKey = await keygen(h, 'alice')
    targetMetrics = await freePort()
    malloryMetrics = await freePort()
    target = await h.gateway(
      [
        '--p2p-listen',
        '/ip4/127.0.0.1/tcp/0',
        '--nats',
        natsUrl,
        '--allow-caller',
        `${aliceKey.peerId}=echo`,
        '--allow-caller',
        `${aliceKey.peerId}=ping`,
        '--allow-caller',
        `${aliceKey.peerId}=${ECHO}.*`,
        '--expose',
        `${ECHO}=127.0.0.1:${echo.port}`,
        '--metrics-listen',
        `127.0.0.1:${targetMetrics}`,
      ],
      { name: 'target' },
    )
    targetServe = await h.serveClient(target.api, ['echo', 'other'])
    const peer = ['--peer', `${target.peerId}=${target.multiaddrs.find((a) => a.includes('/127.0.0.1/'))}`]
    alice = await h.gateway(['--nats', natsUrl, ...peer], { name: 'alice', identity: aliceKey.file })
    assert.equal(alice.peerId, aliceKey.peerId)
    mallory = await h.gateway(['--nats', natsUrl, ...peer, '--metrics-listen', `127.0.0.1:${malloryMetrics}`], { name: 'mallory' })
  })
  after(async () => {
    await h.close()
    await echo.stop()
  })

  it('policy - a peer not on the allow list gets PERMISSION_DENIED for Call and ping, on every tier; the denial is not retried', async () => {
    const denied: ConnectError[] = []
    for (const [method, tiers] of [
      ['echo', [Tier.DIRECT]],
      ['ping', [Tier.DIRECT]],
      ['echo', [Tier.NATS]],
    ] as const) {
      const call = mallory.client.call({
        peerId: target.peerId,
        method,
        payload: json({ from: 'mallory' }),
        idempotencyKey: `mallory-${method}-${tiers[0]}`,
        options: { allowedTiers: [...tiers] },
      })
      denied.push(await expectCode(call, Code.PermissionDenied))
    }
    for (const [i, method] of ['echo', 'ping', 'echo'].entries()) {
      const message = denied[i]!.rawMessage
      assert.match(message, new RegExp(`peer ${mallory.peerId} may not call "${method}" on gateway ${target.peerId}`))
      assert.match(message, new RegExp(`--allow-caller ${mallory.peerId}=${method}`))
    }
    // not retried: one attempt per call (remote_error), and no retry logged
    const attempts = await metric(malloryMetrics, 'stargate_tier_attempts_total')
    const remoteErrors = await metric(malloryMetrics, 'stargate_tier_attempts_total', /stargate_outcome="remote_error"/)
    console.log(`mallory's attempts: ${attempts} in all, ${remoteErrors} answered with an error status, for 3 denied calls`)
    assert.equal(attempts, 3)
    assert.equal(remoteErrors, 3)
    assert.ok(!mallory.proc.stderr.some((l) => l.includes('retrying call')), 'no retry')
    // nothing reached the handler; the target counted the denials
    assert.ok(!targetServe.stdout.some((l) => l.includes('mallory-')), 'the handler never saw a denied call')
    assert.equal(await metric(targetMetrics, 'stargate_inbound_dropped_total', /reason="denied"/), 3)
    await target.proc.waitFor(new RegExp(`denied a call \\(caller policy\\).*${mallory.peerId}`))
  })

  it('policy - a tunnelled gRPC call from a peer not on the allow list is PERMISSION_DENIED and never reaches the backend; an allowed peer is served', async () => {
    const attemptsBefore = await metric(malloryMetrics, 'stargate_tier_attempts_total', TRIED)
    const runsBefore = echo.runs.get('Unary') ?? 0
    const denied = await tunnelledUnary(mallory.api, target.peerId, 'from mallory')
    assert.equal(denied.code, grpc.status.PERMISSION_DENIED, denied.details)
    assert.match(denied.details, new RegExp(`peer ${mallory.peerId} may not call "${ECHO}\\.Unary"`))
    assert.equal(echo.runs.get('Unary') ?? 0, runsBefore, 'the backend never saw it')
    // tiers that cannot carry it (no relay) are recorded as skipped; direct connects first, so NATS is not tried
    const attempts = (await metric(malloryMetrics, 'stargate_tier_attempts_total', TRIED)) - attemptsBefore
    console.log(`mallory's attempts for the denied tunnelled call: ${attempts}`)
    assert.equal(attempts, 1, 'not retried')
    assert.equal(await metric(targetMetrics, 'stargate_inbound_dropped_total', /reason="denied"/), 4)
    const served = await tunnelledUnary(alice.api, target.peerId, 'from alice')
    assert.equal(served.code, 0, served.details)
    assert.equal(Buffer.from(served.res?.payload ?? []).toString(), 'from alice')
    assert.equal(echo.runs.get('Unary') ?? 0, runsBefore + 1)
  })

  it('policy - an allowed peer is served, for the methods its rules name only', async () => {
    const res = await alice.client.call({ peerId: target.peerId, method: 'echo', payload: json({ from: 'alice' }) })
    assert.equal(handled(targetServe, res.requestId), 1)
    const ping = await alice.client.call({ peerId: target.peerId, method: 'ping', payload: json(1) })
    assert.equal(ping.payload.case, 'json')
    const nats = await alice.client.call({
      peerId: target.peerId,
      method: 'echo',
      payload: json(2),
      options: { allowedTiers: [Tier.NATS] },
    })
    assert.equal(nats.tier, Tier.NATS)
    const e = await expectCode(alice.client.call({ peerId: target.peerId, method: 'other', payload: json(3) }), Code.PermissionDenied)
    assert.match(e.rawMessage, /may not call "other"/)
  })

  it('policy - GetStatus reports RESTRICTED with the rule count; an open gateway reports OPEN and warned at start', async () => {
    const restricted = (await target.client.getStatus({})).callerPolicy
    assert.equal(restricted?.mode, CallerPolicyMode.RESTRICTED)
    assert.equal(restricted?.ruleCount, 3)
    const open = (await mallory.client.getStatus({})).callerPolicy
    assert.equal(open?.mode, CallerPolicyMode.OPEN)
    assert.equal(open?.ruleCount, 0)
    await mallory.proc.waitFor(/caller policy OPEN: any libp2p or NATS peer .* --allow-caller/)
    assert.ok(!target.proc.stderr.some((l) => l.includes('caller policy OPEN')))
  })

  it('policy file - rules from a file, re-read on SIGHUP; a bad reload names the line and keeps the rules', async () => {
    const file = join(await h.tmp(), 'callers.policy')
    await writeFile(file, `# who may call\n${alice.peerId}=echo\n`)
    const guarded = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--nats', natsUrl, '--caller-policy', file], {
      name: 'guarded',
    })
    await h.serveClient(guarded.api, ['echo'])
    assert.equal((await guarded.client.getStatus({})).callerPolicy?.policyFile, file)
    // mallory learns the new gateway from its presence record on NATS
    const call = (key: string) =>
      mallory.client.call({ peerId: guarded.peerId, method: 'echo', payload: json(key), idempotencyKey: key }, { timeoutMs: 15_000 })
    await expectCode(call('before-reload'), Code.PermissionDenied)
    await writeFile(file, `${alice.peerId}=echo\n${mallory.peerId}=echo # now allowed\n`)
    guarded.proc.child.kill('SIGHUP')
    await guarded.proc.waitFor(/caller policy reloaded.*"rules":2/)
    assert.equal((await call('after-reload')).payload.case, 'json')
    await writeFile(file, `${mallory.peerId}=echo\n${mallory.peerId}=ec*ho\n`)
    guarded.proc.child.kill('SIGHUP')
    await guarded.proc.waitFor(/caller policy not reloaded; the rules in force stay.*line 2/)
    assert.equal((await call('after-bad-reload')).payload.case, 'json')
    assert.equal((await guarded.client.getStatus({})).callerPolicy?.ruleCount, 2)
    assert.ok(guarded.proc.running)
  })

  it('policy file - a bad file or flag stops start-up with a message naming the line or flag', async () => {
    const file = join(await h.tmp(), 'bad.policy')
    await writeFile(file, `${alice.peerId}=echo\n\nnot-a-peer=echo\n`)
    const bad = await h.spawnCli('bad-policy', [
      'gateway',
      '--listen',
      '127.0.0.1:0',
      '--identity',
      join(await h.tmp(), 'bad.key'),
      '--caller-policy',
      file,
    ])
    assert.notEqual(await bad.exited, 0)
    assert.ok(
      bad.stderr.some((l) => l.includes(`--caller-policy ${file} line 3: "not-a-peer" is not a libp2p peer id`)),
      bad.dump(),
    )
    const flag = await h.spawnCli('bad-flag', ['gateway', '--allow-caller', `${alice.peerId}=a*`])
    assert.equal(await flag.exited, 2)
    assert.ok(
      flag.stderr.some((l) => l.includes('--allow-caller')),
      flag.dump(),
    )
  })
})
