/**
 * The tunnel machinery end to end in one process, with real node:http2 on both ends: an HTTP/2 server whose
 * streams go to a TunnelIngress → TunnelClient → in-memory link (every frame encoded and decoded as on a
 * real link) → TunnelServer → TunnelEgress → the --expose backends. What the gateway adds around it (routing,
 * tiers, the API server) comes at integration; this is the part those tests cannot reach into.
 */
import { once } from 'node:events'
import { createServer, type Http2Server, type Http2Session } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { BackendPool } from '../../services/gateway/src/tunnel/backends.ts'
import { TunnelClient } from '../../services/gateway/src/tunnel/client.ts'
import { TunnelEgress } from '../../services/gateway/src/tunnel/egress.ts'
import { ExposeTable, parseExposeFlag } from '../../services/gateway/src/tunnel/expose.ts'
import { type TunnelConnector, TunnelIngress } from '../../services/gateway/src/tunnel/ingress.ts'
import { Loopback } from '../../services/gateway/src/tunnel/loopback.ts'
import { TunnelServer } from '../../services/gateway/src/tunnel/server.ts'

export interface TunnelStackOptions {
  /** --expose values of the callee side. */
  expose: string[]
  windowBytes?: number
  maxMessageBytes?: number
  /** CA bundle (PEM) that TLS backends (--expose SERVICE=https://HOST:PORT) must chain to. */
  backendCaPem?: string
}

export class TunnelStack {
  readonly client: TunnelClient
  readonly server: TunnelServer
  readonly loop: Loopback
  readonly backends: BackendPool
  /** The ingress its HTTP/2 server feeds (another server, e.g. an ApiServer, may feed it too). */
  readonly ingress: TunnelIngress
  private readonly http: Http2Server
  private readonly sessions = new Set<Http2Session>()
  port = 0
  /** The trace context the ingress gives every call (what the gateway's telemetry does at integration). */
  traceContext?: Record<string, string>
  /** Replaces the connector (which otherwise hands out the one TunnelClient at once), to test the connect phase. */
  connector?: TunnelConnector

  constructor(options: TunnelStackOptions) {
    const log = createLogger('test:tunnel-stack', { level: 'silent' })
    const limits = {
      ...(options.windowBytes != null ? { windowBytes: options.windowBytes } : {}),
      ...(options.maxMessageBytes != null ? { maxMessageBytes: options.maxMessageBytes } : {}),
    }
    this.loop = new Loopback({ encode: true })
    this.client = new TunnelClient(this.loop.callerLink, {
      log,
      ...limits,
      localPeerId: 'caller',
      remotePeerId: 'callee',
      tier: Tier.DIRECT,
    })
    this.backends = new BackendPool({
      log,
      ...(options.windowBytes != null ? { windowBytes: options.windowBytes } : {}),
      ...(options.backendCaPem != null ? { caPem: options.backendCaPem } : {}),
    })
    const egress = new TunnelEgress({ expose: new ExposeTable(options.expose.map(parseExposeFlag)), backends: this.backends, log })
    this.server = new TunnelServer(this.loop.calleeLink, { log, ...limits, remotePeerId: 'caller', handler: egress.handle })
    this.loop.bind(this.client, this.server)
    this.ingress = new TunnelIngress({
      connect: (request, signal) => (this.connector != null ? this.connector(request, signal) : Promise.resolve(this.client)),
      log,
    })
    const ingress = this.ingress
    this.http = createServer()
    this.http.on('session', (s) => {
      this.sessions.add(s)
      s.once('close', () => this.sessions.delete(s))
    })
    this.http.on('stream', (stream, headers, _flags, rawHeaders) => {
      ingress.handle(stream, headers, rawHeaders, this.traceContext != null ? { traceContext: this.traceContext } : {}).catch(() => {})
    })
  }

  async start(): Promise<this> {
    this.http.listen(0, '127.0.0.1')
    await once(this.http, 'listening')
    this.port = (this.http.address() as AddressInfo).port
    return this
  }

  /** host:port of the ingress. */
  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  async stop(): Promise<void> {
    for (const s of this.sessions) s.destroy()
    this.backends.close()
    await new Promise<void>((resolve) => this.http.close(() => resolve()))
  }
}
