import { Code, StargateError } from '@stargate/shared/errors'

/**
 * The `--expose SERVICE=HOST:PORT` table of a callee gateway: which local gRPC backend serves each tunnelled
 * service. `*=HOST:PORT` serves every service not named; an exact service beats `*`.
 */

/** A local gRPC backend. */
export interface BackendTarget {
  /** host:port as written in the flag (IPv6 hosts in brackets). */
  address: string
  host: string
  port: number
  /** TLS instead of h2c (the flag's https:// form). */
  tls: boolean
  /** The URL connected to: http://host:port or https://host:port. */
  url: string
}

/** One --expose value. */
export interface ExposeEntry {
  /** A fully qualified service name (package.Service) or "*". */
  service: string
  target: BackendTarget
}

/** The wildcard service name. */
export const EVERY_SERVICE = '*'

const SERVICE_RE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/

/** True for a fully qualified protobuf service name (package.Service). */
export function isServiceName(name: string): boolean {
  return SERVICE_RE.test(name)
}
const HOST_PORT_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/

const FORM =
  'expected SERVICE=HOST:PORT: SERVICE fully qualified (e.g. routeguide.RouteGuide) or * for every service, ' +
  'HOST:PORT an h2c gRPC backend (https://HOST:PORT for TLS)'

/** Parses one --expose value; INVALID_ARGUMENT naming the flag and the expected form when malformed. */
export function parseExposeFlag(value: string): ExposeEntry {
  const bad = (why: string): never => {
    throw new StargateError(Code.InvalidArgument, `--expose ${JSON.stringify(value)}: ${why}; ${FORM}`)
  }
  const eq = value.indexOf('=')
  if (eq < 0) bad('no "="')
  const service = value.slice(0, eq).trim()
  let rest = value.slice(eq + 1).trim()
  if (service !== EVERY_SERVICE && !isServiceName(service)) bad(`${JSON.stringify(service)} is not a service name`)
  let tls = false
  if (rest.startsWith('https://')) {
    tls = true
    rest = rest.slice('https://'.length)
  } else if (rest.startsWith('http://')) {
    rest = rest.slice('http://'.length)
  }
  const m = HOST_PORT_RE.exec(rest)
  if (m == null) return bad(`${JSON.stringify(rest)} is not HOST:PORT`)
  const port = Number(m[2])
  if (port < 1 || port > 65_535) bad(`port ${port} is out of range`)
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!
  return { service, target: { address: rest, host, port, tls, url: `${tls ? 'https' : 'http'}://${rest}` } }
}

/** Which backend serves each exposed service. */
export class ExposeTable {
  private readonly exactTargets = new Map<string, BackendTarget>()
  private readonly every?: BackendTarget

  /** INVALID_ARGUMENT when a service (or *) is given twice. */
  constructor(entries: readonly ExposeEntry[]) {
    let every: BackendTarget | undefined
    for (const { service, target } of entries) {
      const taken = service === EVERY_SERVICE ? every : this.exactTargets.get(service)
      if (taken != null) {
        throw new StargateError(Code.InvalidArgument, `--expose ${service} is given twice (${taken.address} and ${target.address})`)
      }
      if (service === EVERY_SERVICE) every = target
      else this.exactTargets.set(service, target)
    }
    this.every = every
  }

  /** The backend of a service: its own entry, else the * entry, else undefined (not exposed). */
  lookup(service: string): BackendTarget | undefined {
    return this.exactTargets.get(service) ?? this.every
  }

  /** The service's own entry, ignoring "*". */
  exact(service: string): BackendTarget | undefined {
    return this.exactTargets.get(service)
  }

  /** Every distinct backend (by URL), in flag order. */
  get targets(): BackendTarget[] {
    const out = new Map<string, BackendTarget>()
    for (const t of [...this.exactTargets.values(), ...(this.every != null ? [this.every] : [])]) if (!out.has(t.url)) out.set(t.url, t)
    return [...out.values()]
  }

  /** The services exposed by name (what presence records advertise); "*" when every service is. */
  get services(): string[] {
    return [...this.exactTargets.keys(), ...(this.every != null ? [EVERY_SERVICE] : [])]
  }

  /** True when nothing is exposed. */
  get empty(): boolean {
    return this.exactTargets.size === 0 && this.every == null
  }
}
