import type { ConnectionBudgets } from '../peer/budget.ts'
import type { FrameReaderOptions } from '../peer/frames.ts'
import type { RequestSink, StreamSink } from '../peer/server.ts'
import { DirectTier } from './direct.ts'
import { type Libp2pTierComponents, libp2pInbound } from './libp2p.ts'
import { NatsTier, type NatsTierComponents, natsInbound } from './nats.ts'
import { libp2pCircuits, type RelaySelector, RelayTier, type RelayTierOptions } from './relay.ts'
import type { TierModule } from './tier.ts'

/** Everything the tiers need, wired by the gateway. */
export interface TierComponents {
  libp2p: Libp2pTierComponents
  relays: RelaySelector
  /** How the relay tier races and remembers circuits. */
  relay: RelayTierOptions
  nats: NatsTierComponents
  selfPeerId: string
  /** Where inbound requests go (the inbound dispatcher). */
  inbound: RequestSink
  /** Where inbound tunnelled streams go (the tunnel egress). */
  streams: StreamSink
  /** How inbound peer streams are read. */
  reader: FrameReaderOptions
  /** What each inbound libp2p connection may hold (streams, buffered bytes). */
  budgets: ConnectionBudgets
}

/**
 * The tiers, in the order the router tries them. Adding a tier is one module under tiers/ and one entry here.
 * The libp2p handler serves both libp2p tiers (direct and relayed connections arrive on the same protocol),
 * so it is the direct tier's inbound side.
 */
export function createTiers(c: TierComponents): TierModule[] {
  return [
    { transport: new DirectTier(c.libp2p), inbound: libp2pInbound(c.libp2p, c.inbound, c.streams, c.reader, c.budgets) },
    { transport: new RelayTier({ ...c.libp2p, circuits: libp2pCircuits(c.libp2p) }, c.relays, c.relay) },
    {
      transport: new NatsTier(c.nats),
      inbound: c.nats.bus != null ? natsInbound(c.nats.bus, c.selfPeerId, c.nats.codec, c.inbound, c.nats.streams) : undefined,
    },
  ]
}
