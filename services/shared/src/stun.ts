import { isIPv4, isIPv6 } from 'node:net'

/**
 * The part of STUN (RFC 5389) that NAT detection needs: Binding Request / Binding Success Response
 * with XOR-MAPPED-ADDRESS (and MAPPED-ADDRESS for RFC 3489 clients). No MESSAGE-INTEGRITY, no FINGERPRINT.
 * Used by the relay's responder and the gateway's detector.
 */

export const STUN_MAGIC_COOKIE = 0x2112a442
export const STUN_HEADER_BYTES = 20
export const STUN_BINDING_REQUEST = 0x0001
export const STUN_BINDING_SUCCESS = 0x0101
export const STUN_ATTR_MAPPED_ADDRESS = 0x0001
export const STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020
export const STUN_ATTR_SOFTWARE = 0x8022

/** An address as seen by a STUN server. */
export interface StunAddress {
  address: string
  port: number
}

/** A decoded STUN message. */
export interface StunMessage {
  type: number
  /** 12 bytes. */
  transactionId: Uint8Array
  attributes: Array<{ type: number; value: Uint8Array }>
}

/** A random 96-bit transaction id. */
export function newTransactionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(12))
}

function header(type: number, bodyLength: number, transactionId: Uint8Array): Buffer {
  if (transactionId.length !== 12) throw new RangeError('STUN transaction id must be 12 bytes')
  const buf = Buffer.alloc(STUN_HEADER_BYTES + bodyLength)
  buf.writeUInt16BE(type, 0)
  buf.writeUInt16BE(bodyLength, 2)
  buf.writeUInt32BE(STUN_MAGIC_COOKIE, 4)
  buf.set(transactionId, 8)
  return buf
}

/** A Binding Request without attributes. */
export function encodeBindingRequest(transactionId: Uint8Array): Buffer {
  return header(STUN_BINDING_REQUEST, 0, transactionId)
}

function addressBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number))
  if (!isIPv6(address)) throw new RangeError(`not an IP address: ${address}`)
  // Expand "::" and an embedded IPv4 tail into 8 groups.
  let s = address
  const v4 = s.match(/(\d+\.\d+\.\d+\.\d+)$/)
  if (v4 != null) {
    const b = v4[1]!.split('.').map(Number)
    s = `${s.slice(0, -v4[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined]
  const h = head === '' ? [] : head!.split(':')
  const t = tail == null || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => {
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2)
  })
  return out
}

function bytesToAddress(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.')
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16))
  // Canonical-enough form: compress the longest run of zero groups.
  let best = -1
  let bestLen = 0
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > bestLen && j - i > 1) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  if (best < 0) return groups.join(':')
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`
}

/** The XOR mask for an address of `length` bytes: the magic cookie, then (IPv6) the transaction id. */
function xorMask(transactionId: Uint8Array, length: number): Uint8Array {
  const mask = new Uint8Array(16)
  new DataView(mask.buffer).setUint32(0, STUN_MAGIC_COOKIE)
  mask.set(transactionId, 4)
  return mask.subarray(0, length)
}

function addressAttribute(addr: StunAddress, xor: Uint8Array | undefined): Buffer {
  const ip = addressBytes(addr.address)
  const value = Buffer.alloc(4 + ip.length)
  value.writeUInt8(0, 0)
  value.writeUInt8(ip.length === 4 ? 0x01 : 0x02, 1)
  if (xor == null) {
    value.writeUInt16BE(addr.port, 2)
    value.set(ip, 4)
  } else {
    value.writeUInt16BE(addr.port ^ (STUN_MAGIC_COOKIE >>> 16), 2)
    const mask = xorMask(xor, ip.length)
    for (let i = 0; i < ip.length; i++) value[4 + i] = ip[i]! ^ mask[i]!
  }
  return value
}

function decodeAddressAttribute(value: Uint8Array, xor: Uint8Array | undefined): StunAddress | undefined {
  if (value.length < 4) return undefined
  const family = value[1]
  const len = family === 0x01 ? 4 : family === 0x02 ? 16 : 0
  if (len === 0 || value.length !== 4 + len) return undefined
  let port = (value[2]! << 8) | value[3]!
  const ip = Uint8Array.from(value.subarray(4))
  if (xor != null) {
    port ^= STUN_MAGIC_COOKIE >>> 16
    const mask = xorMask(xor, len)
    for (let i = 0; i < len; i++) ip[i] = ip[i]! ^ mask[i]!
  }
  return { address: bytesToAddress(ip), port }
}

/** Encodes a message from its parts, padding each attribute to 4 bytes. */
export function encodeStunMessage(msg: StunMessage): Buffer {
  const body = msg.attributes.map((a) => {
    const padded = Buffer.alloc(4 + Math.ceil(a.value.length / 4) * 4)
    padded.writeUInt16BE(a.type, 0)
    padded.writeUInt16BE(a.value.length, 2)
    padded.set(a.value, 4)
    return padded
  })
  const length = body.reduce((n, b) => n + b.length, 0)
  const buf = header(msg.type, length, msg.transactionId)
  let off = STUN_HEADER_BYTES
  for (const b of body) {
    buf.set(b, off)
    off += b.length
  }
  return buf
}

/** A Binding Success Response telling the client where it was seen. */
export function encodeBindingSuccess(transactionId: Uint8Array, mapped: StunAddress, software?: string): Buffer {
  const attributes = [
    { type: STUN_ATTR_XOR_MAPPED_ADDRESS, value: addressAttribute(mapped, transactionId) },
    { type: STUN_ATTR_MAPPED_ADDRESS, value: addressAttribute(mapped, undefined) },
  ]
  if (software != null) attributes.push({ type: STUN_ATTR_SOFTWARE, value: Buffer.from(software, 'utf8') })
  return encodeStunMessage({ type: STUN_BINDING_SUCCESS, transactionId, attributes })
}

/**
 * Decodes a STUN message; undefined for anything that is not well-formed STUN (wrong leading bits,
 * wrong magic cookie, length not matching the datagram, truncated or misaligned attributes).
 */
export function decodeStunMessage(buf: Uint8Array): StunMessage | undefined {
  if (buf.length < STUN_HEADER_BYTES) return undefined
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const type = view.getUint16(0)
  const length = view.getUint16(2)
  if ((type & 0xc000) !== 0) return undefined
  if (view.getUint32(4) !== STUN_MAGIC_COOKIE) return undefined
  if (length % 4 !== 0 || STUN_HEADER_BYTES + length !== buf.length) return undefined
  const attributes: StunMessage['attributes'] = []
  let off = STUN_HEADER_BYTES
  while (off < buf.length) {
    if (off + 4 > buf.length) return undefined
    const at = view.getUint16(off)
    const len = view.getUint16(off + 2)
    const end = off + 4 + len
    if (end > buf.length) return undefined
    attributes.push({ type: at, value: buf.slice(off + 4, end) })
    off = off + 4 + Math.ceil(len / 4) * 4
  }
  if (off !== buf.length) return undefined
  return { type, transactionId: buf.slice(8, 20), attributes }
}

/** True for a well-formed Binding Request. */
export function isBindingRequest(msg: StunMessage): boolean {
  return msg.type === STUN_BINDING_REQUEST
}

/**
 * The mapped address of a Binding Success Response: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS;
 * undefined when the message is not a success response or carries neither.
 */
export function mappedAddressOf(msg: StunMessage): StunAddress | undefined {
  if (msg.type !== STUN_BINDING_SUCCESS) return undefined
  const xor = msg.attributes.find((a) => a.type === STUN_ATTR_XOR_MAPPED_ADDRESS)
  if (xor != null) return decodeAddressAttribute(xor.value, msg.transactionId)
  const plain = msg.attributes.find((a) => a.type === STUN_ATTR_MAPPED_ADDRESS)
  return plain != null ? decodeAddressAttribute(plain.value, undefined) : undefined
}

/** Same 12 bytes. */
export function sameTransactionId(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}
