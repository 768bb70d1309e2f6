import { peerIdFromString } from '@libp2p/peer-id'
import { Code, StargateError } from '@stargate/shared/errors'
import { EVERY_SERVICE, isServiceName } from './expose.ts'

/**
 * The `--route SERVICE=PEER_ID` table of a caller gateway: which peer serves a tunnelled service when the
 * request names none (`stargate-peer`). `*=PEER_ID` routes every service not named; an exact service beats `*`.
 */

/** One --route value. */
export interface RouteEntry {
  /** A fully qualified service name (package.Service) or "*". */
  service: string
  peerId: string
}

const FORM = 'expected SERVICE=PEER_ID: SERVICE fully qualified (e.g. routeguide.RouteGuide) or * for every service'

/** Parses one --route value; INVALID_ARGUMENT naming the flag and the expected form when malformed. */
export function parseRouteFlag(value: string): RouteEntry {
  const bad = (why: string): never => {
    throw new StargateError(Code.InvalidArgument, `--route ${JSON.stringify(value)}: ${why}; ${FORM}`)
  }
  const eq = value.indexOf('=')
  if (eq < 0) bad('no "="')
  const service = value.slice(0, eq).trim()
  const peerId = value.slice(eq + 1).trim()
  if (service !== EVERY_SERVICE && !isServiceName(service)) bad(`${JSON.stringify(service)} is not a service name`)
  try {
    peerIdFromString(peerId)
  } catch {
    bad(`${JSON.stringify(peerId)} is not a valid peer id`)
  }
  return { service, peerId }
}

/** Which peer each routed service goes to. */
export class RouteTable {
  private readonly exact = new Map<string, string>()
  private readonly every?: string

  /** INVALID_ARGUMENT when a service (or *) is given twice. */
  constructor(entries: readonly RouteEntry[]) {
    let every: string | undefined
    for (const { service, peerId } of entries) {
      const taken = service === EVERY_SERVICE ? every : this.exact.get(service)
      if (taken != null) throw new StargateError(Code.InvalidArgument, `--route ${service} is given twice (${taken} and ${peerId})`)
      if (service === EVERY_SERVICE) every = peerId
      else this.exact.set(service, peerId)
    }
    this.every = every
  }

  /** The peer of a service: its own route, else the * route, else undefined. */
  lookup(service: string): string | undefined {
    return this.exact.get(service) ?? this.every
  }
}
