/**
 * A reservation holder killed (SIGKILL: its connection to the relay closes with neither a stream reset nor a
 * half-close): the relay drops its reservation and ends every circuit through that connection at once, on both
 * sides, counted as CIRCUIT_END_TARGET_GONE; the caller's relayed connection then closes, so nothing is sent
 * into a dead circuit and a tunnelled stream in flight on it ends UNAVAILABLE at once. Real relay, real js-libp2p relay clients and real gateways, each in its own process.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { Tier } from '@stargate/shared/gen/gateway'
import { CircuitEnd, type GetRelayStatsResponse } from '@stargate/shared/gen/relay'
import type { UnaryResponse } from '../gen/stargate/test/v1/echo_pb.js'
import { EchoBackend, EchoClient } from '../lib/echo.ts'
import { eventually } from '../lib/eventually.ts'
import { type GatewayHandle, Harness, type RelayHandle } from '../lib/harness.ts'
import { RelayClient } from '../lib/relay-client-driver.ts'

const SERVICE = 'stargate.test.v1.EchoService'

function ended(stats: GetRelayStatsResponse, end: CircuitEnd): number {
  return Number(stats.circuitEnds.find((c) => c.end === end)?.count ?? 0n)
}

async function holdsReservation(g: GatewayHandle): Promise<void> {
  await eventually(`${g.proc.name} holds a relay reservation`, async () => (await g.client.getStatus({})).relays.some((r) => r.reserved))
}

/** A SIGKILL, and the time the process was seen gone. */
async function kill(g: { proc: { child: { kill(s: NodeJS.Signals): boolean }; exited: Promise<unknown> } }): Promise<number> {
  g.proc.child.kill('SIGKILL')
  await g.proc.exited
  return Date.now()
}

describe('relay - a reservation holder killed', { timeout: 300_000 }, () => {
  const h = new Harness()
  after(async () => {
    await h.close()
  })

  it('relay - the holder killed mid-circuit: reservation dropped, the circuit ended on both sides at once and counted', async () => {
    const relay = await h.relay(['--no-stun'])
    const holder = await RelayClient.start(h, 'holder')
    const initiator = await RelayClient.start(h, 'initiator')
    const [target] = ((await holder.ok('nodes', { count: 1 })) as unknown as { peerIds: string[] }).peerIds
    await initiator.ok('nodes', { count: 1 })
    await holder.ok('reserve', { node: 0, relay: relay.multiaddr })
    const o = await initiator.ok('open', { node: 0, relay: relay.multiaddr, target })
    assert.equal((await initiator.ok('send', { handle: o.handle, bytes: 64 * 1024 })).echoed, 64 * 1024, 'the circuit carries data')
    let stats = await relay.client.getRelayStats({})
    assert.deepEqual([stats.reservations, stats.activeCircuits], [1, 1])

    const killedAtMs = await kill(holder)
    // The initiator's relayed connection ends (its clients have no ping of their own: only the relay can end it).
    const closed = await initiator.waitEvent((e) => e.event === 'stream-closed' && e.handle === o.handle, 60_000)
    const noticedMs = Date.now() - killedAtMs
    console.log(
      `the initiator's relayed stream ended ${noticedMs} ms after the holder was killed (${closed.error ?? 'its connection closed'})`,
    )
    await relay.proc.waitFor(/"msg":"circuit closed".*"end":"target-gone"/)
    stats = await eventually('the relay holds neither the reservation nor the circuit', async () => {
      const s = await relay.client.getRelayStats({})
      return s.reservations === 0 && s.activeCircuits === 0 && s
    })
    assert.equal(ended(stats, CircuitEnd.TARGET_GONE), 1, 'counted as ended by the target going away')
    assert.equal(ended(stats, CircuitEnd.RESET), 0)
    assert.equal(stats.circuitEnds.length, Object.keys(CircuitEnd).length / 2 - 1, 'every end reported, zeros included')
  })

  it('relay - a Call right after the relay-only target was killed and restarted reaches the new one at once (no dead pooled circuit)', async () => {
    const relay = await h.relay(['--no-stun'])
    const viaRelay = ['--relay', relay.multiaddr, '--relay-health-interval-ms', '500']
    let b = await h.gateway(viaRelay, { name: 'gateway-b' })
    const a = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...viaRelay], { name: 'gateway-a' })
    await holdsReservation(b)
    const relayOnly = { allowedTiers: [Tier.RELAY], maxRetries: 0 }
    const first = await a.client.call({
      peerId: b.peerId,
      method: 'ping',
      payload: { case: 'data', value: new Uint8Array([1]) },
      options: relayOnly,
    })
    assert.equal(first.tier, Tier.RELAY)

    await kill(b)
    await relay.proc.waitFor(/"msg":"circuit closed".*"end":"target-gone"/)
    b = await h.gateway(viaRelay, { name: 'gateway-b-restarted', identity: b.identity })
    await holdsReservation(b)
    // No retry allowed: a call sent on A's pooled circuit to the killed B would wait for A's liveness probe and
    // fail "stopped answering"; the relay ended that circuit, so A dials a new one to the new B.
    const startedAtMs = Date.now()
    const again = await a.client.call({
      peerId: b.peerId,
      method: 'ping',
      payload: { case: 'data', value: new Uint8Array([2]) },
      options: relayOnly,
    })
    console.log(`the first Call after the restart took ${Date.now() - startedAtMs} ms over ${Tier[again.tier]}`)
    assert.equal(again.tier, Tier.RELAY)
    assert.deepEqual(
      again.attempts.map((t) => t.outcome),
      [again.attempts[0]!.outcome],
      'one attempt, no retry',
    )
  })

  describe('tunnelled calls found by discovery, two relay-only gateways expose the service', () => {
    const backends = [new EchoBackend(), new EchoBackend()]
    let relay: RelayHandle
    let exposers: GatewayHandle[]
    let a: GatewayHandle
    let client: grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>
    /** The exposer still alive after the first test. */
    let survivor: GatewayHandle

    after(async () => {
      client?.close()
      await Promise.all(backends.map((b) => b.stop()))
    })

    function unary(payload: string): Promise<UnaryResponse> {
      return new Promise((resolve, reject) =>
        client.unary(
          { payload: Buffer.from(payload) },
          new grpc.Metadata(),
          { deadline: new Date(Date.now() + 30_000) },
          (err: grpc.ServiceError | null, res: UnaryResponse) => (err != null ? reject(err) : resolve(res)),
        ),
      )
    }

    it('relay - the exposer that served is killed: the first call after it goes to the other one', async () => {
      await Promise.all(backends.map((b) => b.start()))
      const nats = await h.nats()
      relay = await h.relay(['--no-stun'])
      const common = ['--relay', relay.multiaddr, '--relay-health-interval-ms', '500', '--nats', nats.url]
      exposers = await Promise.all(
        backends.map((e, i) => h.gateway([...common, '--expose', `${SERVICE}=127.0.0.1:${e.port}`], { name: `gateway-b${i + 1}` })),
      )
      a = await h.gateway(common, { name: 'gateway-a' })
      await Promise.all(exposers.map(holdsReservation))
      await eventually('A discovers both exposers', async () => {
        const { peers } = await a.client.discover({ capability: `grpc:${SERVICE}` })
        return exposers.every((e) => peers.some((p) => p.peerId === e.peerId))
      })
      client = new EchoClient(a.api, grpc.credentials.createInsecure()) as unknown as typeof client
      const runs = (): number[] => backends.map((b) => b.runs.get('Unary') ?? 0)
      assert.equal(Buffer.from((await unary('first')).payload).toString(), 'first')
      const served = runs().indexOf(1)
      assert.ok(served >= 0, `one backend served: ${runs().join(', ')}`)
      const survivorIndex = 1 - served
      survivor = exposers[survivorIndex]!
      // The one that served has a measured latency: discovery ranks it first, so the next call tries it first.
      await kill(exposers[served]!)
      await relay.proc.waitFor(/"msg":"circuit closed".*"end":"target-gone"/)
      const before = runs()
      const startedAtMs = Date.now()
      assert.equal(Buffer.from((await unary('after the kill')).payload).toString(), 'after the kill', h.dump())
      console.log(`the first tunnelled call after the kill took ${Date.now() - startedAtMs} ms`)
      assert.equal(runs()[survivorIndex]! - before[survivorIndex]!, 1, 'the surviving exposer served it')
      const stats = await relay.client.getRelayStats({})
      assert.ok(ended(stats, CircuitEnd.TARGET_GONE) >= 1, 'the relay ended the circuit to the killed exposer')
    })

    it('relay - a tunnelled stream in flight to an exposer that is killed ends UNAVAILABLE, not at its deadline', async () => {
      // The backend sends its headers at once, then waits 60 s before its message: the call is open on A's
      // pooled circuit to the survivor, and nothing but the kill can end it before its 120 s deadline.
      const call = client.serverStream(
        { responseCount: 1, behavior: { delay: { seconds: 60n, nanos: 0 } } },
        (() => {
          const md = new grpc.Metadata()
          md.set('stargate-peer', survivor.peerId)
          md.set('echo-started', 'yes')
          return md
        })(),
        { deadline: new Date(Date.now() + 120_000) },
      ) as unknown as grpc.ClientReadableStream<unknown>
      const failed = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve))
      call.on('data', () => {})
      const headers = await new Promise<grpc.Metadata>((resolve) => call.once('metadata', resolve))
      assert.deepEqual(headers.get('stargate-tier'), ['TIER_RELAY'], 'the call runs through the relay')
      const killedAtMs = await kill(survivor)
      const err = await failed
      console.log(`the stream ended ${Date.now() - killedAtMs} ms after its exposer was killed: ${err.code} "${err.details}"`)
      assert.equal(err.code, grpc.status.UNAVAILABLE, `${err.code} ${err.details}`)
      assert.match(err.details, /not replayed/)
    })
  })
})
