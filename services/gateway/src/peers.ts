import { NatType, PeerSource } from '@stargate/shared/gen/gateway'

/** What the gateway knows about one peer. */
export interface KnownPeer {
  peerId: string
  directAddrs: string[]
  circuitAddrs: string[]
  capabilities: string[]
  natType: NatType
  source: PeerSource
  lastSeenMs: number
}

/** Known peers from --peer flags, presence records and connections. */
export class PeerBook {
  private readonly peers = new Map<string, KnownPeer>()

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
      lastSeenMs: update.lastSeenMs ?? Date.now(),
    }
    if (prev?.source === PeerSource.STATIC && update.directAddrs != null) {
      next.directAddrs = [...new Set([...prev.directAddrs, ...update.directAddrs])]
    }
    this.peers.set(peerId, next)
    return next
  }

  get(peerId: string): KnownPeer | undefined {
    return this.peers.get(peerId)
  }

  all(): KnownPeer[] {
    return [...this.peers.values()].sort((a, b) => a.peerId.localeCompare(b.peerId))
  }

  /** Peers announcing a capability (all peers for an empty capability). */
  withCapability(capability: string): KnownPeer[] {
    return this.all().filter((p) => capability === '' || p.capabilities.includes(capability))
  }

  /** Drops presence-learned peers not heard of within ttlMs. */
  expire(ttlMs: number, nowMs = Date.now()): void {
    for (const [id, p] of this.peers) {
      if (p.source === PeerSource.PRESENCE && nowMs - p.lastSeenMs > ttlMs) this.peers.delete(id)
    }
  }
}
