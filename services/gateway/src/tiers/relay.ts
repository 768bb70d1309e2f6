import { multiaddr } from '@multiformats/multiaddr'
import { Code, StargateError } from '@stargate/shared/errors'
import { Tier } from '@stargate/shared/gen/gateway'
import type { PooledChannel } from '../pool.ts'
import { dialTransport, type Libp2pTierComponents, linkFor, openChannel, unavailable } from './libp2p.ts'
import type { TierLink, TierTransport } from './tier.ts'

/** What the relay tier needs from relay health monitoring (relays.ts implements it). */
export interface RelaySelector {
  /** Healthy relays, lowest RTT first. */
  usable(): Array<{ addr: string; peerId: string }>
  /** A relayed call through this relay failed: mark it suspect now (passive detection). */
  reportFailure(relayPeerId: string, reason: string): void
}

const CIRCUIT = '/p2p-circuit'

/** A way through a relay to a peer. */
export interface Circuit {
  /** The circuit multiaddr, ending in /p2p-circuit/p2p/<target>. */
  addr: string
  relayPeerId: string
}

/**
 * The circuits to try toward a peer, best first: through our own healthy relays (lowest RTT first, as given),
 * then through the relays the peer announces that we do not use ourselves. One circuit per relay.
 */
export function circuitCandidates(peerId: string, usable: Array<{ addr: string; peerId: string }>, announced: string[]): Circuit[] {
  const out = new Map<string, Circuit>()
  for (const r of usable) out.set(r.peerId, { addr: `${r.addr}${CIRCUIT}/p2p/${peerId}`, relayPeerId: r.peerId })
  for (const a of announced) {
    const relayPart = a.split(CIRCUIT)[0] ?? ''
    const at = relayPart.lastIndexOf('/p2p/')
    const relayPeerId = at < 0 ? '' : relayPart.slice(at + '/p2p/'.length)
    if (relayPeerId === '' || out.has(relayPeerId)) continue
    out.set(relayPeerId, { addr: a.endsWith(`/p2p/${peerId}`) ? a : `${a}/p2p/${peerId}`, relayPeerId })
  }
  return [...out.values()]
}

/** Tier 2: a libp2p Circuit Relay v2 connection through one of our healthy relays (lowest RTT first). */
export class RelayTier implements TierTransport {
  readonly tier = Tier.RELAY
  private readonly c: Libp2pTierComponents
  private readonly relays: RelaySelector

  constructor(components: Libp2pTierComponents, relays: RelaySelector) {
    this.c = components
    this.relays = relays
  }

  /** Circuit addresses to try toward peerId, best first. */
  circuits(peerId: string): Circuit[] {
    return circuitCandidates(peerId, this.relays.usable(), this.c.peers.get(peerId)?.circuitAddrs ?? [])
  }

  async unavailableReason(peerId: string): Promise<string | undefined> {
    if (this.c.pool.has(peerId, this.tier)) return undefined
    if (this.circuits(peerId).length === 0) return 'no healthy relay and no circuit address known for the peer'
    return undefined
  }

  async connect(peerId: string, signal: AbortSignal): Promise<TierLink> {
    const pooled = this.c.pool.get(peerId, this.tier)
    if (pooled != null) return linkFor(pooled, () => this.failed(peerId, pooled.relayPeerId, 'relayed call failed'))
    const reasons: string[] = []
    for (const circuit of this.circuits(peerId)) {
      signal.throwIfAborted()
      try {
        // Dial the circuit through the transport manager: libp2p's dial queue merges dials to one peer id,
        // so a relay dial would otherwise wait behind a direct dial that a firewall silently drops.
        const conn = await dialTransport(this.c.node, multiaddr(circuit.addr), signal)
        const channel = await openChannel(conn, true, this.c, signal)
        const entry: PooledChannel = { channel, via: circuit.addr, relayPeerId: circuit.relayPeerId }
        this.c.pool.put(peerId, this.tier, entry)
        return linkFor(entry, () => this.failed(peerId, circuit.relayPeerId, 'relayed call failed'))
      } catch (err: unknown) {
        if (signal.aborted) throw StargateError.from(signal.reason, Code.Canceled)
        const e = unavailable(err)
        reasons.push(`via ${circuit.relayPeerId}: ${e.rawMessage}`)
        this.relays.reportFailure(circuit.relayPeerId, e.rawMessage)
      }
    }
    throw new StargateError(Code.Unavailable, reasons.length > 0 ? reasons.join('; ') : 'no relay to try')
  }

  private failed(peerId: string, relayPeerId: string | undefined, reason: string): void {
    this.c.pool.drop(peerId, this.tier)
    if (relayPeerId != null) this.relays.reportFailure(relayPeerId, reason)
  }
}
