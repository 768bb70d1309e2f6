import type { MessageInitShape } from '@bufbuild/protobuf'
import type { PeerRequestSchema, PeerResponse } from '@stargate/shared/gen/envelope'
import type { Tier } from '@stargate/shared/gen/gateway'

export type PeerRequestInit = MessageInitShape<typeof PeerRequestSchema>

/** An established way to send requests to one peer on one tier. */
export interface TierLink {
  /** Sends a request; rejects with a StargateError on transport failure. */
  send(req: PeerRequestInit, signal: AbortSignal): Promise<PeerResponse>
  /** The address, relay circuit or subject used. */
  via: string
  /** True when the link came from the pool (no new connection). */
  pooled: boolean
}

/** One tier: direct libp2p, Circuit Relay v2, or NATS. Adding a tier means one class and one list entry. */
export interface TierTransport {
  readonly tier: Tier
  /** Why this tier cannot reach peerId right now (it is skipped), or undefined when it can be tried. */
  unavailableReason(peerId: string): Promise<string | undefined>
  /** Connects, or reuses a pooled connection. Rejects with a StargateError. */
  connect(peerId: string, signal: AbortSignal): Promise<TierLink>
}
