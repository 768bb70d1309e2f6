import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { type GetRelayStatsResponse, RefusalReason } from '@stargate/shared/gen/relay'
import { Harness, type RelayHandle } from '../lib/harness.ts'
import { RelayClient } from '../lib/relay-client-driver.ts'

/**
 * Relay integration tests: a real `stargate relay` process and real js-libp2p circuit relay clients
 * (test/lib/relay-client.ts, the same circuitRelayTransport the gateway uses) in a child process.
 */

const DEBUG = { env: { STARGATE_LOG_LEVEL: 'debug' } }

function refusals(stats: GetRelayStatsResponse, reason: RefusalReason): number {
  return Number(stats.refusals.find((r) => r.reason === reason)?.count ?? 0n)
}

describe('relay', { timeout: 120_000 }, () => {
  const h = new Harness()
  after(async () => {
    await h.close()
  })

  it('relay - at --max-reservations 1 refuses a further reservation with RESERVATION_REFUSED (RESERVATION_LIMIT)', async () => {
    const relay = await h.relay(['--max-reservations', '1'])
    const c = await RelayClient.start(h)
    await c.ok('nodes', { count: 2 })
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    const refused = await c.call('reserve', { node: 1, relay: relay.multiaddr })
    assert.match(String(refused.error), /reservation failed with status RESERVATION_REFUSED/)
    const stats = await relay.client.getRelayStats({})
    assert.equal(stats.reservations, 1)
    assert.equal(stats.totalReservations, 1n)
    assert.equal(refusals(stats, RefusalReason.RESERVATION_LIMIT), 1)
    assert.equal(refusals(stats, RefusalReason.PERMISSION_DENIED), 0)
    await relay.proc.waitFor(/"msg":"refused","reason":"RESERVATION_LIMIT","op":"reserve"/)
  })

  it('relay - with --allow-peer only the listed peer reserves; others get PERMISSION_DENIED for RESERVE and CONNECT', async () => {
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    const relay = await h.relay(['--allow-peer', peerIds[0]!])
    const info = await relay.client.getRelayInfo({})
    assert.equal(info.limits?.allowlistEnabled, true)
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    const reserve = await c.call('reserve', { node: 1, relay: relay.multiaddr })
    assert.match(String(reserve.error), /status PERMISSION_DENIED/)
    const dial = await c.call('traffic', { node: 1, relay: relay.multiaddr, target: peerIds[0], up: 10, down: 10 })
    assert.match(String(dial.error), /failed to connect via relay with status PERMISSION_DENIED/)
    const stats = await relay.client.getRelayStats({})
    assert.equal(stats.reservations, 1)
    assert.equal(refusals(stats, RefusalReason.PERMISSION_DENIED), 2)
    assert.equal(stats.totalCircuits, 0n)
  })

  it('relay - an allowlisted gateway (--relay) reserves, an unlisted gateway is refused with PERMISSION_DENIED', async () => {
    const dir = await h.tmp()
    const keygen = await h.spawnCli('keygen', ['keygen', '--out', `${dir}/allowed-gateway.key`])
    const [, allowed] = await keygen.waitFor(/^(12D3\w+)$/)
    assert.equal(await keygen.exited, 0)
    const relay = await h.relay(['--allow-peer', allowed!])
    const listed = await h.gateway(['--relay', relay.multiaddr], { identity: `${dir}/allowed-gateway.key`, name: 'gw-listed' })
    assert.equal(listed.peerId, allowed)
    await h.gateway(['--relay', relay.multiaddr], { name: 'gw-unlisted' })
    await relay.proc.waitFor(/"msg":"refused","reason":"PERMISSION_DENIED","op":"reserve"/)
    const stats = await relay.client.getRelayStats({})
    assert.equal(stats.reservations, 1)
    assert.ok(refusals(stats, RefusalReason.PERMISSION_DENIED) >= 1)
    await relay.proc.waitFor(new RegExp(`"msg":"refused","reason":"PERMISSION_DENIED","op":"reserve","peer":"(?!${allowed})`))
  })

  it('relay - the per-IP reservation limit and a CONNECT to an unreserved peer are refused and counted', async () => {
    const relay = await h.relay(['--max-reservations-per-ip', '1'])
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 3 })) as unknown as { peerIds: string[] }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    const second = await c.call('reserve', { node: 1, relay: relay.multiaddr })
    assert.match(String(second.error), /status RESERVATION_REFUSED/)
    const dial = await c.call('traffic', { node: 2, relay: relay.multiaddr, target: peerIds[1], up: 1, down: 1 })
    assert.match(String(dial.error), /failed to connect via relay with status NO_RESERVATION/)
    const stats = await relay.client.getRelayStats({})
    assert.equal(refusals(stats, RefusalReason.PER_IP_LIMIT), 1)
    assert.equal(refusals(stats, RefusalReason.NO_RESERVATION), 1)
    assert.equal(refusals(stats, RefusalReason.RESERVATION_LIMIT), 0)
    assert.equal(stats.reservations, 1)
  })

  it('relay - the per-IP reservation rate limit refuses a burst (RATE_LIMITED)', async () => {
    const relay = await h.relay(['--max-reservations-per-ip-per-second', '3', '--max-reservations-per-ip', '100'])
    const c = await RelayClient.start(h)
    await c.ok('nodes', { count: 10 })
    const r = await c.ok('reserveMany', { from: 0, to: 10, relay: relay.multiaddr, concurrency: 10 })
    const errors = r.errors as string[]
    const windows = Math.ceil((r.ms as number) / 1000) + 1
    assert.ok((r.reserved as number) >= 3 && (r.reserved as number) <= 3 * windows, `reserved ${r.reserved} in ${r.ms} ms`)
    assert.ok(errors.length >= 10 - 3 * windows)
    for (const e of errors) assert.match(e, /status RESERVATION_REFUSED/)
    const stats = await relay.client.getRelayStats({})
    assert.equal(refusals(stats, RefusalReason.RATE_LIMITED), errors.length)
    assert.equal(stats.reservations, r.reserved)
  })

  it('relay - the per-IP connection rate limit refuses a burst of connections (RATE_LIMITED)', async () => {
    const relay = await h.relay(['--max-connections-per-ip-per-second', '3'])
    const c = await RelayClient.start(h)
    await c.ok('nodes', { count: 10 })
    const started = Date.now()
    const r = await c.ok('connectMany', { from: 0, to: 10, relay: relay.multiaddr })
    const windows = Math.ceil((Date.now() - started) / 1000) + 1
    const failed = (r.errors as string[]).length
    assert.ok((r.connected as number) >= 3 && (r.connected as number) <= 3 * windows, `connected ${r.connected}`)
    assert.equal((r.connected as number) + failed, 10)
    const stats = await relay.client.getRelayStats({})
    assert.equal(refusals(stats, RefusalReason.RATE_LIMITED), failed)
    assert.equal(refusals(stats, RefusalReason.CONNECTION_LIMIT), 0)
  })

  it('relay - GetRelayStats counts reservations, circuits and bytes each way as sent', async () => {
    const relay = await h.relay([], DEBUG)
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 3 })) as unknown as { peerIds: string[] }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    let stats = await relay.client.getRelayStats({})
    assert.equal(stats.reservations, 1)
    assert.equal(stats.totalReservations, 1n)
    assert.equal(stats.totalCircuits, 0n)

    // One relayed connection node 1 → node 0: 300 000 bytes up, 100 000 bytes down on one stream.
    const UP = 300_000
    const DOWN = 100_000
    const t = await c.ok('traffic', { node: 1, relay: relay.multiaddr, target: peerIds[0], up: UP, down: DOWN })
    assert.equal(t.received, DOWN)
    stats = await relay.client.getRelayStats({})
    assert.equal(stats.activeCircuits, 1, 'the relayed connection stays open after the stream')
    assert.equal(stats.totalCircuits, 1n)
    // Counted: every byte the relay forwards after the hop/stop handshake, i.e. the peers' Noise-encrypted Yamux
    // stream: payload (+4 header bytes up) plus Noise handshake, multistream-select, identify and framing.
    const up = Number(stats.bytesFromInitiator)
    const down = Number(stats.bytesToInitiator)
    assert.ok(up >= UP + 4 && up <= UP + 4 + 32 * 1024, `bytes_from_initiator ${up}`)
    assert.ok(down >= DOWN && down <= DOWN + 32 * 1024, `bytes_to_initiator ${down}`)

    // A second relayed connection (node 2 → node 0) is active while open and counted in the total after.
    const o = await c.ok('open', { node: 2, relay: relay.multiaddr, target: peerIds[0] })
    await c.ok('send', { handle: o.handle, bytes: 50_000 })
    stats = await relay.client.getRelayStats({})
    assert.equal(stats.activeCircuits, 2)
    assert.equal(stats.totalCircuits, 2n)
    assert.ok(Number(stats.bytesFromInitiator) >= up + 50_000)
    assert.ok(Number(stats.bytesToInitiator) >= down + 50_000)
    await c.ok('close', { handle: o.handle })
    await relay.proc.waitFor(new RegExp(`"msg":"circuit closed","src":"${peerIds[2]}"`))
    stats = await relay.client.getRelayStats({})
    assert.equal(stats.activeCircuits, 1)
    assert.equal(stats.totalCircuits, 2n)
    assert.equal(stats.reservations, 1)
    assert.ok(stats.connections >= 3)
    assert.ok(stats.uptime != null && (stats.uptime.seconds > 0n || stats.uptime.nanos > 0))
  })

  it('relay - by default a relayed connection carries > 128 KiB and outlives a duration-limited one', async () => {
    // Two relays side by side: the default one and one with --max-circuit-duration-ms 1500.
    const plain = await h.relay([])
    const limited = await h.relay(['--max-circuit-duration-ms', '1500'], DEBUG)
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 4 })) as unknown as { peerIds: string[] }
    await c.ok('reserve', { node: 0, relay: plain.multiaddr })
    await c.ok('reserve', { node: 2, relay: limited.multiaddr })
    const a = await c.ok('open', { node: 1, relay: plain.multiaddr, target: peerIds[0] })
    const openedAt = Date.now()
    const b = await c.ok('open', { node: 3, relay: limited.multiaddr, target: peerIds[2] })
    const bOpenedAt = Date.now()
    assert.equal(a.limits, false, 'no Limit on the wire by default: an unlimited connection')
    assert.equal(b.limits, true)
    assert.ok((b.limitSeconds as number) >= 1 && (b.limitSeconds as number) <= 2, `limit is seconds on the wire: ${b.limitSeconds}`)

    await c.ok('send', { handle: a.handle, bytes: 200 * 1024 })
    await c.waitEvent((e) => e.event === 'stream-closed' && e.handle === b.handle, 10_000)
    const lived = Date.now() - bOpenedAt
    assert.ok(lived >= 1000 && lived < 10_000, `the limited circuit was cut after ${lived} ms`)
    await limited.proc.waitFor(/"msg":"circuit closed".*"end":"duration-limit"/)
    // The default circuit is still up after the other one was cut, and carries another 200 KiB.
    const more = await c.ok('send', { handle: a.handle, bytes: 200 * 1024 })
    assert.equal(more.echoed, 400 * 1024)
    assert.ok(Date.now() - openedAt >= 1500)
    assert.equal(c.events.filter((e) => e.event === 'stream-closed' && e.handle === a.handle).length, 0)
    const stats = await plain.client.getRelayStats({})
    assert.equal(stats.activeCircuits, 1)
    assert.ok(stats.bytesFromInitiator > 400n * 1024n)
  })

  it('relay - a circuit over --max-circuit-bytes is cut', async () => {
    const relay = await h.relay(['--max-circuit-bytes', '100000'], DEBUG)
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    const o = await c.ok('open', { node: 1, relay: relay.multiaddr, target: peerIds[0] })
    // js-libp2p's client counts its limit down from the 100000 bytes sent on the wire as the handshake flows.
    assert.ok(Number(o.limitBytes) > 90_000 && Number(o.limitBytes) <= 100_000, String(o.limitBytes))
    const r = await c.call('send', { handle: o.handle, bytes: 150_000 })
    assert.ok(r.error != null, 'the send fails')
    await relay.proc.waitFor(/"msg":"circuit closed".*"end":"data-limit"/)
    const stats = await relay.client.getRelayStats({})
    assert.ok(stats.bytesFromInitiator <= 100_000n)
  })

  it('relay - SIGTERM drains: an active circuit keeps working, the relay exits 0 once it closes', async () => {
    const relay = await h.relay(['--shutdown-grace-ms', '20000'], DEBUG)
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    const o = await c.ok('open', { node: 1, relay: relay.multiaddr, target: peerIds[0] })
    relay.proc.child.kill('SIGTERM')
    await relay.proc.waitFor(/"msg":"draining circuits","activeCircuits":1/)
    const echoed = await c.ok('send', { handle: o.handle, bytes: 64 * 1024 })
    assert.equal(echoed.echoed, 64 * 1024)
    const started = Date.now()
    await c.ok('close', { handle: o.handle })
    assert.equal(await relay.proc.exited, 0)
    assert.ok(Date.now() - started < 10_000, 'exits when the last circuit closes, not at the end of the grace period')
  })

  it('relay - SIGTERM with a circuit that stays open exits 0 after --shutdown-grace-ms', async () => {
    const relay = await h.relay(['--shutdown-grace-ms', '1500'])
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 2 })) as unknown as { peerIds: string[] }
    await c.ok('reserve', { node: 0, relay: relay.multiaddr })
    const o = await c.ok('open', { node: 1, relay: relay.multiaddr, target: peerIds[0] })
    const started = Date.now()
    relay.proc.child.kill('SIGTERM')
    assert.equal(await relay.proc.exited, 0)
    const took = Date.now() - started
    assert.ok(took >= 1400 && took < 10_000, `exited after ${took} ms`)
    await relay.proc.waitFor(/grace period over, closing circuits/)
    await c.waitEvent((e) => e.event === 'stream-closed' && e.handle === o.handle)
  })

  it('relay - --announce sets the advertised addresses, also in reservations', async () => {
    const announced = '/ip4/198.18.0.7/tcp/4001'
    const relay = await h.relay(['--announce', announced])
    const info = await relay.client.getRelayInfo({})
    assert.deepEqual(info.multiaddrs, [`${announced}/p2p/${relay.peerId}`])
    assert.equal(relay.multiaddr, `${announced}/p2p/${relay.peerId}`)
    const c = await RelayClient.start(h)
    const { peerIds } = (await c.ok('nodes', { count: 1 })) as unknown as { peerIds: string[] }
    // Dial the real listener (loopback); the reservation must advertise the announced address.
    const r = await c.ok('reserve', { node: 0, relay: relayListenAddr(relay) })
    assert.ok(
      (r.multiaddrs as string[]).includes(`${announced}/p2p/${relay.peerId}/p2p-circuit/p2p/${peerIds[0]}`),
      JSON.stringify(r.multiaddrs),
    )
  })
})

/** The relay's real loopback listen address, from its startup log. */
function relayListenAddr(relay: RelayHandle): string {
  const line = relay.proc.stderr.find((l) => l.includes('"msg":"relay started"'))
  const m = line == null ? null : /\/ip4\/127\.0\.0\.1\/tcp\/\d+/.exec(line)
  if (m == null) throw new Error(`relay did not log its listen address\n${relay.proc.dump()}`)
  return `${m[0]}/p2p/${relay.peerId}`
}
