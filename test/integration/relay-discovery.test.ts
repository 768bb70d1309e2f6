// Gateways given a relay's address without its peer id (--relay /dns4/HOST/tcp/PORT) learn the id in the
// handshake: reservation, circuit addresses, health checks, GetStatus and GetRelayHealth use the learned id,
// relayed calls cross, and a relay that comes back with another identity on the same address is followed.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { AttemptOutcome, Tier } from '@stargate/shared/gen/gateway'
import { freePort, Harness } from '../lib/harness.ts'

/** A JSON log line with this message whose fields include every given key/value. */
const logLine = (msg: string, fields: Record<string, string>): RegExp =>
  new RegExp(
    `"msg":"${msg}".*${Object.entries(fields)
      .map(([k, v]) => `"${k}":"${v.replaceAll('/', '\\/')}"`)
      .join('.*')}`,
  )

describe('relay addresses without a peer id', () => {
  it('relay - gateways learn the relay peer id on connecting, reserve and call through it, and follow a new relay identity', async () => {
    const h = new Harness()
    try {
      const port = await freePort()
      const relayArgs = ['--port', String(port)]
      const first = await h.relay(relayArgs, { name: 'relay-1' })
      const addr = `/dns4/localhost/tcp/${port}`
      // B has no libp2p listener: only the relay reaches it. A calls B.
      const b = await h.gateway(['--relay', addr], { name: 'gateway-b' })
      const a = await h.gateway(['--relay', addr], { name: 'gateway-a' })
      await b.proc.waitFor(logLine('relay peer id learned', { relay: addr, peerId: first.peerId }))
      await b.proc.waitFor(logLine('reserved on relay', { relay: addr, peerId: first.peerId }))
      await a.proc.waitFor(logLine('relay peer id learned', { relay: addr, peerId: first.peerId }))

      const [health] = (await b.client.getRelayHealth({ relay: first.peerId })).relays
      assert.equal(health?.relayAddr, addr, 'GetRelayHealth finds the relay by its learned peer id and shows the configured address')
      assert.equal(health?.relayPeerId, first.peerId)
      assert.equal(health?.isHealthy, true)
      assert.equal(health?.reserved, true)
      const [status] = (await b.client.getStatus({})).relays
      assert.equal(status?.peerId, first.peerId)
      assert.equal(status?.connected, true)
      assert.ok(
        status?.circuitAddrs.some((c) => c.includes(`/p2p/${first.peerId}/p2p-circuit`)),
        `circuit addresses name the learned relay: ${status?.circuitAddrs}`,
      )
      assert.equal((await first.client.getRelayStats({})).reservations, 2, 'both gateways reserve on the relay')

      const viaFirst = await a.client.call({ peerId: b.peerId, method: 'ping' }, { timeoutMs: 20_000 })
      assert.equal(viaFirst.tier, Tier.RELAY)
      assert.ok(viaFirst.attempts.find((x) => x.tier === Tier.RELAY)?.via.includes(first.peerId))

      // The relay is replaced by one with a new identity on the same address (a fresh volume, a new pod).
      await first.proc.stop('SIGKILL')
      const second = await h.relay(relayArgs, { name: 'relay-2' })
      assert.notEqual(second.peerId, first.peerId)
      for (const gw of [a, b]) {
        await gw.proc.waitFor(logLine('relay identity changed', { relay: addr, from: first.peerId, to: second.peerId }), 60_000)
      }
      await b.proc.waitFor(logLine('reserved on relay', { relay: addr, peerId: second.peerId }), 60_000)
      const [followed] = (await b.client.getRelayHealth({})).relays
      assert.equal(followed?.relayPeerId, second.peerId)
      assert.equal(followed?.isHealthy, true)
      assert.equal(followed?.reserved, true)
      const [followedStatus] = (await b.client.getStatus({})).relays
      assert.ok(followedStatus?.circuitAddrs.every((c) => c.includes(`/p2p/${second.peerId}/p2p-circuit`)))
      await a.proc.waitFor(logLine('relay healthy', { relay: addr }))
      const viaSecond = await a.client.call({ peerId: b.peerId, method: 'ping' }, { timeoutMs: 30_000 })
      assert.equal(viaSecond.tier, Tier.RELAY)
      assert.ok(
        viaSecond.attempts.find((x) => x.tier === Tier.RELAY && x.outcome === AttemptOutcome.SUCCESS)?.via.includes(second.peerId),
        viaSecond.attempts.map((x) => `${Tier[x.tier]} ${AttemptOutcome[x.outcome]} ${x.via} ${x.reason}`).join('; '),
      )
    } catch (err: unknown) {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${h.dump()}`)
    } finally {
      await h.close()
    }
  })

  it('relay - an address pinned to a peer id is not followed to another identity', async () => {
    const h = new Harness()
    try {
      const port = await freePort()
      const old = await h.relay(['--port', String(port)], { name: 'relay-old' })
      await old.proc.stop('SIGKILL')
      const current = await h.relay(['--port', String(port)], { name: 'relay-new' })
      const pinned = `/dns4/localhost/tcp/${port}/p2p/${old.peerId}`
      const gw = await h.gateway(['--relay', pinned], { name: 'gateway' })
      const [health] = (await gw.client.getRelayHealth({})).relays
      assert.equal(health?.relayPeerId, old.peerId)
      assert.equal(health?.isHealthy, false)
      assert.equal(health?.reserved, false)
      assert.equal((await current.client.getRelayStats({})).reservations, 0)
      assert.doesNotMatch(gw.proc.stderr.join('\n'), /relay identity changed|relay peer id learned/)
    } finally {
      await h.close()
    }
  })

  it('relay - a relay address that cannot work is refused at start with a message naming the flag', async () => {
    const h = new Harness()
    try {
      for (const [addr, why] of [
        ['/dns4/relay.example.com/udp/4001', /must be a TCP address such as \/dns4\/relay\.example\.com\/tcp\/4001/],
        ['/ip4/127.0.0.1/tcp/4001/p2p-circuit', /not a circuit address/],
        ['/ip4/127.0.0.1/tcp/4001/p2p/notapeerid', /not a valid multiaddr|invalid relay peer id/],
        ['relay.example.com:4001', /is not a valid multiaddr/],
      ] as const) {
        const proc = await h.spawnCli('gateway', ['gateway', '--listen', '127.0.0.1:0', '--relay', addr])
        assert.equal(await proc.exited, 2, addr)
        assert.match(proc.stderr.join('\n'), new RegExp(`--relay "${addr.replaceAll('/', '\\/')}"`))
        assert.match(proc.stderr.join('\n'), why)
      }
    } finally {
      await h.close()
    }
  })
})
