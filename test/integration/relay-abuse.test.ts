import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { durationMs, ValueSchema } from '@bufbuild/protobuf/wkt'
import { RELAY_DEFAULTS } from '@stargate/relay/defaults'
import { Tier } from '@stargate/shared/gen/gateway'
import { type GetRelayStatsResponse, RefusalReason } from '@stargate/shared/gen/relay'
import { eventually } from '../lib/eventually.ts'
import { freePort, Harness } from '../lib/harness.ts'
import { RelayClient } from '../lib/relay-client-driver.ts'

/**
 * The relay against abuse and stale holders (issues 13 and 18), with a real `stargate relay` process, real
 * js-libp2p nodes (test/lib/relay-client.ts) dialing from several loopback addresses (127.0.0.x, so the relay
 * sees distinct source IPs) and real gateways.
 */

function refusals(stats: GetRelayStatsResponse, reason: RefusalReason): number {
  return Number(stats.refusals.find((r) => r.reason === reason)?.count ?? 0n)
}

type Raw = { statuses: Record<string, number>; results: Array<{ status: string; ms: number }>; handles: number[] }

describe('relay abuse', { timeout: 240_000 }, () => {
  const h = new Harness()
  after(async () => {
    await h.close()
  })

  it('relay - by default one IP holds at most its share of the reservations (PER_IP_LIMIT); another IP still reserves', async () => {
    const relay = await h.relay()
    const info = await relay.client.getRelayInfo({})
    const share = RELAY_DEFAULTS.maxReservationsPerIp
    assert.equal(info.limits?.maxReservationsPerIp, share)
    assert.ok(share * 10 <= (info.limits?.maxReservations ?? 0), `per-IP ${share} of ${info.limits?.maxReservations}`)
    const c = await RelayClient.start(h)
    await c.ok('nodes', { count: share + 4 })
    const r = await c.ok('reserveMany', { from: 0, to: share + 4, relay: relay.multiaddr, concurrency: share + 4 })
    assert.equal(r.reserved, share)
    assert.equal((r.errors as string[]).length, 4)
    for (const e of r.errors as string[]) assert.match(e, /status RESERVATION_REFUSED/)
    const { first } = (await c.ok('nodes', { count: 2, localAddress: '127.0.0.2' })) as unknown as { first: number }
    const other = await c.ok('reserveMany', { from: first, to: first + 2, relay: relay.multiaddr, concurrency: 2 })
    assert.deepEqual(other.errors, [])
    const stats = await relay.client.getRelayStats({})
    assert.equal(stats.reservations, share + 2)
    assert.equal(refusals(stats, RefusalReason.PER_IP_LIMIT), 4)
    assert.equal(refusals(stats, RefusalReason.RESERVATION_LIMIT), 0)
    console.log(
      `# one IP: ${r.reserved} of ${share + 4} reservations (share ${share} of ${info.limits?.maxReservations}); another IP: 2 of 2`,
    )
  })

  it('relay - a CONNECT flood from one IP is rate-limited (SOURCE_RATE_LIMITED), counted in GetRelayStats and the metrics', async () => {
    const metrics = await freePort()
    const relay = await h.relay(['--max-circuits-per-ip-per-second', '20', '--metrics-listen', `127.0.0.1:${metrics}`])
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    const { first: bystander } = (await c.ok('nodes', { count: 1, localAddress: '127.0.0.2' })) as unknown as { first: number }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    await c.ok('stopMode', { node: 0, mode: 'accept' })
    const started = Date.now()
    const flood = (await c.ok('connectRaw', { node: 1, relay: relay.multiaddr, target: peerIds[0], count: 300 }, 60_000)) as unknown as Raw
    const windows = Math.ceil((Date.now() - started) / 1000) + 1
    const ok = flood.statuses.OK ?? 0
    const limited = flood.statuses.RESOURCE_LIMIT_EXCEEDED ?? 0
    assert.equal(ok + limited, 300, JSON.stringify(flood.statuses))
    assert.ok(ok >= 20 && ok <= 20 * windows, `${ok} CONNECTs accepted in ${windows} one-second windows`)
    // another source IP keeps its own rate during the flood
    const calm = (await c.ok('connectRaw', { node: bystander, relay: relay.multiaddr, target: peerIds[0], count: 5 })) as unknown as Raw
    assert.deepEqual(calm.statuses, { OK: 5 })
    const stats = await relay.client.getRelayStats({})
    assert.equal(refusals(stats, RefusalReason.SOURCE_RATE_LIMITED), limited)
    assert.equal(refusals(stats, RefusalReason.RATE_LIMITED), 0)
    assert.equal(stats.totalCircuits, BigInt(ok + 5))
    await relay.proc.waitFor(/"msg":"refused","reason":"SOURCE_RATE_LIMITED","op":"connect".*"limit":"max-circuits-per-ip-per-second"/)
    const scrape = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text()
    const line = scrape.split('\n').find((l) => /^stargate_relay_refusals(_total)?\{/.test(l) && l.includes('reason="SOURCE_RATE_LIMITED"'))
    assert.ok(line?.endsWith(` ${limited}`), `metric line ${line}`)
    console.log(`# CONNECT flood: ${ok} of 300 accepted over ${windows} windows at 20/s, ${limited} refused SOURCE_RATE_LIMITED`)
  })

  it('relay - CONNECTs to one peer are rate-limited (DESTINATION_RATE_LIMITED) whatever their source', async () => {
    const relay = await h.relay(['--max-circuits-to-peer-per-second', '5'])
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    const sources: number[] = []
    for (const ip of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) {
      sources.push(((await c.ok('nodes', { count: 1, localAddress: ip })) as unknown as { first: number }).first)
    }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    await c.ok('reserve', { node: 1, relay: relay.multiaddr })
    await c.ok('stopMode', { node: 0, mode: 'accept' })
    await c.ok('stopMode', { node: 1, mode: 'accept' })
    const started = Date.now()
    const all = (await Promise.all(
      sources.map((s) => c.ok('connectRaw', { node: s, relay: relay.multiaddr, target: peerIds[0], count: 10 })),
    )) as unknown as Raw[]
    const windows = Math.ceil((Date.now() - started) / 1000) + 1
    const ok = all.reduce((n, r) => n + (r.statuses.OK ?? 0), 0)
    const limited = all.reduce((n, r) => n + (r.statuses.RESOURCE_LIMIT_EXCEEDED ?? 0), 0)
    assert.equal(ok + limited, 30, JSON.stringify(all.map((r) => r.statuses)))
    assert.ok(ok >= 5 && ok <= 5 * windows, `${ok} CONNECTs to one peer accepted in ${windows} windows`)
    // another destination is not affected
    const elsewhere = (await c.ok('connectRaw', {
      node: sources[0],
      relay: relay.multiaddr,
      target: peerIds[1],
      count: 3,
    })) as unknown as Raw
    assert.deepEqual(elsewhere.statuses, { OK: 3 })
    const stats = await relay.client.getRelayStats({})
    assert.equal(refusals(stats, RefusalReason.DESTINATION_RATE_LIMITED), limited)
    assert.equal(refusals(stats, RefusalReason.SOURCE_RATE_LIMITED), 0)
  })

  it('relay - open circuits are capped per source peer, per source IP and per destination; a closed circuit frees its place', async () => {
    // debug: the relay logs a circuit that ended normally ("circuit closed", end "closed") at debug level.
    const relay = await h.relay(['--max-circuits-per-peer', '2', '--max-circuits-per-ip', '3', '--max-circuits-to-peer', '4'], {
      env: { STARGATE_LOG_LEVEL: 'debug' },
    })
    const info = await relay.client.getRelayInfo({})
    assert.deepEqual([info.limits?.maxCircuitsPerPeer, info.limits?.maxCircuitsPerIp, info.limits?.maxCircuitsToPeer], [2, 3, 4])
    const c = await RelayClient.start(h)
    const { peerIds: targets } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    const { first: s1, peerIds: s1Peers } = (await c.ok('nodes', { count: 2, localAddress: '127.0.0.2' })) as unknown as {
      first: number
      peerIds: string[]
    }
    const { first: s3 } = (await c.ok('nodes', { count: 1, localAddress: '127.0.0.3' })) as unknown as { first: number }
    for (const node of [0, 1]) {
      await c.ok('reserve', { node, relay: relay.multiaddr })
      await c.ok('stopMode', { node, mode: 'accept' })
    }
    const hold = async (node: number, target: string, count: number): Promise<Raw> =>
      (await c.ok('connectRaw', { node, relay: relay.multiaddr, target, count, hold: true })) as unknown as Raw
    const a = await hold(s1, targets[0]!, 3)
    assert.deepEqual(a.statuses, { OK: 2, RESOURCE_LIMIT_EXCEEDED: 1 }, 'per source peer')
    assert.deepEqual((await hold(s1 + 1, targets[0]!, 2)).statuses, { OK: 1, RESOURCE_LIMIT_EXCEEDED: 1 }, 'per source IP')
    assert.deepEqual((await hold(s3, targets[0]!, 2)).statuses, { OK: 1, RESOURCE_LIMIT_EXCEEDED: 1 }, 'per destination')
    assert.deepEqual((await hold(s3, targets[1]!, 1)).statuses, { OK: 1 }, 'another destination')
    let stats = await relay.client.getRelayStats({})
    assert.equal(stats.activeCircuits, 5)
    assert.equal(refusals(stats, RefusalReason.SOURCE_CIRCUIT_LIMIT), 2)
    assert.equal(refusals(stats, RefusalReason.DESTINATION_CIRCUIT_LIMIT), 1)
    await c.ok('release', { handles: a.handles })
    // The relay logs "circuit closed" after it freed the circuit's places and took it off activeCircuits.
    await relay.proc.waitForLines(new RegExp(`"msg":"circuit closed".*"src":"${s1Peers[0]}"`), 2)
    stats = await relay.client.getRelayStats({})
    assert.equal(stats.activeCircuits, 3, 'the released circuits closed')
    assert.deepEqual((await hold(s1, targets[0]!, 2)).statuses, { OK: 2 }, 'places freed by closed circuits')
    stats = await relay.client.getRelayStats({})
    assert.equal(stats.activeCircuits, 5)
    assert.equal(refusals(stats, RefusalReason.SOURCE_CIRCUIT_LIMIT), 2)
  })

  it('relay - a holder that never answers STOP: CONNECT fails with CONNECTION_FAILED within --stop-timeout-ms, counted as STOP_TIMEOUT; its reservation is dropped after --max-stop-failures', async () => {
    const relay = await h.relay()
    const info = await relay.client.getRelayInfo({})
    const bound = durationMs(info.limits!.stopTimeout!)
    assert.equal(bound, RELAY_DEFAULTS.stopTimeoutMs)
    assert.equal(info.limits?.maxStopFailures, RELAY_DEFAULTS.maxStopFailures)
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    await c.ok('stopMode', { node: 0, mode: 'silent' })
    const times: number[] = []
    for (let i = 1; i < RELAY_DEFAULTS.maxStopFailures; i++) {
      const r = (await c.ok('connectRaw', { node: 1, relay: relay.multiaddr, target: peerIds[0] })) as unknown as Raw
      assert.equal(r.results[0]!.status, 'CONNECTION_FAILED')
      times.push(r.results[0]!.ms)
      await c.waitEvent((e) => e.event === 'stop' && e.n === i)
    }
    let stats = await relay.client.getRelayStats({})
    assert.equal(stats.reservations, 1, 'still reserved after fewer failures than the threshold')
    // The last one through js-libp2p's own client: the error it reports.
    const t0 = performance.now()
    const dial = await c.call('open', { node: 1, relay: relay.multiaddr, target: peerIds[0] })
    times.push(Math.round(performance.now() - t0))
    assert.match(String(dial.error), /failed to connect via relay with status CONNECTION_FAILED/)
    for (const ms of times) assert.ok(ms >= bound - 50 && ms < bound + 1500, `CONNECT failed after ${ms} ms, bound ${bound} ms`)
    console.log(`# unanswered STOP: CONNECTION_FAILED after ${times.join(', ')} ms (bound ${bound} ms)`)

    await c.waitEvent((e) => e.event === 'connection-closed' && e.node === 0 && e.peer === relay.peerId)
    stats = await relay.client.getRelayStats({})
    assert.equal(refusals(stats, RefusalReason.STOP_TIMEOUT), RELAY_DEFAULTS.maxStopFailures)
    assert.equal(refusals(stats, RefusalReason.CONNECTION_FAILED), 0)
    assert.equal(stats.reservationsDropped, 1n)
    assert.equal(stats.totalCircuits, 0n)
    await relay.proc.waitFor(/"msg":"reservation dropped: the holder leaves STOP unanswered".*"failures":3/)
    const after = (await c.ok('connectRaw', { node: 1, relay: relay.multiaddr, target: peerIds[0] })) as unknown as Raw
    assert.equal(after.results[0]!.status, 'NO_RESERVATION', 'answered at once once the reservation is gone')
  })
})

describe('relay - reconnecting holder', { timeout: 180_000 }, () => {
  const h = new Harness()
  after(async () => {
    await h.close()
  })

  it('relay - a gateway restarted on a new port with the same identity, its old connection silent, is reachable through the relay within 5 s', async () => {
    const relay = await h.relay()
    const target = await h.gateway(['--relay', relay.multiaddr], { name: 'target' })
    const caller = await h.gateway(['--relay', relay.multiaddr], { name: 'caller' })
    const ping = (timeoutMs: number) =>
      caller.client.call(
        {
          peerId: target.peerId,
          method: 'ping',
          payload: { case: 'json', value: fromJson(ValueSchema, 1) },
          options: { allowedTiers: [Tier.RELAY], maxRetries: 0 },
        },
        { timeoutMs },
      )
    await Promise.all([target, caller].map((g) => g.proc.waitFor(/"msg":"reserved on relay"/)))
    assert.equal((await ping(20_000)).tier, Tier.RELAY)
    // Freeze the target: its TCP connection to the relay stays open but silent, as when a NAT drops a mapping.
    target.proc.child.kill('SIGSTOP')
    try {
      const spawnedAt = Date.now()
      const again = await h.gateway(['--relay', relay.multiaddr], { identity: target.identity, name: 'target-again' })
      assert.equal(again.peerId, target.peerId)
      // The clock starts when the new instance's connection to the relay is up (it logs the relay healthy, then
      // reserves): from then on only the relay stands between it and its callers.
      const [, healthyAt] = await again.proc.waitFor(/"time":"([^"]+)".*"msg":"relay healthy"/)
      const connectedAt = Date.parse(healthyAt!)
      // Reachable is a call that succeeds; no log line says so. Each try is bounded by its own 3 s deadline.
      const errors: string[] = []
      await eventually(
        'the restarted gateway is reachable through the relay',
        async () => {
          try {
            assert.equal((await ping(3_000)).tier, Tier.RELAY)
            return true
          } catch (err: unknown) {
            errors.push(String(err))
            throw err
          }
        },
        { timeoutMs: 20_000, intervalMs: 0, context: () => `${errors.slice(-3).join('\n')}\n${h.dump()}` },
      )
      const reachableMs = Date.now() - connectedAt
      console.log(
        `# restarted gateway reachable through the relay ${reachableMs} ms after it connected to the relay ` +
          `(${Date.now() - spawnedAt} ms after the process was spawned); ${errors.length} failed calls before: ${errors.slice(0, 3).join(' | ')}`,
      )
      assert.ok(reachableMs < 5_000, `reachable after ${reachableMs} ms`)
      const stats = await relay.client.getRelayStats({})
      assert.equal(stats.reservationsReplaced, 1n)
      assert.equal(refusals(stats, RefusalReason.PER_PEER_LIMIT), 0)
      await relay.proc.waitFor(/"msg":"reservation replaced".*"circuitsEnded":1/)
      // the caller's pooled circuit to the silent instance was ended by the relay, not left to time out
      await relay.proc.waitFor(new RegExp(`"msg":"circuit closed","src":"${caller.peerId}","dst":"${target.peerId}".*"end":"replaced"`))
    } finally {
      target.proc.child.kill('SIGKILL')
    }
  })
})
