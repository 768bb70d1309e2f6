import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { timestampMs, ValueSchema } from '@bufbuild/protobuf/wkt'
import type { Client } from '@connectrpc/connect'
import type { GatewayService } from '@stargate/shared/gen/gateway'
import { Tier } from '@stargate/shared/gen/gateway'
import { eventually } from '../lib/eventually.ts'
import { Harness, type Proc } from '../lib/harness.ts'

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })

/** Polls until pred holds (no event announces it: another process's state); resolves to the elapsed ms. */
async function until(pred: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = Date.now()
  await eventually(what, pred, { timeoutMs, intervalMs: 100 })
  return Date.now() - t0
}

async function health(client: Client<typeof GatewayService>, relayPeerId: string) {
  const res = await client.getRelayHealth({ relay: relayPeerId })
  return res.relays[0]!
}

describe('relay health and multi-relay failover', () => {
  it('failover - a killed relay is unhealthy within 10 s at the default interval, calls move to the other relay, and a restarted relay carries reservations again', async () => {
    const h = new Harness()
    // The load loop below runs until the test ends, however it ends.
    let stop = false
    try {
      const r1 = await h.relay([], { name: 'relay-1' })
      const r2 = await h.relay([], { name: 'relay-2' })
      const relays = ['--relay', r1.multiaddr, '--relay', r2.multiaddr]
      const target = await h.gateway(relays, { name: 'target', env: { DEBUG: process.env.TARGET_DEBUG ?? '' } })
      const caller = await h.gateway(relays, { name: 'caller', env: { DEBUG: process.env.CALLER_DEBUG ?? '' } })
      await h.serveClient(target.api, ['echo'])
      await until(
        async () => (await health(target.client, r1.peerId)).reserved && (await health(target.client, r2.peerId)).reserved,
        30_000,
        'reservations on both relays',
      )
      const status = await target.client.getStatus({})
      assert.equal(status.relays.filter((r) => r.reserved).length, 2)
      assert.equal(status.announcedAddrs.filter((a) => a.includes('/p2p-circuit')).length, 2)

      const first = await caller.client.call({ peerId: target.peerId, method: 'echo', payload: json(0) })
      assert.equal(first.tier, Tier.RELAY)
      const used = first.attempts.find((a) => a.tier === Tier.RELAY)!.via.includes(r1.peerId) ? r1 : r2
      const other = used === r1 ? r2 : r1

      // calls keep flowing while the relay in use is killed
      const results: Array<{ ok: boolean; via: string }> = []
      const load = (async () => {
        for (let i = 0; !stop; i++) {
          try {
            const r = await caller.client.call({ peerId: target.peerId, method: 'echo', payload: json(i) }, { timeoutMs: 20_000 })
            results.push({ ok: true, via: r.attempts.at(-1)?.via ?? '' })
          } catch {
            results.push({ ok: false, via: '' })
          }
        }
      })()
      await until(async () => results.length >= 3, 20_000, 'calls before the kill')
      await used.proc.stop('SIGKILL')
      const detectedCaller = await until(
        async () => !(await health(caller.client, used.peerId)).isHealthy,
        15_000,
        'caller marks relay unhealthy',
      )
      const detectedTarget = await until(
        async () => !(await health(target.client, used.peerId)).isHealthy,
        15_000,
        'target marks relay unhealthy',
      )
      assert.ok(detectedTarget < 10_000, `target detected the dead relay after ${detectedTarget} ms`)
      assert.ok(detectedCaller < 10_000, `caller detected the dead relay after ${detectedCaller} ms`)
      const n = results.length
      await until(async () => results.length >= n + 3, 30_000, 'calls after the kill')
      stop = true
      await load
      const after = results.slice(n)
      assert.ok(
        after.every((r) => r.ok),
        'every call after detection succeeded',
      )
      assert.ok(
        after.every((r) => r.via.includes(other.peerId)),
        'through the other relay',
      )
      assert.ok(
        results.every((r) => r.ok),
        `no call failed (${results.filter((r) => !r.ok).length} failed of ${results.length})`,
      )

      // the relay comes back on the same identity and port: healthy again, reservation restored
      // (the killed relay is whichever one the caller picked, by RTT: reuse its own port, not relay-1's)
      const usedPort = used.multiaddr.split('/tcp/')[1]!.split('/')[0]!
      const back = await h.relay(['--port', usedPort], { identity: used.identity, name: 'relay-back' })
      assert.equal(back.peerId, used.peerId)
      await until(
        async () => (await health(target.client, used.peerId)).isHealthy && (await health(target.client, used.peerId)).reserved,
        40_000,
        'target re-reserves on the restarted relay',
      )
      await until(async () => (await back.client.getRelayStats({})).reservations >= 1, 10_000, 'relay reports the reservation')
      await until(async () => (await health(caller.client, used.peerId)).isHealthy, 40_000, 'caller sees the relay healthy again')
    } catch (err: unknown) {
      if (process.env.CALLER_DEBUG != null) {
        const { writeFileSync } = await import('node:fs')
        writeFileSync('/tmp/rh-full.log', h.procs.map((p) => [`=== ${p.name}`, ...p.stdout, ...p.stderr].join('\n')).join('\n'))
      }
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${h.dump()}`)
    } finally {
      stop = true
      await h.close()
    }
  })

  it('presence - a relay turning unhealthy is dropped from the presence record at once, and announced again once healthy', async () => {
    const h = new Harness()
    const circuitsKnown = async (caller: Client<typeof GatewayService>, peerId: string): Promise<string[]> =>
      (await caller.listPeers({})).peers.find((p) => p.peerId === peerId)?.circuitAddrs ?? []
    let frozen: Proc | undefined
    try {
      const nats = await h.nats()
      const r1 = await h.relay([], { name: 'relay-1' })
      const r2 = await h.relay([], { name: 'relay-2' })
      const common = ['--relay', r1.multiaddr, '--relay', r2.multiaddr, '--nats', nats.url]
      // Fast checks on the target so r1 turns unhealthy about a second after it falls silent.
      const fast = ['--relay-health-interval-ms', '300', '--relay-health-timeout-ms', '300']
      const target = await h.gateway([...common, ...fast], { name: 'target' })
      const caller = await h.gateway(common, { name: 'caller' })
      await until(
        async () =>
          (await circuitsKnown(caller.client, target.peerId)).filter((a) => a.includes(r1.peerId) || a.includes(r2.peerId)).length === 2,
        30_000,
        "the caller knows the target's circuits through both relays",
      )
      // r1 falls silent (SIGSTOP: its connections stay open, nothing answers).
      frozen = r1.proc
      r1.proc.child.kill('SIGSTOP')
      const t0 = Date.now()
      await until(async () => !(await health(target.client, r1.peerId)).isHealthy, 10_000, 'the target finds r1 unhealthy')
      const unhealthyAfterMs = Date.now() - t0
      // At once: within 2 s of the change, not at the next periodic announcement (every 30 s).
      await until(
        async () => !(await circuitsKnown(caller.client, target.peerId)).some((a) => a.includes(r1.peerId)),
        2_000,
        'the caller no longer knows the target through r1',
      )
      const droppedAfterMs = Date.now() - t0
      // Announced because r1 turned unhealthy, not because the reservation went away: the target still holds it.
      assert.equal((await health(target.client, r1.peerId)).reserved, true, 'the reservation on r1 is still held')
      assert.ok(
        (await target.client.getStatus({})).announcedAddrs.some((a) => a.includes(r1.peerId)),
        "r1's circuit address is still among the target's addresses",
      )
      process.stdout.write(
        `r1 silent: unhealthy for the target after ${unhealthyAfterMs} ms, dropped by the caller after ${droppedAfterMs} ms\n`,
      )
      r1.proc.child.kill('SIGCONT')
      frozen = undefined
      await until(
        async () => (await circuitsKnown(caller.client, target.peerId)).some((a) => a.includes(r1.peerId)),
        15_000,
        'the caller knows the target through r1 again',
      )
    } finally {
      frozen?.child.kill('SIGCONT')
      await h.close()
    }
  })

  it('health - checks run at the configured interval with an RTT, and a failed relayed call marks the relay suspect at once', async () => {
    const h = new Harness()
    try {
      const relay = await h.relay([], { name: 'relay' })
      const target = await h.gateway(['--relay', relay.multiaddr], { name: 'target' })
      const caller = await h.gateway(['--relay', relay.multiaddr, '--relay-health-interval-ms', '300'], { name: 'caller' })
      await until(async () => (await health(target.client, relay.peerId)).reserved, 30_000, 'reservation')
      const h1 = await health(caller.client, relay.peerId)
      await until(
        async () => timestampMs((await health(caller.client, relay.peerId)).lastCheck!) > timestampMs(h1.lastCheck!),
        3_000,
        'a new check',
      )
      const h2 = await health(caller.client, relay.peerId)
      assert.ok(h2.isHealthy)
      assert.ok(h2.rttMs > 0)
      assert.equal(h2.consecutiveFailures, 0)
      assert.ok(h2.lastSuccess != null)

      // passive detection: the caller checks only every 60 s, yet the first failed relayed call marks the relay
      const slow = await h.gateway(['--relay', relay.multiaddr, '--relay-health-interval-ms', '60000', '--max-retries', '0'], {
        name: 'slow',
      })
      await h.serveClient(target.api, ['echo'])
      assert.equal((await slow.client.call({ peerId: target.peerId, method: 'echo', payload: json(1) })).tier, Tier.RELAY)
      assert.ok((await health(slow.client, relay.peerId)).isHealthy)
      await relay.proc.stop('SIGKILL')
      await assert.rejects(slow.client.call({ peerId: target.peerId, method: 'echo', payload: json(2) }, { timeoutMs: 10_000 }))
      const after = await health(slow.client, relay.peerId)
      assert.equal(after.isHealthy, false)
      assert.match(after.lastError, /relayed call failed|refused|closed|reset/i)
    } finally {
      await h.close()
    }
  })
})
