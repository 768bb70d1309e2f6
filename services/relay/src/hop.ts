import type { Connection, Libp2p, PeerId, PrivateKey, Record as SignedRecord, Stream } from '@libp2p/interface'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { pbStream } from '@libp2p/utils'
import type { Logger } from '@stargate/shared/log'
import * as Digest from 'multiformats/hashes/digest'
import {
  HOP_CODEC,
  type HopMessage,
  HopMessageCodec,
  HopType,
  type Limit,
  ReservationVoucherCodec,
  STOP_CODEC,
  Status,
  type StatusCode,
  StopMessageCodec,
  StopType,
} from './circuit-pb.ts'
import { RateLimiter } from './rate-limiter.ts'
import { ReservationStore } from './reservations.ts'
import { splice } from './splice.ts'
import type { RefusalReasonName, RelayStats } from './stats.ts'

const RESERVATION_TAG = 'stargate-relay-reservation'

/** What the hop server needs of the relay's options. */
export interface HopOptions {
  maxReservations: number
  reservationTtlMs: number
  maxReservationsPerPeer: number
  maxReservationsPerIp: number
  maxReservationsPerIpPerSecond: number
  maxCircuitBytes: number
  maxCircuitDurationMs: number
  allowlist: string[]
  hopTimeoutMs: number
  maxInboundHopStreams: number
  maxOutboundStopStreams: number
}

export interface HopServerInit {
  node: Libp2p
  privateKey: PrivateKey
  options: HopOptions
  stats: RelayStats
  log: Logger
  /** Called for every refusal (counting and logging live in one place, see Relay). */
  refuse(reason: RefusalReasonName, fields: Record<string, unknown>): void
}

/** The signed reservation voucher (libp2p RFC 0002 envelope, domain libp2p-relay-rsvp), as js-libp2p makes it. */
class ReservationVoucherRecord implements SignedRecord {
  readonly domain = 'libp2p-relay-rsvp'
  readonly codec = new Uint8Array([0x03, 0x02])
  readonly relay: PeerId
  readonly peer: PeerId
  readonly expiration: bigint

  constructor(relay: PeerId, peer: PeerId, expiration: bigint) {
    this.relay = relay
    this.peer = peer
    this.expiration = expiration
  }

  marshal(): Uint8Array {
    return ReservationVoucherCodec.encode({
      relay: this.relay.toMultihash().bytes,
      peer: this.peer.toMultihash().bytes,
      expiration: this.expiration,
    })
  }

  equals(other: SignedRecord): boolean {
    return (
      other instanceof ReservationVoucherRecord &&
      other.relay.equals(this.relay) &&
      other.peer.equals(this.peer) &&
      other.expiration === this.expiration
    )
  }
}

/** A marshaled signed envelope of the reservation voucher for `peer` on `relay`, expiring at `expire` (Unix s). */
export async function sealVoucher(privateKey: PrivateKey, relay: PeerId, peer: PeerId, expire: bigint): Promise<Uint8Array> {
  const envelope = await RecordEnvelope.seal(new ReservationVoucherRecord(relay, peer, expire), privateKey)
  return envelope.marshal()
}

/** The IP address of a connection's remote multiaddr ('' if it has none). */
export function remoteIp(conn: Connection): string {
  for (const c of conn.remoteAddr.getComponents()) if (c.name === 'ip4' || c.name === 'ip6') return c.value ?? ''
  return ''
}

function isRelayed(conn: Connection): boolean {
  return conn.remoteAddr.getComponents().some((c) => c.name === 'p2p-circuit')
}

/**
 * The Circuit Relay v2 hop protocol: reservations (RESERVE) and relayed connections (CONNECT), with the limits,
 * counters and drain an operator needs. Replaces js-libp2p's circuitRelayServer, which cannot count bytes,
 * refusals or circuits, has no per-peer/per-IP/rate limits and sends its duration limit in ms.
 */
export class HopServer {
  readonly reservations: ReservationStore<Connection>
  private readonly init: HopServerInit
  private readonly allow: Set<string>
  private readonly reserveRate: RateLimiter
  private readonly shutdown = new AbortController()
  private readonly circuits = new Set<Promise<unknown>>()
  private readonly limit?: Limit
  private draining = false
  private sweeper?: NodeJS.Timeout

  constructor(init: HopServerInit) {
    this.init = init
    const o = init.options
    this.allow = new Set(o.allowlist)
    this.reserveRate = new RateLimiter(o.maxReservationsPerIpPerSecond)
    this.reservations = new ReservationStore<Connection>({
      maxReservations: o.maxReservations,
      maxPerPeer: o.maxReservationsPerPeer,
      maxPerIp: o.maxReservationsPerIp,
      ttlMs: o.reservationTtlMs,
    })
    if (o.maxCircuitBytes > 0 || o.maxCircuitDurationMs > 0) {
      this.limit = {}
      if (o.maxCircuitBytes > 0) this.limit.data = BigInt(o.maxCircuitBytes)
      // The spec's Limit.duration is seconds; enforcement below is exact to the ms.
      if (o.maxCircuitDurationMs > 0) this.limit.duration = Math.ceil(o.maxCircuitDurationMs / 1000)
    }
  }

  get activeCircuits(): number {
    return this.init.stats.activeCircuits
  }

  async start(): Promise<void> {
    const o = this.init.options
    await this.init.node.handle(HOP_CODEC, (stream, conn) => this.onHop(stream, conn), {
      maxInboundStreams: o.maxInboundHopStreams,
      runOnLimitedConnection: true,
    })
    this.init.node.addEventListener('connection:close', this.onConnectionClose)
    this.sweeper = setInterval(() => this.reservations.sweep(), Math.min(o.reservationTtlMs, 60_000))
    this.sweeper.unref()
  }

  /** Stops accepting reservations and circuits; resolves when no circuit is left or after graceMs. */
  async drain(graceMs: number): Promise<void> {
    this.draining = true
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref())
    while (this.circuits.size > 0) {
      const left = await Promise.race([Promise.any([...this.circuits]).then(() => false), deadline.then(() => true)])
      if (left) break
    }
  }

  /** Ends every circuit and stops handling the hop protocol. */
  async stop(): Promise<void> {
    this.draining = true
    this.shutdown.abort()
    clearInterval(this.sweeper)
    this.init.node.removeEventListener('connection:close', this.onConnectionClose)
    await this.init.node.unhandle(HOP_CODEC)
    this.reservations.clear()
  }

  private readonly onConnectionClose = (evt: CustomEvent<Connection>): void => {
    if (this.reservations.remove(evt.detail.id)) {
      this.init.log.debug('reservation ended with its connection', {
        peer: evt.detail.remotePeer.toString(),
        connection: evt.detail.id,
        ageMs: Date.now() - evt.detail.timeline.open,
      })
    }
  }

  private async onHop(stream: Stream, conn: Connection): Promise<void> {
    const signal = AbortSignal.timeout(this.init.options.hopTimeoutMs)
    const pb = pbStream(stream, { maxDataLength: 4096 })
    const hop = pb.pb(HopMessageCodec)
    try {
      const req = await hop.read({ signal })
      if (req.type === HopType.RESERVE) await this.onReserve(hop, conn, signal)
      else if (req.type === HopType.CONNECT) await this.onConnect(hop, req, conn, signal)
      else await this.status(hop, Status.UNEXPECTED_MESSAGE, signal)
    } catch (err: unknown) {
      this.init.log.debug('hop stream failed', { peer: conn.remotePeer.toString(), err })
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  private async status(
    hop: { write(m: HopMessage, o?: { signal?: AbortSignal }): Promise<void> },
    status: StatusCode,
    signal: AbortSignal,
  ): Promise<void> {
    await hop.write({ type: HopType.STATUS, status }, { signal })
  }

  private denied(peer: string): boolean {
    return this.allow.size > 0 && !this.allow.has(peer)
  }

  private async onReserve(hop: HopPb, conn: Connection, signal: AbortSignal): Promise<void> {
    const peer = conn.remotePeer.toString()
    const ip = remoteIp(conn)
    const refuse = async (reason: RefusalReasonName, status: StatusCode): Promise<void> => {
      this.init.refuse(reason, { op: 'reserve', peer, ip })
      await this.status(hop, status, signal)
      await hop.unwrap().unwrap().close({ signal })
    }
    if (this.draining) {
      this.init.log.info('reservation refused: relay is shutting down', { peer, ip })
      await this.status(hop, Status.RESERVATION_REFUSED, signal)
      return
    }
    if (isRelayed(conn)) return refuse('PERMISSION_DENIED', Status.PERMISSION_DENIED)
    if (this.denied(peer)) return refuse('PERMISSION_DENIED', Status.PERMISSION_DENIED)
    if (!this.reserveRate.take(ip)) return refuse('RATE_LIMITED', Status.RESERVATION_REFUSED)
    const result = this.reservations.reserve(peer, ip, conn.id, conn)
    if (!result.ok) return refuse(result.reason, Status.RESERVATION_REFUSED)
    const expire = BigInt(Math.floor(result.slot.expiresAt / 1000))
    try {
      const node = this.init.node
      const addrs = node
        .getMultiaddrs()
        .filter((a) => !a.toString().includes('/p2p-circuit'))
        .map((a) => a.bytes)
      const voucher = await sealVoucher(this.init.privateKey, node.peerId, conn.remotePeer, expire)
      await hop.write(
        {
          type: HopType.STATUS,
          status: Status.OK,
          reservation: { expire, addrs, voucher },
          limit: this.limit,
        },
        { signal },
      )
      await hop.unwrap().unwrap().close({ signal })
    } catch (err: unknown) {
      if (!result.renewed) this.reservations.remove(conn.id)
      throw err
    }
    this.init.stats.totalReservations++
    this.init.log.debug(result.renewed ? 'reservation renewed' : 'reservation accepted', { peer, ip })
    // Reserving peers are pruned last should libp2p ever go over its connection limit.
    this.init.node.peerStore
      .merge(conn.remotePeer, { tags: { [RESERVATION_TAG]: { value: 100, ttl: this.init.options.reservationTtlMs } } })
      .catch((err: unknown) => this.init.log.debug('could not tag reserving peer', { peer, err }))
  }

  private async onConnect(hop: HopPb, req: HopMessage, conn: Connection, signal: AbortSignal): Promise<void> {
    const src = conn.remotePeer
    const ip = remoteIp(conn)
    const refuse = async (reason: RefusalReasonName, status: StatusCode, dst?: string): Promise<void> => {
      this.init.refuse(reason, { op: 'connect', peer: src.toString(), dst, ip })
      await this.status(hop, status, signal)
    }
    if (this.draining) {
      this.init.log.info('circuit refused: relay is shutting down', { peer: src.toString(), ip })
      await this.status(hop, Status.RESOURCE_LIMIT_EXCEEDED, signal)
      return
    }
    if (isRelayed(conn)) return refuse('PERMISSION_DENIED', Status.PERMISSION_DENIED)
    let dst: PeerId
    try {
      if (req.peer == null) throw new Error('no peer in CONNECT')
      dst = peerIdFromMultihash(Digest.decode(req.peer.id))
    } catch {
      await this.status(hop, Status.MALFORMED_MESSAGE, signal)
      return
    }
    const dstId = dst.toString()
    if (this.denied(src.toString()) || this.denied(dstId)) return refuse('PERMISSION_DENIED', Status.PERMISSION_DENIED, dstId)
    const slot = this.reservations.get(dstId)
    if (slot == null || slot.connection.status !== 'open') return refuse('NO_RESERVATION', Status.NO_RESERVATION, dstId)

    let stop: Stream
    try {
      stop = await slot.connection.newStream(STOP_CODEC, {
        maxOutboundStreams: this.init.options.maxOutboundStopStreams,
        runOnLimitedConnection: true,
        signal,
      })
    } catch (err: unknown) {
      this.init.log.debug('could not open stop stream', { dst: dstId, err })
      return refuse('CONNECTION_FAILED', Status.CONNECTION_FAILED, dstId)
    }
    const stopPb = pbStream(stop, { maxDataLength: 4096 }).pb(StopMessageCodec)
    let accepted = false
    try {
      await stopPb.write({ type: StopType.CONNECT, peer: { id: src.toMultihash().bytes, addrs: [] }, limit: this.limit }, { signal })
      const res = await stopPb.read({ signal })
      accepted = res.type === StopType.STATUS && res.status === Status.OK
    } catch (err: unknown) {
      this.init.log.debug('stop handshake failed', { dst: dstId, err })
    }
    if (!accepted) {
      stop.abort(new Error('stop handshake failed'))
      return refuse('CONNECTION_FAILED', Status.CONNECTION_FAILED, dstId)
    }
    await hop.write({ type: HopType.STATUS, status: Status.OK, limit: this.limit }, { signal })

    const stats = this.init.stats
    stats.totalCircuits++
    stats.activeCircuits++
    const startedAt = Date.now()
    const fields = { src: src.toString(), dst: dstId, ip }
    this.init.log.debug('circuit opened', fields)
    const circuit = splice(hop.unwrap().unwrap(), stopPb.unwrap().unwrap(), {
      maxBytes: this.init.options.maxCircuitBytes,
      maxDurationMs: this.init.options.maxCircuitDurationMs,
      signal: this.shutdown.signal,
      onBytes: (direction, n) => {
        if (direction === 'fromInitiator') stats.bytesFromInitiator += BigInt(n)
        else stats.bytesToInitiator += BigInt(n)
      },
    }).then((end) => {
      stats.activeCircuits--
      this.circuits.delete(circuit)
      const level = end === 'closed' ? 'debug' : 'info'
      this.init.log[level]('circuit closed', { ...fields, end, durationMs: Date.now() - startedAt })
    })
    this.circuits.add(circuit)
  }
}

type HopPb = ReturnType<ReturnType<typeof pbStream<Stream>>['pb']> & {
  write(m: HopMessage, o?: { signal?: AbortSignal }): Promise<void>
}
