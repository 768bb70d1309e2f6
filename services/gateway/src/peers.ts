import { NatType, PeerSource } from '@stargate/shared/gen/gateway'

/** What the gateway knows about one peer. */
export interface KnownPeer {
  peerId: string
  directAddrs: string[]
  circuitAddrs: string[]
  capabilities: string[]
  natType: NatType
  source: PeerSource
  lastSeenAtMs: number
  /** Sequence of the newest presence record accepted from the peer (an older one never replaces it). */
  presenceSequence?: bigint
  /** A libp2p connection to the peer is open (a peer learned from a connection does not expire meanwhile). */
  connected?: boolean
}

export interface PeerBookOptions {
  /** A peer learned from presence is forgotten when no record of it was issued within this long. */
  presenceTtlMs: number
  /** A peer learned from a connection is forgotten this long after its last connection closed. */
  connectionTtlMs: number
  /** Learned (non-static) peers kept at most; the least recently heard of is dropped first. */
  maxLearnedPeers: number
  now?: () => number
}

/**
 * Known peers from --peer flags, presence records and connections. Static peers stay; learned ones expire
 * and are bounded in number, whatever other peers announce.
 */
export class PeerBook {
  /** Map order is the order of the latest update: the first learned peer is the least recently heard of. */
  private readonly peers = new Map<string, KnownPeer>()
  private readonly o: PeerBookOptions
  private readonly now: () => number
  private learned = 0

  constructor(options: PeerBookOptions) {
    this.o = options
    this.now = options.now ?? Date.now
  }

  /** Merges what a source says about a peer. A presence record replaces addresses wholesale. */
  upsert(peerId: string, update: Partial<Omit<KnownPeer, 'peerId'>> & { source: PeerSource }): KnownPeer {
    const prev = this.peers.get(peerId)
    const next: KnownPeer = {
      peerId,
      directAddrs: update.directAddrs ?? prev?.directAddrs ?? [],
      circuitAddrs: update.circuitAddrs ?? prev?.circuitAddrs ?? [],
      capabilities: update.capabilities ?? prev?.capabilities ?? [],
      natType: update.natType ?? prev?.natType ?? NatType.UNSPECIFIED,
      // A static peer stays static; otherwise the latest source wins.
      source: prev?.source === PeerSource.STATIC ? PeerSource.STATIC : update.source,
      lastSeenAtMs: update.lastSeenAtMs ?? this.now(),
    }
    const presenceSequence = update.presenceSequence ?? prev?.presenceSequence
    if (presenceSequence != null) next.presenceSequence = presenceSequence
    const connected = update.connected ?? prev?.connected
    if (connected != null) next.connected = connected
    if (prev?.source === PeerSource.STATIC && update.directAddrs != null) {
      next.directAddrs = [...new Set([...prev.directAddrs, ...update.directAddrs])]
    }
    if (prev != null) this.remove(prev)
    else if (next.source !== PeerSource.STATIC && this.learned >= this.o.maxLearnedPeers) {
      this.expire()
      if (this.learned >= this.o.maxLearnedPeers) this.dropLeastRecentLearned()
    }
    this.peers.set(peerId, next)
    if (next.source !== PeerSource.STATIC) this.learned++
    return next
  }

  /** A connection to a peer speaking the Stargate protocol: learned if unknown, kept while connected. */
  connected(peerId: string): void {
    const prev = this.get(peerId)
    this.upsert(peerId, { source: prev?.source ?? PeerSource.CONNECTION, connected: true, lastSeenAtMs: prev?.lastSeenAtMs })
  }

  /** The last connection to a peer closed: a peer learned from connections expires connectionTtlMs later. */
  disconnected(peerId: string): void {
    const prev = this.peers.get(peerId)
    if (prev?.connected !== true) return
    prev.connected = false
    if (prev.source === PeerSource.CONNECTION) prev.lastSeenAtMs = this.now()
  }

  get(peerId: string): KnownPeer | undefined {
    const p = this.peers.get(peerId)
    if (p == null || !this.expired(p, this.now())) return p
    this.remove(p)
    return undefined
  }

  all(): KnownPeer[] {
    this.expire()
    return [...this.peers.values()].sort((a, b) => a.peerId.localeCompare(b.peerId))
  }

  /** Peers announcing a capability (all peers for an empty capability). */
  withCapability(capability: string): KnownPeer[] {
    return this.all().filter((p) => capability === '' || p.capabilities.includes(capability))
  }

  /** Drops learned peers past their time to live. */
  expire(nowMs = this.now()): void {
    for (const p of this.peers.values()) if (this.expired(p, nowMs)) this.remove(p)
  }

  private expired(p: KnownPeer, nowMs: number): boolean {
    switch (p.source) {
      case PeerSource.STATIC:
        return false
      case PeerSource.CONNECTION:
        return p.connected !== true && nowMs - p.lastSeenAtMs > this.o.connectionTtlMs
      default:
        return nowMs - p.lastSeenAtMs > this.o.presenceTtlMs
    }
  }

  private dropLeastRecentLearned(): void {
    for (const p of this.peers.values()) {
      if (p.source !== PeerSource.STATIC && p.connected !== true) {
        this.remove(p)
        return
      }
    }
    for (const p of this.peers.values()) {
      if (p.source !== PeerSource.STATIC) {
        this.remove(p)
        return
      }
    }
  }

  private remove(p: KnownPeer): void {
    if (this.peers.delete(p.peerId) && p.source !== PeerSource.STATIC) this.learned--
  }
}
