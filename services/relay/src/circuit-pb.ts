/**
 * The Circuit Relay v2 wire messages (libp2p specs, relay/circuit-v2.md, circuit.proto), encoded by hand with
 * protobuf-es's wire primitives: the relay speaks the hop and stop protocols itself so it can count and limit.
 * Every field is `optional` in the spec's proto3 file, so a field is written exactly when it is set.
 */
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire'

export const HOP_CODEC = '/libp2p/circuit/relay/0.2.0/hop'
export const STOP_CODEC = '/libp2p/circuit/relay/0.2.0/stop'

/** HopMessage.Type */
export const HopType = { RESERVE: 0, CONNECT: 1, STATUS: 2 } as const
/** StopMessage.Type */
export const StopType = { CONNECT: 0, STATUS: 1 } as const
/** Status (spec values). */
export const Status = {
  OK: 100,
  RESERVATION_REFUSED: 200,
  RESOURCE_LIMIT_EXCEEDED: 201,
  PERMISSION_DENIED: 202,
  CONNECTION_FAILED: 203,
  NO_RESERVATION: 204,
  MALFORMED_MESSAGE: 400,
  UNEXPECTED_MESSAGE: 401,
} as const
export type StatusCode = (typeof Status)[keyof typeof Status]

export interface Peer {
  id: Uint8Array
  addrs: Uint8Array[]
}

/** Limit: duration in seconds, data in bytes; an absent field means no limit. */
export interface Limit {
  duration?: number
  data?: bigint
}

export interface Reservation {
  /** Unix time (seconds) the reservation expires. */
  expire: bigint
  addrs: Uint8Array[]
  /** A marshaled signed Envelope holding a ReservationVoucher. */
  voucher?: Uint8Array
}

export interface HopMessage {
  type?: number
  peer?: Peer
  reservation?: Reservation
  limit?: Limit
  status?: number
}

export interface StopMessage {
  type?: number
  peer?: Peer
  limit?: Limit
  status?: number
}

export interface ReservationVoucher {
  relay: Uint8Array
  peer: Uint8Array
  expiration: bigint
}

/** A Uint8Array or a Uint8ArrayList (structurally: several versions of that package coexist). */
type Input = Uint8Array | { subarray(): Uint8Array }

function bytesOf(input: Input): Uint8Array {
  return input instanceof Uint8Array ? input : input.subarray()
}

function writePeer(w: BinaryWriter, p: Peer): void {
  w.uint32(10).bytes(p.id)
  for (const a of p.addrs) w.uint32(18).bytes(a)
}

function readPeer(r: BinaryReader, end: number): Peer {
  const p: Peer = { id: new Uint8Array(), addrs: [] }
  while (r.pos < end) {
    const [no, wt] = r.tag()
    if (no === 1) p.id = r.bytes()
    else if (no === 2) p.addrs.push(r.bytes())
    else r.skip(wt)
  }
  return p
}

function writeLimit(w: BinaryWriter, l: Limit): void {
  if (l.duration != null) w.uint32(8).uint32(l.duration)
  if (l.data != null) w.uint32(16).uint64(l.data)
}

function readLimit(r: BinaryReader, end: number): Limit {
  const l: Limit = {}
  while (r.pos < end) {
    const [no, wt] = r.tag()
    if (no === 1 && wt === WireType.Varint) l.duration = r.uint32()
    else if (no === 2 && wt === WireType.Varint) l.data = BigInt(r.uint64())
    else r.skip(wt)
  }
  return l
}

function writeReservation(w: BinaryWriter, v: Reservation): void {
  w.uint32(8).uint64(v.expire)
  for (const a of v.addrs) w.uint32(18).bytes(a)
  if (v.voucher != null) w.uint32(26).bytes(v.voucher)
}

function readReservation(r: BinaryReader, end: number): Reservation {
  const v: Reservation = { expire: 0n, addrs: [] }
  while (r.pos < end) {
    const [no, wt] = r.tag()
    if (no === 1 && wt === WireType.Varint) v.expire = BigInt(r.uint64())
    else if (no === 2) v.addrs.push(r.bytes())
    else if (no === 3) v.voucher = r.bytes()
    else r.skip(wt)
  }
  return v
}

function sub(w: BinaryWriter, tag: number, body: (w: BinaryWriter) => void): void {
  w.uint32(tag).fork()
  body(w)
  w.join()
}

function subEnd(r: BinaryReader): number {
  const len = r.uint32()
  return r.pos + len
}

/** HopMessage codec, shaped for @libp2p/utils pbStream. */
export const HopMessageCodec = {
  encode(m: HopMessage): Uint8Array {
    const w = new BinaryWriter()
    if (m.type != null) w.uint32(8).int32(m.type)
    if (m.peer != null) sub(w, 18, (x) => writePeer(x, m.peer!))
    if (m.reservation != null) sub(w, 26, (x) => writeReservation(x, m.reservation!))
    if (m.limit != null) sub(w, 34, (x) => writeLimit(x, m.limit!))
    if (m.status != null) w.uint32(40).int32(m.status)
    return w.finish()
  },
  decode(input: Input): HopMessage {
    const r = new BinaryReader(bytesOf(input))
    const m: HopMessage = {}
    while (r.pos < r.len) {
      const [no, wt] = r.tag()
      if (no === 1 && wt === WireType.Varint) m.type = r.int32()
      else if (no === 2 && wt === WireType.LengthDelimited) m.peer = readPeer(r, subEnd(r))
      else if (no === 3 && wt === WireType.LengthDelimited) m.reservation = readReservation(r, subEnd(r))
      else if (no === 4 && wt === WireType.LengthDelimited) m.limit = readLimit(r, subEnd(r))
      else if (no === 5 && wt === WireType.Varint) m.status = r.int32()
      else r.skip(wt)
    }
    return m
  },
}

/** StopMessage codec, shaped for @libp2p/utils pbStream. */
export const StopMessageCodec = {
  encode(m: StopMessage): Uint8Array {
    const w = new BinaryWriter()
    if (m.type != null) w.uint32(8).int32(m.type)
    if (m.peer != null) sub(w, 18, (x) => writePeer(x, m.peer!))
    if (m.limit != null) sub(w, 26, (x) => writeLimit(x, m.limit!))
    if (m.status != null) w.uint32(32).int32(m.status)
    return w.finish()
  },
  decode(input: Input): StopMessage {
    const r = new BinaryReader(bytesOf(input))
    const m: StopMessage = {}
    while (r.pos < r.len) {
      const [no, wt] = r.tag()
      if (no === 1 && wt === WireType.Varint) m.type = r.int32()
      else if (no === 2 && wt === WireType.LengthDelimited) m.peer = readPeer(r, subEnd(r))
      else if (no === 3 && wt === WireType.LengthDelimited) m.limit = readLimit(r, subEnd(r))
      else if (no === 4 && wt === WireType.Varint) m.status = r.int32()
      else r.skip(wt)
    }
    return m
  },
}

/** ReservationVoucher, the payload of the signed envelope in Reservation.voucher. */
export const ReservationVoucherCodec = {
  encode(v: ReservationVoucher): Uint8Array {
    return new BinaryWriter().uint32(10).bytes(v.relay).uint32(18).bytes(v.peer).uint32(24).uint64(v.expiration).finish()
  },
  decode(input: Input): ReservationVoucher {
    const r = new BinaryReader(bytesOf(input))
    const v: ReservationVoucher = { relay: new Uint8Array(), peer: new Uint8Array(), expiration: 0n }
    while (r.pos < r.len) {
      const [no, wt] = r.tag()
      if (no === 1) v.relay = r.bytes()
      else if (no === 2) v.peer = r.bytes()
      else if (no === 3 && wt === WireType.Varint) v.expiration = BigInt(r.uint64())
      else r.skip(wt)
    }
    return v
  },
}
