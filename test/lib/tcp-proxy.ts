import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy on 127.0.0.1 (port 0) in front of one address, for breaking a path on purpose: `cut()` destroys
 * every connection it carries (both ends see them reset) and keeps accepting new ones; while `refusing`,
 * connections are reset as soon as they arrive.
 */
export class TcpProxy {
  port = 0
  /** Connections cut so far. */
  cuts = 0
  refusing = false
  private readonly server: Server
  private readonly pairs = new Set<[Socket, Socket]>()

  constructor(targetHost: string, targetPort: number) {
    this.server = createServer((client) => {
      if (this.refusing) {
        client.resetAndDestroy()
        return
      }
      const upstream = connect(targetPort, targetHost)
      const pair: [Socket, Socket] = [client, upstream]
      this.pairs.add(pair)
      const drop = (): void => {
        this.pairs.delete(pair)
        client.destroy()
        upstream.destroy()
      }
      for (const s of pair) {
        s.on('error', drop)
        s.on('close', drop)
      }
      client.pipe(upstream)
      upstream.pipe(client)
    })
  }

  async start(): Promise<this> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as { port: number }).port
    return this
  }

  /** Connections carried now. */
  get open(): number {
    return this.pairs.size
  }

  /** Resets every connection carried now (RST to both ends); new connections are still accepted. */
  cut(): void {
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair)
      this.cuts++
      for (const s of pair) s.resetAndDestroy()
    }
  }

  async stop(): Promise<void> {
    this.cut()
    this.server.close()
  }
}
