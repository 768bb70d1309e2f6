import type { Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { Code, StargateError } from '@stargate/shared/errors'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { type GatewayNode, transportManagerOf } from '../node.ts'
import { CALL_PROTOCOL, PeerChannel } from '../peer/channel.ts'
import type { PeerBook } from '../peers.ts'
import type { ChannelPool, PooledChannel } from '../pool.ts'
import type { TierLink, TierTransport } from './tier.ts'

/** What the relay tier needs from relay health monitoring. */
export interface RelaySelector {
  /** Healthy relays, lowest RTT first. */
  usable(): Array<{ addr: string; peerId: string }>
  /** A relayed call through this relay failed: mark it suspect now (passive detection). */
  reportFailure(relayPeerId: string, reason: string): void
}

export interface Libp2pTierDeps {
  node: GatewayNode
  pool: ChannelPool
  peers: PeerBook
  maxFrameBytes: number
  log: Logger
}

const CIRCUIT = '/p2p-circuit'

function isCircuit(ma: Multiaddr | string): boolean {
  return ma.toString().includes(CIRCUIT)
}

async function openChannel(conn: Connection, limited: boolean, deps: Libp2pTierDeps, signal: AbortSignal): Promise<PeerChannel> {
  const stream = await conn.newStream(CALL_PROTOCOL, { signal, runOnLimitedConnection: limited })
  stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, deps.maxFrameBytes * 2)
  return new PeerChannel(stream, conn, deps.maxFrameBytes, deps.log)
}

/** Dials one address with its transport directly (no per-peer dial queue); the connection is tracked as usual. */
async function dialTransport(node: GatewayNode, ma: Multiaddr, signal: AbortSignal): Promise<Connection> {
  return transportManagerOf(node).dial(ma, { signal })
}

function linkFor(pooled: PooledChannel, fromPool: boolean, onFailure: () => void): TierLink {
  return {
    via: pooled.via,
    pooled: fromPool,
    send: async (req, signal) => {
      try {
        return await pooled.channel.call(req, signal)
      } catch (err: unknown) {
        if (!signal.aborted) onFailure()
        throw err
      }
    },
  }
}

/** Tier 1: a direct libp2p connection (tcp + noise + yamux) to an address of the peer. */
export class DirectTier implements TierTransport {
  readonly tier = Tier.DIRECT
  private readonly d: Libp2pTierDeps

  constructor(deps: Libp2pTierDeps) {
    this.d = deps
  }

  /** Direct addresses from --peer, presence records and identify (learned over any connection). */
  async addresses(peerId: string): Promise<Multiaddr[]> {
    const out = new Map<string, Multiaddr>()
    for (const a of this.d.peers.get(peerId)?.directAddrs ?? []) if (!isCircuit(a)) out.set(a, multiaddr(a))
    try {
      const stored = await this.d.node.peerStore.get(peerIdFromString(peerId))
      for (const { multiaddr: ma } of stored.addresses) if (!isCircuit(ma)) out.set(ma.toString(), ma)
    } catch {
      // not in the peer store: no identify-learned addresses
    }
    return [...out.values()]
  }

  private existing(peerId: string): Connection | undefined {
    return this.d.node
      .getConnections(peerIdFromString(peerId))
      .find((c) => c.status === 'open' && c.limits == null && !isCircuit(c.remoteAddr))
  }

  async unavailableReason(peerId: string): Promise<string | undefined> {
    if (this.d.pool.get(peerId, this.tier) != null || this.existing(peerId) != null) return undefined
    if ((await this.addresses(peerId)).length === 0) return 'no known direct address for the peer'
    return undefined
  }

  async connect(peerId: string, signal: AbortSignal): Promise<TierLink> {
    const pooled = this.d.pool.get(peerId, this.tier)
    const onFailure = (): void => this.d.pool.drop(peerId, this.tier)
    if (pooled != null) {
      this.d.pool.hit()
      return linkFor(pooled, true, onFailure)
    }
    this.d.pool.miss()
    let conn = this.existing(peerId)
    const addrs = await this.addresses(peerId)
    if (conn == null) {
      if (addrs.length === 0) throw new StargateError(Code.Unavailable, 'no known direct address for the peer')
      const withPeer = addrs.map((a) => (a.getComponents().some((c) => c.name === 'p2p') ? a : a.encapsulate(`/p2p/${peerId}`)))
      try {
        conn = await this.d.node.dial(withPeer, { signal })
      } catch (err: unknown) {
        throw StargateError.from(err, Code.Unavailable)
      }
      if (conn.limits != null || isCircuit(conn.remoteAddr)) {
        throw new StargateError(Code.Unavailable, 'only a relayed connection to the peer could be opened')
      }
    }
    const channel = await openChannel(conn, false, this.d, signal).catch((err: unknown) => {
      throw StargateError.from(err, Code.Unavailable)
    })
    const entry: PooledChannel = { channel, via: conn.remoteAddr.toString() }
    this.d.pool.put(peerId, this.tier, entry)
    return linkFor(entry, false, onFailure)
  }
}

/** Tier 2: a libp2p Circuit Relay v2 connection through one of our healthy relays (lowest RTT first). */
export class RelayTier implements TierTransport {
  readonly tier = Tier.RELAY
  private readonly d: Libp2pTierDeps
  private readonly relays: RelaySelector

  constructor(deps: Libp2pTierDeps, relays: RelaySelector) {
    this.d = deps
    this.relays = relays
  }

  /** Circuit addresses to try, best first: through our healthy relays, then the peer's announced ones. */
  circuits(peerId: string): Array<{ addr: string; relayPeerId: string }> {
    const out = new Map<string, { addr: string; relayPeerId: string }>()
    for (const r of this.relays.usable()) {
      out.set(r.peerId, { addr: `${r.addr}${CIRCUIT}/p2p/${peerId}`, relayPeerId: r.peerId })
    }
    for (const a of this.d.peers.get(peerId)?.circuitAddrs ?? []) {
      const relayPeerId = a.split(CIRCUIT)[0]?.split('/p2p/').at(-1) ?? ''
      if (relayPeerId !== '' && !out.has(relayPeerId)) {
        out.set(relayPeerId, { addr: a.endsWith(`/p2p/${peerId}`) ? a : `${a}/p2p/${peerId}`, relayPeerId })
      }
    }
    return [...out.values()]
  }

  async unavailableReason(peerId: string): Promise<string | undefined> {
    if (this.d.pool.get(peerId, this.tier) != null) return undefined
    if (this.circuits(peerId).length === 0) return 'no healthy relay and no circuit address known for the peer'
    return undefined
  }

  async connect(peerId: string, signal: AbortSignal): Promise<TierLink> {
    const pooled = this.d.pool.get(peerId, this.tier)
    if (pooled != null) {
      this.d.pool.hit()
      return linkFor(pooled, true, () => this.failed(peerId, pooled.relayPeerId, 'relayed call failed'))
    }
    this.d.pool.miss()
    const reasons: string[] = []
    for (const c of this.circuits(peerId)) {
      signal.throwIfAborted()
      try {
        // Dial the circuit through the transport manager: libp2p's dial queue merges dials to one peer id,
        // so a relay dial would otherwise wait behind a direct dial that a firewall silently drops.
        const conn = await dialTransport(this.d.node, multiaddr(c.addr), signal)
        const channel = await openChannel(conn, true, this.d, signal)
        const entry: PooledChannel = { channel, via: c.addr, relayPeerId: c.relayPeerId }
        this.d.pool.put(peerId, this.tier, entry)
        return linkFor(entry, false, () => this.failed(peerId, c.relayPeerId, 'relayed call failed'))
      } catch (err: unknown) {
        if (signal.aborted) throw StargateError.from(signal.reason, Code.Canceled)
        const e = StargateError.from(err, Code.Unavailable)
        reasons.push(`via ${c.relayPeerId}: ${e.rawMessage}`)
        this.relays.reportFailure(c.relayPeerId, e.rawMessage)
      }
    }
    throw new StargateError(Code.Unavailable, reasons.length > 0 ? reasons.join('; ') : 'no relay to try')
  }

  private failed(peerId: string, relayPeerId: string | undefined, reason: string): void {
    this.d.pool.drop(peerId, this.tier)
    if (relayPeerId != null) this.relays.reportFailure(relayPeerId, reason)
  }
}
