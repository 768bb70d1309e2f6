import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FakeClock } from '@stargate/shared/clock'
import { Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { ChannelPool, type PoolableChannel } from './pool.ts'

const log = createLogger('test', { level: 'silent' })

/** A channel whose use and retirement the test controls and observes. */
class FakeChannel implements PoolableChannel {
  open = true
  inflight = 0
  lastUsedAtMs: number
  retired = false

  constructor(clock: FakeClock) {
    this.lastUsedAtMs = clock.nowMs()
  }

  async retire(): Promise<void> {
    this.retired = true
    this.open = false
  }
}

function setup(maxPeers = 3, ttlMs = 60_000) {
  const clock = new FakeClock()
  const pool = new ChannelPool<FakeChannel>({ maxPeers, ttlMs, sweepMaxIntervalMs: 30_000, log, clock })
  pool.start()
  const put = (peer: string, tier = Tier.DIRECT): FakeChannel => {
    const channel = new FakeChannel(clock)
    pool.put(peer, tier, { channel, via: `/ip4/127.0.0.1/tcp/1/p2p/${peer}` })
    return channel
  }
  return { clock, pool, put }
}

describe('channel pool', () => {
  it('pool - beyond maxPeers the least recently used peer is evicted and its channels retired', () => {
    const { pool, put } = setup(2)
    const a = put('a')
    const b = put('b')
    assert.ok(pool.get('a', Tier.DIRECT) != null, 'using a makes b the least recently used')
    const c = put('c')
    assert.equal(b.retired, true)
    assert.equal(a.retired || c.retired, false)
    assert.equal(pool.has('b', Tier.DIRECT), false)
    assert.deepEqual(pool.stats().evictions, 1)
    assert.equal(pool.stats().size, 2)
  })

  it('pool - a peer with channels on several tiers counts once and is evicted whole', () => {
    const { pool, put } = setup(1)
    const direct = put('a', Tier.DIRECT)
    const relay = put('a', Tier.RELAY)
    assert.equal(pool.stats().size, 1)
    assert.equal(pool.channelCount(), 2)
    put('b')
    assert.equal(direct.retired && relay.retired, true)
  })

  it('pool - idle channels are retired after the TTL, busy ones are kept', async () => {
    const { clock, pool, put } = setup(10, 60_000)
    const idle = put('idle')
    const busy = put('busy')
    busy.inflight = 1
    await clock.advance(59_000)
    assert.equal(idle.retired, false, 'not yet idle for the TTL')
    await clock.advance(30_000)
    assert.equal(idle.retired, true)
    assert.equal(busy.retired, false, 'a channel with calls in flight is never idle')
    assert.equal(pool.stats().expirations, 1)
    assert.equal(pool.has('busy', Tier.DIRECT), true)
  })

  it('pool - use postpones expiry', async () => {
    const { clock, pool, put } = setup(10, 60_000)
    const ch = put('a')
    await clock.advance(45_000)
    assert.ok(pool.get('a', Tier.DIRECT) != null)
    await clock.advance(45_000)
    assert.equal(ch.retired, false, 'used 45 s ago: within the TTL')
    await clock.advance(30_000)
    assert.equal(ch.retired, true)
  })

  it('pool - a get that finds a channel is a hit, a put of a new one a miss; has() counts nothing', () => {
    const { pool, put } = setup()
    assert.equal(pool.get('a', Tier.DIRECT), undefined)
    assert.equal(pool.has('a', Tier.DIRECT), false)
    put('a')
    pool.get('a', Tier.DIRECT)
    pool.get('a', Tier.DIRECT)
    pool.has('a', Tier.DIRECT)
    assert.deepEqual({ hits: pool.stats().hits, misses: pool.stats().misses }, { hits: 2, misses: 1 })
  })

  it('pool - a channel that closed is not handed out and leaves the pool', () => {
    const { pool, put } = setup()
    const ch = put('a')
    ch.open = false
    assert.equal(pool.get('a', Tier.DIRECT), undefined)
    assert.equal(pool.stats().size, 0)
  })

  it('pool - replacing a channel on a tier retires the old one; drop retires it too', () => {
    const { pool, put } = setup()
    const first = put('a')
    const second = put('a')
    assert.equal(first.retired, true)
    pool.drop('a', Tier.DIRECT)
    assert.equal(second.retired, true)
    assert.equal(pool.stats().size, 0)
  })

  it('pool - stop retires every channel and sweeps no more', async () => {
    const { clock, pool, put } = setup()
    const a = put('a')
    await pool.stop()
    assert.equal(a.retired, true)
    assert.equal(clock.pending, 0, 'no sweep timer left behind')
  })
})
