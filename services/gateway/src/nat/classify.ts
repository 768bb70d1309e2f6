import { isIPv4, isIPv6 } from 'node:net'
import { NatType } from '@stargate/shared/gen/gateway'
import type { StunAddress } from '@stargate/shared/stun'

/** What one observer (a STUN server) reported; `mapped` is missing when it did not answer in time. */
export interface NatObservation {
  /** HOST:PORT of the observer. */
  observer: string
  mapped?: StunAddress
}

/** The outcome of one detection run. */
export interface NatClassification {
  natType: NatType
  /** Distinct HOST:PORT mappings the observers saw, in observer order. */
  publicAddrs: string[]
  requiresRelay: boolean
}

function v4ToInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0)
}

const V4_NON_PUBLIC: Array<[string, number]> = [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT (RFC 6598): a NAT sits between it and the internet
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
  ['224.0.0.0', 3], // multicast, reserved, broadcast
]

/** True when `ip` is inside `base/bits` (IPv4 only). */
export function inV4Prefix(ip: string, base: string, bits: number): boolean {
  if (!isIPv4(ip)) return false
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
  return (v4ToInt(ip) & mask) >>> 0 === (v4ToInt(base) & mask) >>> 0
}

/**
 * True for an address the internet can route to this host: not private (RFC 1918), not carrier-grade
 * NAT space (100.64.0.0/10), not loopback, link-local, unique-local or multicast.
 */
export function isPublicIp(ip: string): boolean {
  if (isIPv4(ip)) return !V4_NON_PUBLIC.some(([base, bits]) => inV4Prefix(ip, base, bits))
  if (!isIPv6(ip)) return false
  const lower = ip.toLowerCase()
  const mapped = lower.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/)
  if (mapped != null) return isPublicIp(mapped[1]!)
  if (lower === '::' || lower === '::1') return false
  const first = Number.parseInt(lower.split(':')[0] || '0', 16)
  if ((first & 0xfe00) === 0xfc00) return false // fc00::/7 unique local
  if ((first & 0xffc0) === 0xfe80) return false // fe80::/10 link local
  if ((first & 0xff00) === 0xff00) return false // multicast
  return true
}

/** HOST:PORT with IPv6 hosts in brackets. */
export function formatHostPort(a: StunAddress): string {
  return a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
}

/**
 * Classifies the NAT from what the observers saw, all probed from one local UDP socket:
 * - fewer than two answers: UNKNOWN (one mapping cannot show whether it depends on the destination);
 * - every mapping is a local, publicly routable address: PUBLIC;
 * - one mapping for all observers (endpoint-independent mapping): PRIVATE;
 * - mappings differ by destination: SYMMETRIC, and only then requiresRelay (nobody can predict the
 *   mapping a peer would need, so only a relay reaches this gateway).
 * Observers on this host's own network (they see a local address) say nothing about the NAT and are
 * left out when others saw something else (two outside answers are still needed).
 */
export function classifyNat(observations: NatObservation[], localAddrs: Iterable<string>): NatClassification {
  const local = new Set(Array.from(localAddrs, (a) => a.toLowerCase()))
  const answered = observations.filter((o): o is Required<NatObservation> => o.mapped != null)
  const publicAddrs = [...new Set(answered.map((o) => formatHostPort(o.mapped)))]
  if (answered.length < 2) return { natType: NatType.UNKNOWN, publicAddrs, requiresRelay: false }
  const isLocal = (o: Required<NatObservation>): boolean => local.has(o.mapped.address.toLowerCase())
  if (answered.every((o) => isLocal(o) && isPublicIp(o.mapped.address))) {
    return { natType: NatType.PUBLIC, publicAddrs, requiresRelay: false }
  }
  const outside = answered.filter((o) => !isLocal(o))
  // One outside observer cannot show whether the mapping depends on the destination.
  if (outside.length === 1) return { natType: NatType.UNKNOWN, publicAddrs, requiresRelay: false }
  const considered = outside.length > 0 ? outside : answered
  const mappings = new Set(considered.map((o) => formatHostPort(o.mapped)))
  if (mappings.size === 1) return { natType: NatType.PRIVATE, publicAddrs, requiresRelay: false }
  return { natType: NatType.SYMMETRIC, publicAddrs, requiresRelay: true }
}
