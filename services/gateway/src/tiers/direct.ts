import type { Connection } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { Code, StargateError } from '@stargate/shared/errors'
import { Tier } from '@stargate/shared/gen/gateway'
import { parsePeerId } from '../peer-ids.ts'
import type { PooledChannel } from '../pool.ts'
import { isCircuit, type Libp2pTierComponents, linkFor, openChannel, unavailable } from './libp2p.ts'
import { SingleFlight } from './single-flight.ts'
import type { TierLink, TierTransport } from './tier.ts'

/** Tier 1: a direct libp2p connection (tcp + noise + yamux) to an address of the peer. */
export class DirectTier implements TierTransport {
  readonly tier = Tier.DIRECT
  private readonly c: Libp2pTierComponents
  private readonly opening = new SingleFlight<PooledChannel>()

  constructor(components: Libp2pTierComponents) {
    this.c = components
  }

  /** Direct addresses from --peer, presence records and identify (learned over any connection). */
  async addresses(peerId: string): Promise<Multiaddr[]> {
    const out = new Map<string, Multiaddr>()
    for (const a of this.c.peers.get(peerId)?.directAddrs ?? []) if (!isCircuit(a)) out.set(a, multiaddr(a))
    try {
      const stored = await this.c.node.peerStore.get(parsePeerId(peerId))
      for (const { multiaddr: ma } of stored.addresses) if (!isCircuit(ma)) out.set(ma.toString(), ma)
    } catch {
      // not in the peer store: no identify-learned addresses
    }
    return [...out.values()]
  }

  private existing(peerId: string): Connection | undefined {
    return this.c.node
      .getConnections(parsePeerId(peerId))
      .find((conn) => conn.status === 'open' && conn.limits == null && !isCircuit(conn.remoteAddr))
  }

  async unavailableReason(peerId: string): Promise<string | undefined> {
    if (this.c.pool.has(peerId, this.tier) || this.existing(peerId) != null) return undefined
    if ((await this.addresses(peerId)).length === 0) return 'no known direct address for the peer'
    return undefined
  }

  async connect(peerId: string, signal: AbortSignal): Promise<TierLink> {
    const onFailure = (): void => this.c.pool.drop(peerId, this.tier)
    const pooled = this.c.pool.get(peerId, this.tier)
    if (pooled != null) return linkFor(pooled, onFailure, true)
    // Concurrent first calls share one connect: each opening its own channel would retire the others'.
    const entry = await this.opening.run(peerId, signal, (s) => this.open(peerId, s))
    return linkFor(entry, onFailure, false)
  }

  /** Dials (or reuses a direct connection), opens the call channel and pools it. */
  private async open(peerId: string, signal: AbortSignal): Promise<PooledChannel> {
    let conn = this.existing(peerId)
    if (conn == null) {
      const addrs = await this.addresses(peerId)
      if (addrs.length === 0) throw new StargateError(Code.Unavailable, 'no known direct address for the peer')
      const withPeer = addrs.map((a) => (a.getComponents().some((c) => c.name === 'p2p') ? a : a.encapsulate(`/p2p/${peerId}`)))
      try {
        conn = await this.c.node.dial(withPeer, { signal })
      } catch (err: unknown) {
        throw unavailable(err)
      }
      if (conn.limits != null || isCircuit(conn.remoteAddr)) {
        throw new StargateError(Code.Unavailable, 'only a relayed connection to the peer could be opened')
      }
    }
    const channel = await openChannel(conn, false, this.c, signal).catch((err: unknown) => {
      throw unavailable(err)
    })
    const entry: PooledChannel = { channel, via: conn.remoteAddr.toString() }
    this.c.pool.put(peerId, this.tier, entry)
    return entry
  }
}
