import { type ClientHttp2Session, connect } from 'node:http2'
import { Code, StargateError } from '@stargate/shared/errors'
import type { Logger } from '@stargate/shared/log'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import type { BackendTarget } from './expose.ts'

export interface BackendPoolOptions {
  log: Logger
  /** CA bundle (PEM) that TLS backends' certificates must chain to; the system's CAs when unset. */
  caPem?: string | Uint8Array
  /** A connection not established within this long fails its calls (UNAVAILABLE). */
  connectTimeoutMs?: number
  /** A session idle this long is closed gracefully (its streams finish; the next call reconnects). */
  idleMs?: number
  /** HTTP/2 stream window toward backends: response data a backend may send before we read it. */
  windowBytes?: number
}

/** Per-session state the pool keeps (one object per session, shared by its listeners). */
interface Entry {
  key: string
  session: ClientHttp2Session
  timer?: NodeJS.Timeout
}

/**
 * One pooled node:http2 client session per --expose backend (h2c, or TLS with an optional CA), opened on
 * first use, replaced when it closes, fails or receives GOAWAY, closed when idle.
 */
export class BackendPool {
  private readonly options: Required<Omit<BackendPoolOptions, 'caPem'>> & Pick<BackendPoolOptions, 'caPem'>
  private readonly sessions = new Map<string, Entry>()

  constructor(options: BackendPoolOptions) {
    this.options = {
      log: options.log,
      caPem: options.caPem,
      connectTimeoutMs: options.connectTimeoutMs ?? GATEWAY_DEFAULTS.exposeConnectTimeoutMs,
      idleMs: options.idleMs ?? GATEWAY_DEFAULTS.exposeSessionIdleMs,
      windowBytes: options.windowBytes ?? GATEWAY_DEFAULTS.tunnelWindowBytes,
    }
  }

  /** Open sessions. */
  get size(): number {
    return this.sessions.size
  }

  /** The session to a backend, connecting when there is none usable. */
  session(target: BackendTarget): ClientHttp2Session {
    const existing = this.sessions.get(target.url)
    if (existing != null && !existing.session.closed && !existing.session.destroyed) return existing.session
    const session = connect(target.url, {
      ...(target.tls && this.options.caPem != null ? { ca: toPem(this.options.caPem) } : {}),
      settings: { initialWindowSize: this.options.windowBytes, enablePush: false },
    })
    const entry: Entry = { key: target.url, session }
    this.sessions.set(target.url, entry)
    const forget = (): void => {
      clearTimeout(entry.timer)
      if (this.sessions.get(entry.key) === entry) this.sessions.delete(entry.key)
    }
    session.on('error', (err: unknown) => {
      forget()
      this.options.log.debug('backend session failed', { backend: target.address, err })
    })
    session.on('goaway', forget)
    session.once('close', forget)
    const ms = this.options.connectTimeoutMs
    entry.timer = setTimeout(() => {
      session.destroy(new StargateError(Code.Unavailable, `no connection to backend ${target.address} within ${ms} ms`))
    }, ms)
    entry.timer.unref()
    session.once('connect', () => clearTimeout(entry.timer))
    session.setTimeout(this.options.idleMs, () => {
      forget()
      session.close()
    })
    session.unref()
    return session
  }

  /** Closes every session (streams in flight are cancelled). */
  close(): void {
    for (const entry of [...this.sessions.values()]) {
      clearTimeout(entry.timer)
      entry.session.destroy()
    }
    this.sessions.clear()
  }
}

function toPem(pem: string | Uint8Array): string | Buffer {
  return typeof pem === 'string' ? pem : Buffer.from(pem)
}
