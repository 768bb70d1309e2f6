import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import { FakeClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import { type PeerResponse, PeerResponseSchema } from '@stargate/shared/gen/envelope'
import { PeerSource, Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { FailureHistory } from '../failure-history.ts'
import type { PeerChannel } from '../peer/channel.ts'
import { PeerBook } from '../peers.ts'
import { ChannelPool, type PooledChannel } from '../pool.ts'
import type { Circuit } from './circuits.ts'
import { type CircuitDialer, type RelaySelector, RelayTier } from './relay.ts'
import type { TierLink } from './tier.ts'

const log = createLogger('test', { level: 'silent' })
const R1 = '12D3KooWR1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
const R2 = '12D3KooWR2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'
const PEER = '12D3KooWTargetddddddddddddddddddddddddddddddddddddd'
const OTHER = '12D3KooWOthereeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee'
const relayAddr = (id: string) => `/ip4/198.18.0.${id === R1 ? 1 : 2}/tcp/4001/p2p/${id}`
const circuitTo = (id: string, peer = PEER) => `${relayAddr(id)}/p2p-circuit/p2p/${peer}`
/** js-libp2p's wording when the relay answers CONNECT with a refusal. */
const refusal = (status: string) => `failed to connect via relay with status ${status}`

/** A call channel of the fake dialer: answers calls until `silent` is set (then the liveness probe fails them). */
class FakeChannel {
  open = true
  silent = false
  inflight = 0
  lastUsedAtMs = 0
  retired = false
  async call(): Promise<PeerResponse> {
    if (this.silent) throw new StargateError(Code.Unavailable, 'connection to the peer stopped answering')
    return create(PeerResponseSchema, { result: { case: 'data', value: new Uint8Array([1]) } })
  }
  async retire(): Promise<void> {
    this.retired = true
    this.open = false
  }
}

/** How the fake dialer answers a circuit through a relay: after `ms` of fake time, with `error` or a channel. */
interface Answer {
  ms: number
  error?: string
}

function setup() {
  const clock = new FakeClock()
  const pool = new ChannelPool({ maxPeers: 10, ttlMs: 300_000, sweepMaxIntervalMs: 30_000, log, clock })
  const peers = new PeerBook({ presenceTtlMs: 120_000, connectionTtlMs: 600_000, maxLearnedPeers: 100, now: () => clock.nowMs() })
  const reported: string[] = []
  const relays: RelaySelector = {
    usable: () => [
      { addr: relayAddr(R1), peerId: R1 },
      { addr: relayAddr(R2), peerId: R2 },
    ],
    unhealthy: () => false,
    reportFailure: (id) => reported.push(id),
  }
  const answers = new Map<string, Answer>([
    [R1, { ms: 20 }],
    [R2, { ms: 20 }],
  ])
  const reachable = new Set([R1, R2])
  const dials: Array<{ relay: string; target: string; atMs: number; cancelled: boolean }> = []
  const channels: FakeChannel[] = []
  const circuits: CircuitDialer = {
    open(c: Circuit, signal: AbortSignal): Promise<PooledChannel> {
      const dial = { relay: c.relayPeerId, target: c.addr.split('/p2p/').at(-1)!, atMs: clock.nowMs(), cancelled: false }
      dials.push(dial)
      const a = answers.get(c.relayPeerId)!
      return new Promise((resolve, reject) => {
        const t = clock.setTimeout(() => {
          if (a.error != null) return reject(new Error(a.error))
          const channel = new FakeChannel()
          channels.push(channel)
          resolve({ channel: channel as unknown as PeerChannel, via: c.addr, relayPeerId: c.relayPeerId })
        }, a.ms)
        signal.addEventListener('abort', () => {
          dial.cancelled = true
          t.clear()
          reject(signal.reason)
        })
      })
    },
    connectedTo: (id) => reachable.has(id),
  }
  const history = new FailureHistory({ cooldownMs: 60_000, maxEntries: 100, clock })
  const tier = new RelayTier({ pool, peers, log, circuits }, relays, { staggerMs: 300, probeTimeoutMs: 5_000, history, clock })
  /** Connects (and sends one call) while fake time runs; resolves with the link. */
  const connect = async (peer = PEER): Promise<TierLink> => {
    const p = tier.connect(peer, new AbortController().signal)
    let done = false
    p.then(
      () => (done = true),
      () => (done = true),
    )
    for (let i = 0; i < 1_000 && !done; i++) await clock.advance(10)
    return p
  }
  const announce = (...relayIds: string[]) =>
    peers.upsert(PEER, { source: PeerSource.PRESENCE, circuitAddrs: relayIds.map((id) => circuitTo(id)) })
  return { clock, pool, peers, reported, answers, reachable, dials, channels, history, tier, connect, announce }
}

const relayOfLink = (link: TierLink) => (link.via.includes(R1) ? 'R1' : 'R2')

describe('relay tier', () => {
  it('relay tier - a circuit whose relay never answers does not hold the attempt: the next one opens after the stagger and is pooled', async () => {
    const s = setup()
    s.answers.set(R1, { ms: 60_000 }) // R1 forwards CONNECT to a holder that never answers STOP
    const t0 = s.clock.nowMs()
    const link = await s.connect()
    assert.equal(relayOfLink(link), 'R2')
    assert.equal(link.reused, false)
    assert.deepEqual(
      s.dials.map((d) => [d.relay === R1 ? 'R1' : 'R2', d.atMs - t0, d.cancelled]),
      [
        ['R1', 0, true],
        ['R2', 300, false],
      ],
    )
    assert.equal(s.clock.nowMs() - t0 < 400, true, 'opened one stagger plus the circuit set-up after the attempt began')
    const again = await s.connect()
    assert.equal(again.reused, true, 'the next call reuses the pooled circuit')
    assert.equal(s.dials.length, 2)
  })

  it('relay tier - a refusal by the relay cools that circuit toward that peer only and never makes the relay suspect', async () => {
    const s = setup()
    s.answers.set(R1, { ms: 10, error: refusal('NO_RESERVATION') })
    s.reachable.delete(R1) // even when the relay closed its connection after refusing: it answered
    assert.equal(relayOfLink(await s.connect()), 'R2')
    assert.deepEqual(s.reported, [], "NO_RESERVATION is the target's affair, not the relay's")
    s.reachable.add(R1)
    s.pool.drop(PEER, Tier.RELAY)
    s.answers.set(R1, { ms: 10 })
    const dialsBefore = s.dials.length
    assert.equal(relayOfLink(await s.connect()), 'R2')
    assert.equal(s.dials[dialsBefore]?.relay, R2, 'toward PEER, R1 is now tried last')
    assert.equal(relayOfLink(await s.connect(OTHER)), 'R1', 'toward any other peer R1 keeps its place')
  })

  it('relay tier - a relay out of reach (no status, no connection to it) is reported for everybody', async () => {
    const s = setup()
    s.answers.set(R1, { ms: 10, error: 'connect ECONNREFUSED 198.18.0.1:4001' })
    s.reachable.delete(R1)
    assert.equal(relayOfLink(await s.connect()), 'R2')
    assert.deepEqual(s.reported, [R1])
  })

  it('relay tier - a cooled circuit the race did not need is probed in the background; a probe that opens ends the cool-down', async () => {
    const s = setup()
    s.answers.set(R1, { ms: 10, error: refusal('CONNECTION_FAILED') })
    await s.connect()
    s.pool.drop(PEER, Tier.RELAY)
    s.answers.set(R1, { ms: 10 }) // the holder answers STOP again
    const dialsBefore = s.dials.length
    assert.equal(relayOfLink(await s.connect()), 'R2')
    const probe = s.dials.slice(dialsBefore).find((d) => d.relay === R1)
    assert.ok(probe != null, 'R1 was probed')
    await s.clock.advance(100)
    assert.equal(s.history.failedAtMs(PEER, R1), undefined, 'the probe opened: R1 is no longer cooling down')
    assert.ok(s.channels.filter((c) => c.retired).length >= 1, "the probe's circuit is not kept")
    s.pool.drop(PEER, Tier.RELAY)
    assert.equal(relayOfLink(await s.connect()), 'R1', 'R1 is back in its place')
  })

  it('relay tier - a pooled circuit whose call fails is dropped and its relay cooled toward that peer', async () => {
    const s = setup()
    const first = await s.connect()
    assert.equal(relayOfLink(first), 'R1')
    s.channels[0]!.silent = true
    await assert.rejects(first.send({ requestId: 'r1', method: 'm' }, new AbortController().signal))
    assert.equal(s.pool.has(PEER, Tier.RELAY), false)
    assert.deepEqual(s.reported, [], 'R1 itself still answers us: not reported')
    const fresh = await s.connect()
    assert.equal(relayOfLink(fresh), 'R2', 'the fresh circuit avoids the relay that just failed toward this peer')
    assert.equal(fresh.reused, false)
  })

  it('relay tier - a newer presence record applies at once: a pooled circuit through a relay the peer stopped announcing is not reused', async () => {
    const s = setup()
    s.announce(R1, R2)
    assert.equal(relayOfLink(await s.connect()), 'R1')
    assert.equal((await s.connect()).reused, true)
    s.announce(R2) // the peer's reservation on R1 went bad: its new record lists R2 only
    const moved = await s.connect()
    assert.equal(relayOfLink(moved), 'R2')
    assert.equal(moved.reused, false)
    assert.equal(s.channels[0]!.retired, true, 'the replaced circuit through R1 is closed')
    // If no fresh circuit opens, the pooled one (though unannounced) is still better than nothing.
    s.answers.set(R1, { ms: 10, error: refusal('NO_RESERVATION') })
    s.answers.set(R2, { ms: 10, error: refusal('NO_RESERVATION') })
    s.announce(R1)
    const fallback = await s.connect()
    assert.equal(relayOfLink(fallback), 'R2')
    assert.equal(fallback.reused, true)
  })
})
