/**
 * Caller-side relay failover (issue 18) across real NATs and silent packet loss (network namespaces, see
 * test/netns). Gateway A sits behind a NAT with reservations on relays r1 and r2; caller P reaches it only
 * through relays. When the relay P's circuit goes through is cut from A (or its host vanishes), every call
 * restricted to the relay tier must still be answered within 3 s, through the other relay, and run once.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { eventually } from '../lib/eventually.ts'
import type { Proc } from '../lib/harness.ts'
import { type NetnsGateway, type NetnsRelay, netnsUnsupported, Testbed, type TestbedHost } from '../netns/testbed.ts'

const SERVE_CLIENT = join(import.meta.dirname, '../../examples/node/serve-client.ts')
const CALL_LOOP = join(import.meta.dirname, '../lib/call-loop.ts')
/** The bound issue 18 prescribes for every call once a relay path is cut. */
const BOUND_MS = 3_000
/** Calls spread over 30 s, as the issue asks (at least 20). */
const CALLS = 21
const EVERY_MS = 1_500

interface CallLine {
  i: number
  atMs: number
  ms: number
  code: string
  tier?: string
  via?: string
  requestId?: string
  attempts?: string[]
  message?: string
}

/** The relay peer id in a circuit address /…/p2p/<relay>/p2p-circuit/p2p/<target>. */
function relayOf(via: string): string {
  const relayPart = via.split('/p2p-circuit')[0] ?? ''
  return relayPart.slice(relayPart.lastIndexOf('/p2p/') + '/p2p/'.length)
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

describe('relay failover (network namespaces)', { skip: netnsUnsupported() ?? false, timeout: 600_000 }, () => {
  let tb: Testbed
  let relays: NetnsRelay[]
  let aHost: TestbedHost
  let pHost: TestbedHost
  let a: NetnsGateway
  let p: NetnsGateway
  let aServe: Proc
  let natsUrl: string

  /** Starts a call loop next to a caller (P by default): `count` relay-only calls to A, one every `everyMs`. */
  function callLoop(count: number, everyMs: number, from: NetnsGateway = p): Promise<CallLine[]> {
    const argv = [process.execPath, CALL_LOOP, from.api, a.peerId, 'echo', String(count), String(everyMs), '20000', 'RELAY']
    const proc = tb.spawn(from.host, argv, { name: `${from.proc.name}:call-loop` })
    return proc
      .waitFor(/^DONE$/, count * everyMs + 60_000)
      .then(() => proc.stdout.filter((l) => l.startsWith('CALL ')).map((l) => JSON.parse(l.slice('CALL '.length)) as CallLine))
  }

  /** The circuits a caller (P by default) knows A by (from A's presence records). */
  async function circuitsKnown(by: NetnsGateway = p): Promise<string[]> {
    const peers = (await tb.grpcurl(by.host, by.api, 'stargate.v1.GatewayService/ListPeers')) as {
      peers?: Array<{ peerId: string; circuitAddrs?: string[] }>
    }
    return peers.peers?.find((x) => x.peerId === a.peerId)?.circuitAddrs ?? []
  }

  /**
   * A's relay turns unhealthy for A; from then on A's presence record, announced at once, no longer lists it
   * and P applies it (long before A's next periodic announcement, 30 s apart). Resolves to the delay in ms.
   */
  async function reannounced(relay: NetnsRelay): Promise<number> {
    await eventually(
      `A finds relay ${relay.host.name} unhealthy`,
      async () => {
        const health = (await tb.grpcurl(aHost, a.api, 'stargate.v1.GatewayService/GetRelayHealth', { relay: relay.peerId })) as {
          relays: Array<{ isHealthy: boolean }>
        }
        return health.relays[0]?.isHealthy === false
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
    const t0 = Date.now()
    await eventually(
      `P stops knowing A through ${relay.host.name}`,
      async () => !(await circuitsKnown()).some((c) => relayOf(c) === relay.peerId),
      { timeoutMs: 5_000, intervalMs: 100 },
    )
    return Date.now() - t0
  }

  /** A holds a reservation on every relay and a caller (P by default) has A's record with a circuit through each. */
  async function bothRelaysUsable(by: NetnsGateway = p): Promise<void> {
    await eventually(
      'A holds reservations on both relays',
      async () => {
        const health = (await tb.grpcurl(aHost, a.api, 'stargate.v1.GatewayService/GetRelayHealth')) as {
          relays: Array<{ reserved: boolean; isHealthy: boolean }>
        }
        return health.relays.length === 2 && health.relays.every((r) => r.reserved && r.isHealthy)
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    )
    await eventually(
      "P knows A's circuits through both relays",
      async () => {
        const circuits = await circuitsKnown(by)
        return relays.every((r) => circuits.some((c) => relayOf(c) === r.peerId))
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    )
  }

  /** The relay P's pooled circuit to A goes through now (after a few calls to warm the pool). */
  async function pooledRelay(): Promise<NetnsRelay> {
    const warm = await callLoop(3, 200)
    const last = warm.at(-1)!
    assert.equal(last.code, 'OK', JSON.stringify(warm))
    const relay = relays.find((r) => r.peerId === relayOf(last.via ?? ''))
    assert.ok(relay != null, `call went via ${last.via}`)
    return relay
  }

  /** Every call answered within the bound through `through`, none DEADLINE_EXCEEDED, each run once on A. */
  function assertFailedOver(label: string, lines: CallLine[], through: NetnsRelay): void {
    const ms = lines.map((l) => l.ms).sort((x, y) => x - y)
    process.stdout.write(
      `${label}: ${lines.length} calls over ${Math.round(lines.at(-1)!.atMs / 1000)} s, p50 ${percentile(ms, 50)} ms, ` +
        `p90 ${percentile(ms, 90)} ms, max ${ms.at(-1)} ms (bound ${BOUND_MS} ms); codes ${[...new Set(lines.map((l) => l.code))].join(',')}\n`,
    )
    for (const l of lines.filter((x) => x.ms >= 1_000)) process.stdout.write(`  slow call: ${JSON.stringify(l)}\n`)
    assert.equal(lines.length, CALLS)
    for (const l of lines) {
      assert.notEqual(l.code, 'DeadlineExceeded', `call ${l.i}: ${JSON.stringify(l)}`)
      assert.equal(l.code, 'OK', `call ${l.i}: ${JSON.stringify(l)}`)
      assert.equal(l.tier, 'RELAY')
      assert.ok(l.ms < BOUND_MS, `call ${l.i} took ${l.ms} ms: ${JSON.stringify(l)}`)
    }
    // After the first call has moved, calls go through the relay that still reaches A.
    assert.equal(relayOf(lines.at(-1)!.via!), through.peerId, JSON.stringify(lines.at(-1)))
    // Nothing ran twice: A's handler saw each request id once (a moved call's retry is deduplicated by A).
    for (const l of lines) {
      const runs = aServe.stdout.filter((s) => s.startsWith('HANDLED ') && s.split(' ')[2] === l.requestId).length
      assert.equal(runs, 1, `request ${l.requestId} ran ${runs} times on A`)
    }
  }

  before(async () => {
    tb = await Testbed.create()
    const r1Host = await tb.host('r1', 'public')
    const r2Host = await tb.host('r2', 'public')
    const natsHost = await tb.host('nats', 'public')
    aHost = await tb.host('a', 'nat')
    pHost = await tb.host('p', 'public')
    relays = await Promise.all([tb.relay(r1Host), tb.relay(r2Host)])
    const nats = await tb.nats(natsHost)
    natsUrl = nats.url
    const common = [...relays.flatMap((r) => ['--relay', r.multiaddr]), '--nats', nats.url]
    // No --p2p-listen: A is reachable only through the relays, P dials only circuits.
    a = await tb.gateway(aHost, common, { name: 'a:gateway' })
    p = await tb.gateway(pHost, common, { name: 'p:gateway' })
    aServe = tb.spawn(aHost, [process.execPath, SERVE_CLIENT, a.api, 'echo'], { name: 'a:serve' })
    await aServe.waitFor(/^REGISTERED /)
    await bothRelaysUsable()
  })

  after(async () => {
    await tb?.close()
  })

  it('failover - A silently cut from the relay P uses: every relay-only call is answered within 3 s through the other relay', async (t) => {
    const cut = await pooledRelay()
    const other = relays.find((r) => r !== cut)!
    // Q has never called A and uses only the relay about to be cut, so its first circuit to A goes through
    // it: the circuit race must open the one through the other relay, which A announces, instead.
    const q = await tb.gateway(pHost, ['--relay', cut.multiaddr, '--nats', natsUrl], { name: 'q:gateway' })
    await bothRelaysUsable(q)
    const restore = await tb.dropBetween(aHost, cut.host)
    t.after(restore)
    const calls = callLoop(CALLS, EVERY_MS)
    calls.catch(() => {}) // awaited below; not left unhandled if the presence check fails first
    const fresh = await callLoop(3, 1_000, q)
    const reannouncedMs = await reannounced(cut)
    process.stdout.write(
      `A cut from relay ${cut.host.name}: a new caller's first call took ${fresh[0]?.ms} ms via ${relayOf(fresh[0]?.via ?? '') === other.peerId ? 'the other relay' : fresh[0]?.via}; ` +
        `P applied A's new presence record ${reannouncedMs} ms after A found the relay unhealthy\n`,
    )
    for (const l of fresh) {
      assert.equal(l.code, 'OK', JSON.stringify(l))
      assert.ok(l.ms < BOUND_MS, `the new caller's call ${l.i} took ${l.ms} ms: ${JSON.stringify(l)}`)
      assert.equal(relayOf(l.via ?? ''), other.peerId, JSON.stringify(l))
    }
    assertFailedOver(`A cut from relay ${cut.host.name}`, await calls, other)
    await q.proc.stop()
  })

  it('failover - the host of the relay P uses drops everything: every relay-only call is answered within 3 s through the other relay', async (t) => {
    await bothRelaysUsable()
    const gone = await pooledRelay()
    const other = relays.find((r) => r !== gone)!
    const restore = await tb.isolate(gone.host)
    t.after(restore)
    const calls = callLoop(CALLS, EVERY_MS)
    calls.catch(() => {}) // awaited below; not left unhandled if the presence check fails first
    const reannouncedMs = await reannounced(gone)
    process.stdout.write(
      `relay host ${gone.host.name} gone: P applied A's new presence record ${reannouncedMs} ms after A found the relay unhealthy\n`,
    )
    assertFailedOver(`relay host ${gone.host.name} gone`, await calls, other)
  })
})
