import { type Clock, systemClock, type Timer } from '@stargate/shared/clock'
import type { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import type { PeerChannel } from './peer/channel.ts'

/** What the pool needs of a channel (PeerChannel implements it). */
export interface PoolableChannel {
  /** True while calls can be sent. */
  readonly open: boolean
  /** Calls in flight (a channel with calls is never idle). */
  readonly inflight: number
  /** When a call last used it. */
  readonly lastUsedAtMs: number
  /** Closes the channel, and its connection unless something else uses it. */
  retire(): Promise<void>
}

/** A pooled channel and how it reaches the peer. */
export interface PooledChannel<C extends PoolableChannel = PeerChannel> {
  channel: C
  /** The address dialled (a relay circuit address for the relay tier). */
  via: string
  /** The relay's peer id when the channel goes through a relay. */
  relayPeerId?: string
}

interface Entry<C extends PoolableChannel> {
  channels: Map<Tier, PooledChannel<C>>
  lastUsedAtMs: number
}

export interface PoolOptions {
  maxPeers: number
  ttlMs: number
  /** Idle channels are looked for every ttl/4, at most this far apart. */
  sweepMaxIntervalMs: number
  log: Logger
  clock?: Clock
}

/** Counters and limits of the pool, as GetPoolStats reports them. */
export interface PoolStats {
  size: number
  maxSize: number
  ttlMs: number
  hits: number
  misses: number
  evictions: number
  expirations: number
}

/**
 * Channels to peers reused across calls: at most maxPeers peers (least recently used evicted),
 * idle channels closed after ttlMs, with their connections. A `get` that finds a channel counts a hit;
 * a `put` (a new channel was opened) counts a miss.
 */
export class ChannelPool<C extends PoolableChannel = PeerChannel> {
  private readonly o: PoolOptions
  private readonly clock: Clock
  private readonly entries = new Map<string, Entry<C>>()
  private timer?: Timer
  private running = false
  private counters = { hits: 0, misses: 0, evictions: 0, expirations: 0 }

  constructor(options: PoolOptions) {
    this.o = options
    this.clock = options.clock ?? systemClock
  }

  start(): void {
    this.running = true
    this.schedule()
  }

  private schedule(): void {
    if (!this.running) return
    const everyMs = Math.min(this.o.ttlMs / 4, this.o.sweepMaxIntervalMs)
    this.timer = this.clock.setTimeout(() => {
      this.expire()
      this.schedule()
    }, everyMs)
  }

  async stop(): Promise<void> {
    this.running = false
    this.timer?.clear()
    const all = [...this.entries.values()].flatMap((e) => [...e.channels.values()])
    this.entries.clear()
    await Promise.allSettled(all.map((p) => closeChannel(p)))
  }

  /** An open pooled channel to peerId on tier (counted as a hit), or undefined. */
  get(peerId: string, tier: Tier): PooledChannel<C> | undefined {
    const p = this.open(peerId, tier)
    if (p == null) return undefined
    this.counters.hits++
    this.touch(peerId, this.entries.get(peerId)!)
    return p
  }

  /** Whether an open channel to peerId on tier is pooled (not counted, no LRU touch). */
  has(peerId: string, tier: Tier): boolean {
    return this.open(peerId, tier) != null
  }

  private open(peerId: string, tier: Tier): PooledChannel<C> | undefined {
    const e = this.entries.get(peerId)
    const p = e?.channels.get(tier)
    if (e == null || p == null) return undefined
    if (!p.channel.open) {
      e.channels.delete(tier)
      if (e.channels.size === 0) this.entries.delete(peerId)
      return undefined
    }
    return p
  }

  /** Adds a newly opened channel (counted as a miss); evicts the least recently used peer beyond maxPeers. */
  put(peerId: string, tier: Tier, pooled: PooledChannel<C>): void {
    this.counters.misses++
    let e = this.entries.get(peerId)
    if (e == null) {
      e = { channels: new Map(), lastUsedAtMs: this.clock.nowMs() }
      this.entries.set(peerId, e)
    }
    const prev = e.channels.get(tier)
    e.channels.set(tier, pooled)
    if (prev != null && prev.channel !== pooled.channel) void closeChannel(prev)
    this.touch(peerId, e)
    while (this.entries.size > this.o.maxPeers) {
      const [oldestId, oldest] = this.entries.entries().next().value as [string, Entry<C>]
      this.entries.delete(oldestId)
      this.counters.evictions++
      this.o.log.debug('pool evicted peer', { peerId: oldestId })
      for (const p of oldest.channels.values()) void closeChannel(p)
    }
  }

  /** Forgets a channel that failed. */
  drop(peerId: string, tier: Tier): void {
    const e = this.entries.get(peerId)
    const p = e?.channels.get(tier)
    if (e == null || p == null) return
    e.channels.delete(tier)
    if (e.channels.size === 0) this.entries.delete(peerId)
    void closeChannel(p)
  }

  stats(): PoolStats {
    return { size: this.entries.size, maxSize: this.o.maxPeers, ttlMs: this.o.ttlMs, ...this.counters }
  }

  /** Number of pooled channels (for the pool gauge). */
  channelCount(): number {
    let n = 0
    for (const e of this.entries.values()) n += e.channels.size
    return n
  }

  private touch(peerId: string, e: Entry<C>): void {
    e.lastUsedAtMs = this.clock.nowMs()
    // Map iteration order is insertion order: re-inserting keeps the LRU peer first.
    this.entries.delete(peerId)
    this.entries.set(peerId, e)
  }

  private expire(nowMs = this.clock.nowMs()): void {
    for (const [peerId, e] of this.entries) {
      for (const [tier, p] of e.channels) {
        const idleFor = nowMs - Math.max(e.lastUsedAtMs, p.channel.lastUsedAtMs)
        if (!p.channel.open || (idleFor >= this.o.ttlMs && p.channel.inflight === 0)) {
          e.channels.delete(tier)
          if (p.channel.open) {
            this.counters.expirations++
            this.o.log.debug('pool closed idle channel', { peerId, tier, idleForMs: idleFor })
          }
          void closeChannel(p)
        }
      }
      if (e.channels.size === 0) this.entries.delete(peerId)
    }
  }
}

function closeChannel(p: PooledChannel<PoolableChannel>): Promise<void> {
  return p.channel.retire()
}
