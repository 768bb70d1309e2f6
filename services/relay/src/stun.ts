import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { once } from 'node:events'
import { isIPv4 } from 'node:net'
import type { Logger } from '@stargate/shared/log'
import { decodeStunMessage, encodeBindingSuccess, isBindingRequest } from '@stargate/shared/stun'
import { STARGATE_VERSION } from '@stargate/shared/version'

export interface StunServerOptions {
  host: string
  /** 0 picks a free port. */
  port: number
  log: Logger
}

/**
 * A STUN responder (RFC 5389 Binding only): answers each well-formed Binding Request with the
 * source address it came from (XOR-MAPPED-ADDRESS and MAPPED-ADDRESS). Anything else is dropped
 * without an answer, so the socket cannot be used to reflect arbitrary traffic.
 */
export class StunServer {
  private readonly options: StunServerOptions
  private socket?: Socket
  /** Requests answered and datagrams dropped, for logs and tests. */
  readonly counters = { answered: 0, dropped: 0 }

  constructor(options: StunServerOptions) {
    this.options = options
  }

  /** Binds the UDP socket; resolves to the bound address. */
  async start(): Promise<{ host: string; port: number }> {
    const { host, port, log } = this.options
    const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' })
    socket.on('message', (msg, rinfo) => this.onMessage(socket, msg, rinfo))
    socket.on('error', (err) => log.warn('stun socket error', { err }))
    const bound = once(socket, 'listening')
    socket.bind(port, host)
    try {
      await bound
    } catch (err: unknown) {
      socket.close()
      throw new Error(
        `STUN responder cannot bind ${host}:${port} (--stun-port / --no-stun): ${err instanceof Error ? err.message : String(err)}`,
        {
          cause: err,
        },
      )
    }
    this.socket = socket
    const addr = socket.address()
    log.info('stun responder listening', { host: addr.address, port: addr.port })
    return { host: addr.address, port: addr.port }
  }

  private onMessage(socket: Socket, msg: Buffer, rinfo: RemoteInfo): void {
    const req = decodeStunMessage(msg)
    if (req == null || !isBindingRequest(req)) {
      this.counters.dropped++
      return
    }
    // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; answer with its IPv4 address.
    const mapped = rinfo.address.startsWith('::ffff:') && isIPv4(rinfo.address.slice(7)) ? rinfo.address.slice(7) : rinfo.address
    const res = encodeBindingSuccess(req.transactionId, { address: mapped, port: rinfo.port }, `stargate-relay ${STARGATE_VERSION}`)
    this.counters.answered++
    socket.send(res, rinfo.port, rinfo.address, (err) => {
      if (err != null) this.options.log.debug('stun send failed', { err, to: `${rinfo.address}:${rinfo.port}` })
    })
  }

  async stop(): Promise<void> {
    const socket = this.socket
    this.socket = undefined
    if (socket == null) return
    const closed = once(socket, 'close')
    socket.close()
    await closed
  }
}
