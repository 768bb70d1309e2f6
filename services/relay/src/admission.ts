import type { MultiaddrConnection } from '@libp2p/interface'
import { ipKey } from './ip-key.ts'
import { RateLimiter } from './rate-limiter.ts'
import type { RefusalReasonName } from './stats.ts'

/** The part of libp2p's connection manager that admits inbound connections. */
export interface AdmittingConnectionManager {
  acceptIncomingConnection(maConn: MultiaddrConnection): boolean
  getConnections(): unknown[]
}

export interface AdmissionInit {
  maxConnections: number
  maxConnectionsPerIpPerSecond: number
  /** True while the relay drains: new connections are refused (not counted as refusals). */
  closing(): boolean
  refuse(reason: RefusalReasonName, fields: Record<string, unknown>): void
}

function ipOf(maConn: MultiaddrConnection): string {
  for (const c of maConn.remoteAddr.getComponents()) if (c.name === 'ip4' || c.name === 'ip6') return c.value ?? ''
  return ''
}

/**
 * Wraps libp2p's inbound admission (ConnectionManager.acceptIncomingConnection, which runs before any
 * handshake) so refused connections are counted and logged: the per-IP (IPv6: per /64) connection rate limit is enforced
 * here, the connection limit and pending-handshake limit by libp2p (its refusals count as CONNECTION_LIMIT).
 */
export function installAdmission(cm: AdmittingConnectionManager, init: AdmissionInit): void {
  const accept = cm.acceptIncomingConnection.bind(cm)
  const rate = new RateLimiter(init.maxConnectionsPerIpPerSecond)
  cm.acceptIncomingConnection = (maConn: MultiaddrConnection): boolean => {
    if (init.closing()) return false
    const ip = ipOf(maConn)
    if (!rate.take(ipKey(ip))) {
      init.refuse('RATE_LIMITED', { op: 'connection', ip })
      return false
    }
    if (accept(maConn)) return true
    init.refuse('CONNECTION_LIMIT', { op: 'connection', ip, connections: cm.getConnections().length, max: init.maxConnections })
    return false
  }
}
