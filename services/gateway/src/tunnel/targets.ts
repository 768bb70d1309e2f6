import type { IncomingHttpHeaders } from 'node:http2'
import { Code, StargateError } from '@stargate/shared/errors'
import { parsePeerId } from '../peer-ids.ts'
import { EVERY_SERVICE } from './expose.ts'
import type { RouteTable } from './routes.ts'
import { PEER_HEADER } from './wire.ts'

/**
 * Where a tunnelled call goes, in order: the request header `stargate-peer: <peer id>`; a static route
 * (`--route SERVICE=PEER_ID`, then `--route '*=PEER_ID'`); otherwise discovery — the peers whose signed
 * presence record advertises the service as the capability `grpc:<service>` (or `grpc:*`), this gateway
 * first when it exposes the service itself, then healthy peers before failing ones, lower latency first.
 * Discovery gives every candidate: the call moves on to the next one when a peer cannot be reached before
 * any request byte was sent.
 */

/** The capability a gateway's presence record advertises for a service it exposes. */
export function serviceCapability(service: string): string {
  return `grpc:${service}`
}

/** What target resolution reads from the gateway. */
export interface TargetSources {
  readonly selfPeerId: string
  readonly routes: RouteTable
  /** True when this gateway exposes the service itself (--expose). */
  exposes(service: string): boolean
  /** Peers (not this gateway) whose presence advertises the capability. */
  peersWithCapability(capability: string): string[]
  /** What is known of a peer's health: failures toward it lately, its latency (EWMA) when measured. */
  health(peerId: string): { failing: boolean; latencyMs?: number }
}

/** Resolves the candidate peers of tunnelled calls. */
export class TunnelTargets {
  private readonly s: TargetSources

  constructor(sources: TargetSources) {
    this.s = sources
  }

  /**
   * The peers to try for a call to `service`, best first. Throws INVALID_ARGUMENT for a malformed
   * stargate-peer header, UNIMPLEMENTED naming the three ways to route the service when there is none.
   */
  resolve(service: string, headers: IncomingHttpHeaders): string[] {
    const named = headers[PEER_HEADER]
    if (named != null) return [checkPeerId(named)]
    const routed = this.s.routes.lookup(service)
    if (routed != null) return [routed]
    const found = this.discover(service)
    if (found.length > 0) return found
    throw new StargateError(
      Code.Unimplemented,
      `service ${service} is not served by this gateway and no peer is known to expose it; route it in one of three ways: ` +
        `send the request header "${PEER_HEADER}: <peer id>", start this gateway with --route ${service}=<peer id>, ` +
        `or let discovery find it: start the gateway in front of the service with --expose ${service}=HOST:PORT and give both gateways the same --nats`,
    )
  }

  /** The peers advertising the service (exactly, or every service), ranked. */
  private discover(service: string): string[] {
    const ids = new Set([
      ...this.s.peersWithCapability(serviceCapability(service)),
      ...this.s.peersWithCapability(serviceCapability(EVERY_SERVICE)),
    ])
    ids.delete(this.s.selfPeerId)
    const ranked = [...ids]
      .map((peerId) => ({ peerId, ...this.s.health(peerId) }))
      .sort(
        (a, b) =>
          Number(a.failing) - Number(b.failing) ||
          (a.latencyMs ?? Number.POSITIVE_INFINITY) - (b.latencyMs ?? Number.POSITIVE_INFINITY) ||
          a.peerId.localeCompare(b.peerId),
      )
      .map((p) => p.peerId)
    return this.s.exposes(service) ? [this.s.selfPeerId, ...ranked] : ranked
  }
}

function checkPeerId(value: string | string[]): string {
  const v = Array.isArray(value) ? value.join(', ') : value.trim()
  try {
    parsePeerId(v)
  } catch {
    throw new StargateError(Code.InvalidArgument, `the ${PEER_HEADER} header ${JSON.stringify(v)} is not a valid libp2p peer id`)
  }
  return v
}
