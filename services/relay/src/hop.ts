import type { Connection, Libp2p, MessageStream, PeerId, PrivateKey, Record as SignedRecord, Stream } from '@libp2p/interface'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { pbStream } from '@libp2p/utils'
import type { Logger } from '@stargate/shared/log'
import * as Digest from 'multiformats/hashes/digest'
import { CircuitAdmission, type CircuitLimits, type CircuitPlaces } from './circuit-limits.ts'
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
import { ipKey } from './ip-key.ts'
import { RateLimiter } from './rate-limiter.ts'
import { ReservationStore, type Slot } from './reservations.ts'
import { CircuitEndError, splice } from './splice.ts'
import type { RefusalReasonName, RelayStats } from './stats.ts'

const RESERVATION_TAG = 'stargate-relay-reservation'

/** What the hop server needs of the relay's options. */
export interface HopOptions extends CircuitLimits {
  maxReservations: number
  reservationTtlMs: number
  maxReservationsPerPeer: number
  maxReservationsPerIp: number
  maxReservationsPerIpPerSecond: number
  maxCircuitBytes: number
  maxCircuitDurationMs: number
  stopTimeoutMs: number
  maxStopFailures: number
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
  private readonly circuitAdmission: CircuitAdmission
  private readonly shutdown = new AbortController()
  private readonly circuits = new Set<Promise<unknown>>()
  /**
   * Open circuits by the id of each connection they run through: the holder's (their STOP stream) as 'target',
   * the initiator's (their HOP stream) as 'initiator'; each circuit is ended with either connection.
   */
  private readonly circuitsOn = new Map<string, Map<AbortController, 'target' | 'initiator'>>()
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
      maxStopFailures: o.maxStopFailures,
    })
    this.circuitAdmission = new CircuitAdmission(o)
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

  /**
   * A connection closed (its peer left, was killed or lost its link): its reservation ends, and so does every
   * circuit through it, at once and on both sides, so the peer at the other end of each sees its relayed
   * connection fail instead of sending into a circuit that nobody reads.
   */
  private readonly onConnectionClose = (evt: CustomEvent<Connection>): void => {
    const conn = evt.detail
    const reserved = this.reservations.remove(conn.id)
    const circuits = this.circuitsOn.get(conn.id)
    this.circuitsOn.delete(conn.id)
    for (const [ender, side] of circuits ?? []) {
      ender.abort(
        side === 'target'
          ? new CircuitEndError('target-gone', "the reservation holder's connection closed")
          : new CircuitEndError('initiator-gone', "the initiator's connection closed"),
      )
    }
    if (reserved || circuits != null) {
      this.init.log.debug('connection closed', {
        peer: conn.remotePeer.toString(),
        connection: conn.id,
        ageMs: Date.now() - conn.timeline.open,
        reservationEnded: reserved,
        circuitsEnded: circuits?.size ?? 0,
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
    const key = ipKey(ip)
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
    if (!this.reserveRate.take(key)) return refuse('RATE_LIMITED', Status.RESERVATION_REFUSED)
    const result = this.reservations.reserve(peer, key, conn.id, conn)
    if (!result.ok) return refuse(result.reason, Status.RESERVATION_REFUSED)
    if (result.replaced != null) this.replaced(result.replaced, conn)
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
    const refuse = async (reason: RefusalReasonName, status: StatusCode, fields: Record<string, unknown> = {}): Promise<void> => {
      this.init.refuse(reason, { op: 'connect', peer: src.toString(), ip, ...fields })
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
    if (this.denied(src.toString()) || this.denied(dstId)) return refuse('PERMISSION_DENIED', Status.PERMISSION_DENIED, { dst: dstId })
    const key = ipKey(ip)
    if (!this.circuitAdmission.sourceAllowed(key)) {
      return refuse('SOURCE_RATE_LIMITED', Status.RESOURCE_LIMIT_EXCEEDED, { dst: dstId, limit: 'max-circuits-per-ip-per-second' })
    }
    const slot = this.reservations.get(dstId)
    if (slot == null || slot.connection.status !== 'open') return refuse('NO_RESERVATION', Status.NO_RESERVATION, { dst: dstId })
    const admitted = this.circuitAdmission.open({ peer: src.toString(), ipKey: key }, dstId)
    if (!admitted.ok) return refuse(admitted.reason, Status.RESOURCE_LIMIT_EXCEEDED, { dst: dstId, limit: admitted.limit })
    let opened = false
    try {
      const stop = await this.stopHandshake(slot, src, dstId)
      if (typeof stop === 'string') return await refuse(stop, Status.CONNECTION_FAILED, { dst: dstId })
      try {
        await hop.write({ type: HopType.STATUS, status: Status.OK, limit: this.limit }, { signal })
      } catch (err: unknown) {
        stop.abort(err instanceof Error ? err : new Error(String(err)))
        throw err
      }
      this.startCircuit(hop.unwrap().unwrap(), stop, { src: src.toString(), dst: dstId, ip }, [conn.id, slot.connectionId], admitted.places)
      opened = true
    } finally {
      if (!opened) admitted.places.release()
    }
  }

  /**
   * STOP with the reservation holder, bounded by stopTimeoutMs. Returns the stop stream once the holder accepted,
   * or the refusal: STOP_TIMEOUT when it did not answer in time (counted against the reservation, dropped after
   * maxStopFailures in a row), CONNECTION_FAILED when it refused or the stream failed.
   */
  private async stopHandshake(
    slot: Slot<Connection>,
    src: PeerId,
    dstId: string,
  ): Promise<MessageStream | 'STOP_TIMEOUT' | 'CONNECTION_FAILED'> {
    const o = this.init.options
    const bound = new AbortController()
    const timer = setTimeout(
      () => bound.abort(new Error(`the reservation holder did not answer STOP within ${o.stopTimeoutMs} ms`)),
      o.stopTimeoutMs,
    )
    timer.unref()
    const signal = AbortSignal.any([bound.signal, this.shutdown.signal])
    let stream: Stream | undefined
    try {
      stream = await slot.connection.newStream(STOP_CODEC, {
        maxOutboundStreams: o.maxOutboundStopStreams,
        runOnLimitedConnection: true,
        signal,
      })
      const stopPb = pbStream(stream, { maxDataLength: 4096 }).pb(StopMessageCodec)
      await stopPb.write({ type: StopType.CONNECT, peer: { id: src.toMultihash().bytes, addrs: [] }, limit: this.limit }, { signal })
      const res = await stopPb.read({ signal })
      this.reservations.stopAnswered(slot.connectionId)
      if (res.type === StopType.STATUS && res.status === Status.OK) return stopPb.unwrap().unwrap()
      this.init.log.debug('stop refused by the reservation holder', { dst: dstId, status: res.status })
      stream.abort(new Error('stop refused'))
      return 'CONNECTION_FAILED'
    } catch (err: unknown) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      if (!bound.signal.aborted) {
        this.init.log.debug('stop handshake failed', { dst: dstId, err })
        return 'CONNECTION_FAILED'
      }
      const dropped = this.reservations.stopFailed(slot.connectionId)
      if (dropped != null) this.dropUnresponsive(dropped)
      return 'STOP_TIMEOUT'
    } finally {
      clearTimeout(timer)
    }
  }

  /** Splices an accepted circuit and keeps its bookkeeping until it ends. */
  private startCircuit(
    initiator: MessageStream,
    target: MessageStream,
    fields: { src: string; dst: string; ip: string },
    [initiatorConnectionId, holderConnectionId]: [string, string],
    places: CircuitPlaces,
  ): void {
    const stats = this.init.stats
    stats.totalCircuits++
    stats.activeCircuits++
    const startedAt = Date.now()
    const ender = new AbortController()
    const through: Array<[string, 'target' | 'initiator']> = [
      [holderConnectionId, 'target'],
      [initiatorConnectionId, 'initiator'],
    ]
    for (const [id, side] of through) {
      let enders = this.circuitsOn.get(id)
      if (enders == null) {
        enders = new Map()
        this.circuitsOn.set(id, enders)
      }
      enders.set(ender, side)
    }
    this.init.log.debug('circuit opened', fields)
    const circuit = splice(initiator, target, {
      maxBytes: this.init.options.maxCircuitBytes,
      maxDurationMs: this.init.options.maxCircuitDurationMs,
      signal: AbortSignal.any([this.shutdown.signal, ender.signal]),
      onBytes: (direction, n) => {
        if (direction === 'fromInitiator') stats.bytesFromInitiator += BigInt(n)
        else stats.bytesToInitiator += BigInt(n)
      },
    }).then((end) => {
      stats.activeCircuits--
      stats.circuitEnded(end)
      places.release()
      this.circuits.delete(circuit)
      for (const [id] of through) {
        const enders = this.circuitsOn.get(id)
        enders?.delete(ender)
        if (enders?.size === 0) this.circuitsOn.delete(id)
      }
      const level = end === 'closed' ? 'debug' : 'info'
      this.init.log[level]('circuit closed', { ...fields, end, durationMs: Date.now() - startedAt })
    })
    this.circuits.add(circuit)
  }

  /**
   * A peer's new reservation replaced its reservation on an older connection: the peer is reached through the
   * new connection from now on, and circuits to the old one are ended (the peer reconnected, so they are most
   * likely dead; their initiators dial again and reach the new connection).
   */
  private replaced(old: Slot<Connection>, now: Connection): void {
    this.init.stats.reservationsReplaced++
    const enders = [...(this.circuitsOn.get(old.connectionId) ?? [])].flatMap(([e, side]) => (side === 'target' ? [e] : []))
    for (const e of enders) e.abort(new CircuitEndError('replaced', 'the reservation holder reconnected'))
    this.init.log.info('reservation replaced', {
      peer: old.peer,
      ip: remoteIp(now),
      oldIp: remoteIp(old.connection),
      oldConnection: old.connectionId,
      connection: now.id,
      circuitsEnded: enders.length,
    })
  }

  /** Drops the reservation of a holder that stopped answering STOP, and closes its connection so it notices. */
  private dropUnresponsive(slot: Slot<Connection>): void {
    this.init.stats.reservationsDropped++
    this.init.log.warn('reservation dropped: the holder leaves STOP unanswered', {
      peer: slot.peer,
      ip: remoteIp(slot.connection),
      connection: slot.connectionId,
      failures: slot.stopFailures,
    })
    slot.connection.abort(new Error(`the reservation holder left ${slot.stopFailures} STOP handshakes in a row unanswered`))
  }
}

type HopPb = ReturnType<ReturnType<typeof pbStream<Stream>>['pb']> & {
  write(m: HopMessage, o?: { signal?: AbortSignal }): Promise<void>
}
