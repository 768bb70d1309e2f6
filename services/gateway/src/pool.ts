import type { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import type { PeerChannel } from './peer/channel.ts'

/** A pooled channel and how it reaches the peer. */
export interface PooledChannel {
  channel: PeerChannel
  /** The address dialled (a relay circuit address for the relay tier). */
  via: string
  /** The relay's peer id when the channel goes through a relay. */
  relayPeerId?: string
}

interface Entry {
  channels: Map<Tier, PooledChannel>
  lastUsedMs: number
}

export interface PoolOptions {
  maxPeers: number
  ttlMs: number
  log: Logger
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
 * idle channels closed after ttlMs, with their connections.
 */
export class ChannelPool {
  private readonly o: PoolOptions
  private readonly entries = new Map<string, Entry>()
  private timer?: NodeJS.Timeout
  private counters = { hits: 0, misses: 0, evictions: 0, expirations: 0 }

  constructor(options: PoolOptions) {
    this.o = options
  }

  start(): void {
    const every = Math.max(50, Math.min(this.o.ttlMs / 4, 30_000))
    this.timer = setInterval(() => this.expire(), every)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    const all = [...this.entries.values()].flatMap((e) => [...e.channels.values()])
    this.entries.clear()
    await Promise.allSettled(all.map((p) => closeChannel(p)))
  }

  /** An open pooled channel to peerId on tier, counting a hit; undefined (a miss) otherwise. */
  get(peerId: string, tier: Tier): PooledChannel | undefined {
    const e = this.entries.get(peerId)
    const p = e?.channels.get(tier)
    if (e == null || p == null) return undefined
    if (!p.channel.open) {
      e.channels.delete(tier)
      if (e.channels.size === 0) this.entries.delete(peerId)
      return undefined
    }
    this.touch(peerId, e)
    return p
  }

  hit(): void {
    this.counters.hits++
  }

  miss(): void {
    this.counters.misses++
  }

  /** Adds a channel; evicts the least recently used peer beyond maxPeers. */
  put(peerId: string, tier: Tier, pooled: PooledChannel): void {
    let e = this.entries.get(peerId)
    if (e == null) {
      e = { channels: new Map(), lastUsedMs: Date.now() }
      this.entries.set(peerId, e)
    }
    const prev = e.channels.get(tier)
    e.channels.set(tier, pooled)
    if (prev != null && prev.channel !== pooled.channel) void closeChannel(prev)
    this.touch(peerId, e)
    while (this.entries.size > this.o.maxPeers) {
      const [oldestId, oldest] = this.entries.entries().next().value as [string, Entry]
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

  private touch(peerId: string, e: Entry): void {
    e.lastUsedMs = Date.now()
    // Map iteration order is insertion order: re-inserting keeps the LRU peer first.
    this.entries.delete(peerId)
    this.entries.set(peerId, e)
  }

  private expire(nowMs = Date.now()): void {
    for (const [peerId, e] of this.entries) {
      for (const [tier, p] of e.channels) {
        const idleFor = nowMs - Math.max(e.lastUsedMs, p.channel.lastUsedAt)
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

async function closeChannel(p: PooledChannel): Promise<void> {
  await p.channel.close()
  // Close the connection too unless something else still uses it.
  const conn = p.channel.connection
  const others = conn.streams.filter((s) => s !== p.channel.stream && s.protocol !== '/ipfs/id/1.0.0')
  if (others.length === 0 && conn.status === 'open') {
    await conn.close().catch(() => {})
  }
}
