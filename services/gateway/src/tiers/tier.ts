import type { MessageInitShape } from '@bufbuild/protobuf'
import type { PeerRequestSchema, PeerResponse } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { ClientStreamEvents, OpenInit, TunnelClientStream } from '../tunnel/client.ts'

export type PeerRequestInit = MessageInitShape<typeof PeerRequestSchema>

/** What an exchange with a peer is: a unary Call (envelope request/response) or a tunnelled gRPC stream. */
export type Purpose = 'call' | 'stream'

/** An established way to exchange with one peer on one tier. */
export interface TierLink {
  /** Sends a request; rejects with a StargateError on transport failure. */
  send(req: PeerRequestInit, signal: AbortSignal): Promise<PeerResponse>
  /**
   * Opens a tunnelled gRPC stream on the link (absent on tiers that carry no streams). Throws a
   * StargateError when the stream cannot be opened (the link failed, the per-link stream limit): nothing
   * was sent then. The StreamOpen leaves at the end of the event-loop turn (`openSent` tells when).
   */
  openStream?(init: OpenInit, events: ClientStreamEvents): TunnelClientStream
  /** The address, relay circuit or subject used. */
  readonly via: string
  /**
   * The link was reused from the pool rather than opened for this exchange. When it fails, the router
   * connects on the same tier once more at once: a pooled connection that died says nothing of a fresh one.
   */
  readonly reused?: boolean
}

/**
 * One tier: direct libp2p, Circuit Relay v2, NATS, or the loopback to this gateway itself. A tier is one
 * module under tiers/ and one entry in the list in tiers/index.ts; the router knows nothing else about it.
 */
export interface TierTransport {
  readonly tier: Tier
  /**
   * Why this tier cannot carry an exchange of this purpose with peerId right now (it is skipped, with the
   * reason recorded), or undefined when it can be tried.
   */
  unavailableReason(peerId: string, purpose: Purpose): Promise<string | undefined>
  /** Connects, or reuses a pooled connection. Rejects with a StargateError. */
  connect(peerId: string, signal: AbortSignal): Promise<TierLink>
}

/** The receiving side of a tier (a protocol handler or a subscription), started and stopped with the gateway. */
export interface TierInbound {
  start(): Promise<void>
  stop(): Promise<void>
}

/** A tier as the gateway wires it: its transport for the router and, if it receives on its own, its inbound side. */
export interface TierModule {
  transport: TierTransport
  inbound?: TierInbound
}

const TIER_NAMES: Record<number, string> = {
  [Tier.DIRECT]: 'direct',
  [Tier.RELAY]: 'relay',
  [Tier.NATS]: 'nats',
  [Tier.LOCAL]: 'local',
}

/** The short name of a tier (span and metric attributes, log fields, attempt reasons). */
export function tierName(t: Tier): string {
  return TIER_NAMES[t] ?? 'unspecified'
}
