import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { fromJson, toJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { AttemptOutcome, PeerSource, Tier } from '@stargate/shared/gen/gateway'
import { eventually } from '../lib/eventually.ts'
import { freePort, type GatewayHandle, Harness, type Proc, type RelayHandle } from '../lib/harness.ts'

/** A 720-hour deadline, longer than one Node timer can wait (2^31−1 ms). */
const LONG_DEADLINE = { 'grpc-timeout': '720H' }
const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })

async function expectCode(p: Promise<unknown>, code: Code, message?: RegExp): Promise<ConnectError> {
  try {
    await p
  } catch (err: unknown) {
    const e = ConnectError.from(err)
    assert.equal(Code[e.code], Code[code], `expected ${Code[code]}, got ${Code[e.code]}: ${e.rawMessage}`)
    if (message != null) assert.match(e.rawMessage, message)
    return e
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`)
}

function handledCount(proc: Proc, requestId: string): number {
  return proc.stdout.filter((l) => l.startsWith('HANDLED ') && l.split(' ')[2] === requestId).length
}

describe('tiered core', () => {
  const h = new Harness()
  let nats: { url: string; proc: Proc }
  let relay: RelayHandle
  let a: GatewayHandle // caller: direct + relay + NATS
  let b: GatewayHandle // direct-reachable target, learned through presence (A has no --peer for it)
  let c: GatewayHandle // reachable only through the relay (no p2p listen address)
  let bServe: Proc
  let cServe: Proc

  before(async () => {
    nats = await h.nats()
    relay = await h.relay()
    const common = ['--relay', relay.multiaddr, '--nats', nats.url, '--relay-health-interval-ms', '500']
    b = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...common], { name: 'gateway-b' })
    c = await h.gateway([...common], { name: 'gateway-c' })
    // A wide stagger: these tests check which tier serves, not the race between tiers (see the NAT testbed).
    a = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...common, '--backoff-base-ms', '200', '--tier-stagger-ms', '3000'], {
      name: 'gateway-a',
    })
    // shared: the load-sharing test joins a second client to its methods
    bServe = await h.serveClient(b.api, [], { shared: true })
    cServe = await h.serveClient(c.api)
  })
  after(async () => {
    await h.close()
  })

  it('presence - a peer learned from its signed presence record is listed and reached directly without --peer', async () => {
    const peers = await eventually('A lists B with its direct addresses', async () => {
      const p = await a.client.listPeers({})
      return p.peers.some((x) => x.peerId === b.peerId && x.directAddrs.length > 0) && p
    })
    const info = peers.peers.find((p) => p.peerId === b.peerId)
    assert.ok(info != null, 'B is listed')
    assert.equal(info.source, PeerSource.PRESENCE)
    assert.ok(info.directAddrs.some((x) => x.includes('/127.0.0.1/tcp/')))
    assert.ok(info.capabilities.includes('echo'), 'capabilities of the Serve client are announced')
    const discovered = await a.client.discover({ capability: 'echo' })
    assert.ok(discovered.peers.some((p) => p.peerId === b.peerId))
    const res = await a.client.call({ peerId: b.peerId, method: 'ping', payload: json({ hello: 'b' }) })
    assert.equal(res.tier, Tier.DIRECT)
    const body = toJson(ValueSchema, res.payload.value as never) as { echo: unknown; peerId: string; time: string }
    assert.deepEqual(body.echo, { hello: 'b' })
    assert.equal(body.peerId, b.peerId)
    assert.ok(!Number.isNaN(Date.parse(body.time)))
  })

  it('direct - JSON and bytes payloads reach a Serve handler in another process', async () => {
    const r1 = await a.client.call({ peerId: b.peerId, method: 'echo', payload: json({ n: 1, s: 'x' }) })
    assert.equal(r1.tier, Tier.DIRECT)
    assert.deepEqual(toJson(ValueSchema, r1.payload.value as never), { n: 1, s: 'x' })
    const bytes = new Uint8Array([1, 2, 3, 250])
    const r2 = await a.client.call({ peerId: b.peerId, method: 'echo', payload: { case: 'data', value: bytes } })
    assert.equal(r2.tier, Tier.DIRECT)
    assert.deepEqual(r2.payload.value, bytes)
    assert.ok(handledCount(bServe, r2.requestId) === 1)
  })

  it('relay - a peer with no direct address is served through the relay; direct is skipped with a reason', async () => {
    const res = await a.client.call({ peerId: c.peerId, method: 'echo', payload: json({ via: 'relay' }) })
    assert.equal(res.tier, Tier.RELAY)
    const direct = res.attempts.find((x) => x.tier === Tier.DIRECT)
    assert.equal(direct?.outcome, AttemptOutcome.SKIPPED)
    assert.match(direct?.reason ?? '', /no known direct address/)
    const relayed = res.attempts.find((x) => x.tier === Tier.RELAY)
    assert.equal(relayed?.outcome, AttemptOutcome.SUCCESS)
    assert.match(relayed?.via ?? '', new RegExp(`/p2p/${relay.peerId}/p2p-circuit/p2p/${c.peerId}$`))
    const bytes = await a.client.call({ peerId: c.peerId, method: 'echo', payload: { case: 'data', value: new Uint8Array([9, 8]) } })
    assert.equal(bytes.tier, Tier.RELAY)
    assert.deepEqual(bytes.payload.value, new Uint8Array([9, 8]))
    assert.equal(handledCount(cServe, bytes.requestId), 1)
  })

  it('relay - several calls of 700 KB and more go through the relay on one pooled connection', async () => {
    const before = await a.client.getPoolStats({})
    const payload = new Uint8Array(720 * 1024).map((_, i) => i % 251)
    for (let i = 0; i < 4; i++) {
      const res = await a.client.call({ peerId: c.peerId, method: 'echo', payload: { case: 'data', value: payload } })
      assert.equal(res.tier, Tier.RELAY)
      assert.equal(res.payload.case, 'data')
      assert.deepEqual(res.payload.value, payload)
    }
    const big = await a.client.call({ peerId: c.peerId, method: 'big', payload: json({ bytes: 900 * 1024 }) })
    assert.equal((big.payload.value as Uint8Array).byteLength, 900 * 1024)
    const after = await a.client.getPoolStats({})
    assert.equal(after.misses, before.misses, 'no new connection was opened')
    assert.ok(after.hits >= before.hits + 5n)
    const stats = await relay.client.getRelayStats({})
    assert.ok(stats.activeCircuits >= 1)
  })

  it('pool - a second call reuses the pooled connection (hits), and GetPeerMetrics reflects the calls', async () => {
    const s0 = await a.client.getPoolStats({})
    await a.client.call({ peerId: b.peerId, method: 'ping', payload: json(1) })
    await a.client.call({ peerId: b.peerId, method: 'ping', payload: json(2) })
    const s1 = await a.client.getPoolStats({})
    assert.equal(s1.hits, s0.hits + 2n)
    assert.equal(s1.misses, s0.misses)
    assert.equal(s1.maxSize, 50)
    assert.equal(Number(s1.ttl?.seconds), 300)
    const m = await a.client.getPeerMetrics({ peerId: b.peerId })
    assert.equal(m.peers.length, 1)
    assert.equal(m.peers[0]?.connectionType, Tier.DIRECT)
    assert.ok((m.peers[0]?.totalRequests ?? 0n) >= 4n)
    assert.ok((m.peers[0]?.latencyMs ?? 0) > 0)
    assert.equal(m.peers[0]?.successRate, 1)
    await expectCode(a.client.getPeerMetrics({ peerId: '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK' }), Code.NotFound)
  })

  it('remote errors - a handler error comes back with its own status, not retried, and ran exactly once', async () => {
    const key = `fail-${Date.now()}`
    await expectCode(
      a.client.call({ peerId: b.peerId, method: 'fail', payload: json({ code: Code.FailedPrecondition }), idempotencyKey: key }),
      Code.FailedPrecondition,
      /handler failed on purpose/,
    )
    assert.equal(handledCount(bServe, key), 1)
  })

  it('idempotency - a retry with the same key on another tier is answered from memory; the handler ran once', async () => {
    const key = `idem-${Date.now()}`
    const first = await a.client.call({
      peerId: b.peerId,
      method: 'echo',
      payload: json({ n: 1 }),
      idempotencyKey: key,
      options: { allowedTiers: [Tier.DIRECT] },
    })
    assert.equal(first.tier, Tier.DIRECT)
    assert.equal(first.requestId, key)
    const again = await a.client.call({
      peerId: b.peerId,
      method: 'echo',
      payload: json({ n: 2 }),
      idempotencyKey: key,
      options: { allowedTiers: [Tier.NATS] },
    })
    assert.equal(again.tier, Tier.NATS)
    assert.deepEqual(toJson(ValueSchema, again.payload.value as never), { n: 1 }, 'the remembered answer, not a new run')
    assert.equal(handledCount(bServe, key), 1)
  })

  it('errors - unserved method → UNIMPLEMENTED; bad peer id → INVALID_ARGUMENT; oversized payload → RESOURCE_EXHAUSTED', async () => {
    await expectCode(a.client.call({ peerId: b.peerId, method: 'nobody-serves-this', payload: json(1) }), Code.Unimplemented, /no handler/)
    await expectCode(a.client.call({ peerId: 'not-a-peer', method: 'ping' }), Code.InvalidArgument, /not a valid libp2p peer id/)
    await expectCode(a.client.call({ peerId: b.peerId, method: '' }), Code.InvalidArgument, /method is required/)
    await expectCode(
      a.client.call({ peerId: b.peerId, method: 'echo', payload: { case: 'data', value: new Uint8Array(4 * 1024 * 1024 + 1) } }),
      Code.ResourceExhausted,
      /exceeds the maximum/,
    )
    // the gateway is still up
    assert.equal((await a.client.getStatus({})).peerId, a.peerId)
  })

  it('deadline - the client deadline bounds the call end to end', async () => {
    const t0 = Date.now()
    await expectCode(
      a.client.call({ peerId: b.peerId, method: 'slow', payload: json({ ms: 5000 }) }, { timeoutMs: 800 }),
      Code.DeadlineExceeded,
    )
    const took = Date.now() - t0
    assert.ok(took < 3000, `answered after ${took} ms`)
  })

  it('deadline - grpc-timeout 720H (beyond one Node timer, 2^31−1 ms) is not cut short, direct and through the relay', async () => {
    // The header alone: a client-side timer of 720 hours would be clamped by Node in the test process too.
    for (const [peer, tier] of [
      [b, Tier.DIRECT],
      [c, Tier.RELAY],
    ] as const) {
      const res = await a.client.call({ peerId: peer.peerId, method: 'slow', payload: json({ ms: 200 }) }, { headers: LONG_DEADLINE })
      assert.equal(res.tier, tier)
      assert.deepEqual(toJson(ValueSchema, res.payload.value as never), { ms: 200 })
    }
  })

  it('serve - several Serve streams for one method share the load; a closed stream unregisters its methods', async () => {
    const second = await h.serveClient(b.api, ['echo', 'only-second'])
    const ids: string[] = []
    for (let i = 0; i < 6; i++) ids.push((await a.client.call({ peerId: b.peerId, method: 'echo', payload: json(i) })).requestId)
    const first = ids.filter((id) => handledCount(bServe, id) === 1).length
    const other = ids.filter((id) => handledCount(second, id) === 1).length
    assert.equal(first + other, 6)
    assert.ok(first > 0 && other > 0, `load shared (${first}/${other})`)
    await a.client.call({ peerId: b.peerId, method: 'only-second', payload: json(1) })
    await second.stop()
    const status = await b.client.getStatus({})
    assert.ok(!status.methods.includes('only-second'))
    await expectCode(a.client.call({ peerId: b.peerId, method: 'only-second', payload: json(1) }), Code.Unimplemented)
  })

  it('nats - with the relay down, the relay-only peer is served over NATS; then nothing left → UNAVAILABLE with per-tier reasons', async () => {
    await relay.proc.stop()
    const res = await a.client.call({ peerId: c.peerId, method: 'echo', payload: json({ via: 'nats' }) })
    assert.equal(res.tier, Tier.NATS)
    assert.deepEqual(toJson(ValueSchema, res.payload.value as never), { via: 'nats' })
    assert.equal(handledCount(cServe, res.requestId), 1)
    const big = new Uint8Array(700 * 1024).fill(3)
    const bytes = await a.client.call({ peerId: c.peerId, method: 'echo', payload: { case: 'data', value: big } })
    assert.equal(bytes.tier, Tier.NATS)
    assert.deepEqual(bytes.payload.value, big)
    const long = await a.client.call({ peerId: c.peerId, method: 'slow', payload: json({ ms: 200 }) }, { headers: LONG_DEADLINE })
    assert.equal(long.tier, Tier.NATS, 'a 720-hour deadline is not cut short over NATS')
    await nats.proc.stop()
    const t0 = Date.now()
    const e = await expectCode(
      a.client.call({ peerId: c.peerId, method: 'echo', payload: json(1), options: { maxRetries: 1 } }, { timeoutMs: 10_000 }),
      Code.Unavailable,
    )
    assert.match(e.rawMessage, /direct: no known direct address/)
    assert.match(e.rawMessage, /relay: /)
    assert.match(e.rawMessage, /nats: NATS is not connected/)
    assert.ok(Date.now() - t0 < 10_000)
  })
})

describe('tiered core - retries and pool expiry', () => {
  it('retry - the target is down briefly and comes back within the backoff window: the call succeeds', async () => {
    const h = new Harness()
    try {
      const port = await freePort()
      const target = await h.gateway(['--p2p-listen', `/ip4/127.0.0.1/tcp/${port}`], { name: 'target' })
      const caller = await h.gateway(['--peer', `${target.peerId}=/ip4/127.0.0.1/tcp/${port}`, '--backoff-base-ms', '1000'], {
        name: 'caller',
      })
      assert.equal((await caller.client.call({ peerId: target.peerId, method: 'ping', payload: json(0) })).tier, Tier.DIRECT)
      await target.proc.stop()
      // Retries wait 1, 2, 4, 8, 16 s: the target comes back well within that window even on a loaded machine.
      const pending = caller.client.call(
        { peerId: target.peerId, method: 'ping', payload: json(1), options: { maxRetries: 5 } },
        { timeoutMs: 60_000 },
      )
      // restart on the same identity and port while the caller is backing off
      await caller.proc.waitFor(/"msg":"retrying call"/, 10_000)
      const back = await h.gateway(['--p2p-listen', `/ip4/127.0.0.1/tcp/${port}`], { identity: target.identity, name: 'target-again' })
      assert.equal(back.peerId, target.peerId)
      const res = await pending
      assert.equal(res.tier, Tier.DIRECT)
      assert.ok(res.attempts.some((x) => x.outcome === AttemptOutcome.FAILED && x.round === 0))
      assert.ok(res.attempts.some((x) => x.outcome === AttemptOutcome.SUCCESS && (x.round ?? 0) >= 1))
    } finally {
      await h.close()
    }
  })

  it('shutdown - SIGTERM lets an in-flight call finish within the grace period, refuses new ones, then exits 0', async () => {
    const h = new Harness()
    try {
      const target = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0'], { name: 'target' })
      const serve = await h.serveClient(target.api, ['slow'])
      const caller = await h.gateway(['--peer', `${target.peerId}=${target.multiaddrs[0]}`], { name: 'caller' })
      const pending = caller.client.call({ peerId: target.peerId, method: 'slow', payload: json({ ms: 1500 }) }, { timeoutMs: 20_000 })
      await serve.waitFor(/^HANDLED slow /)
      const exited = caller.proc.stop('SIGTERM')
      await caller.proc.waitFor(/"msg":"shutting down"/)
      const res = await pending.catch((err: unknown) => {
        throw new Error(`${String(err)}\n${caller.proc.dump()}`)
      })
      assert.equal(res.tier, Tier.DIRECT)
      await assert.rejects(caller.client.getStatus({}, { timeoutMs: 2_000 }))
      assert.equal(await exited, 0)
    } finally {
      await h.close()
    }
  })

  it('pool - idle connections are closed after the TTL', async () => {
    const h = new Harness()
    try {
      const target = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0'], { name: 'target' })
      const caller = await h.gateway(['--peer', `${target.peerId}=${target.multiaddrs[0]}`, '--pool-ttl-ms', '400'], { name: 'caller' })
      await caller.client.call({ peerId: target.peerId, method: 'ping', payload: json(0) })
      assert.equal((await caller.client.getPoolStats({})).size, 1)
      const stats = await eventually('the idle channel expired', async () => {
        const s = await caller.client.getPoolStats({})
        return s.size === 0 && s
      })
      assert.equal(stats.size, 0)
      assert.equal(stats.expirations, 1n)
      const again = await caller.client.call({ peerId: target.peerId, method: 'ping', payload: json(1) })
      assert.equal(again.tier, Tier.DIRECT)
      assert.equal((await caller.client.getPoolStats({})).misses, 2n)
    } finally {
      await h.close()
    }
  })

  it('pool - concurrent first calls to a peer share one connect: one channel opened, none retried', async () => {
    const h = new Harness()
    try {
      const target = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0'], { name: 'target' })
      const caller = await h.gateway(['--peer', `${target.peerId}=${target.multiaddrs[0]}`], { name: 'caller' })
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => caller.client.call({ peerId: target.peerId, method: 'ping', payload: json(i) })),
      )
      for (const r of results) {
        assert.equal(r.tier, Tier.DIRECT)
        assert.deepEqual(
          r.attempts.filter((a) => a.outcome !== AttemptOutcome.SKIPPED).map((a) => [a.round, a.outcome]),
          [[0, AttemptOutcome.SUCCESS]],
          'answered on the first attempt: no channel was retired under it',
        )
      }
      const stats = await caller.client.getPoolStats({})
      assert.equal(stats.misses, 1n, 'one channel was opened for the twenty calls')
      assert.equal(stats.size, 1)
    } finally {
      await h.close()
    }
  })
})
