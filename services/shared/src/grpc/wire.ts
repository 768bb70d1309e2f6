/**
 * gRPC over HTTP/2 on the wire (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
 * content types, grpc-timeout, percent-encoded grpc-message, length-prefixed messages and their
 * compression. Pure functions and one incremental parser; no sockets.
 */
import { promisify } from 'node:util'
import { gunzip, inflate } from 'node:zlib'
import { Code, StargateError } from '../errors.ts'

/** grpc-encoding values this server decompresses (besides identity). */
export const GRPC_ENCODINGS = ['gzip', 'deflate'] as const
/** Sent as grpc-accept-encoding. */
export const GRPC_ACCEPT_ENCODING = `identity,${GRPC_ENCODINGS.join(',')}`

const GRPC_CONTENT_TYPE = /^application\/grpc(?:\+([^;\s]+))?\s*(?:;|$)/i

/**
 * The sub-type of a gRPC content type: "proto" for application/grpc and application/grpc+proto, "json" for
 * application/grpc+json, the given suffix otherwise; undefined when it is not gRPC (e.g. application/grpc-web).
 */
export function grpcSubtype(contentType: string | undefined): string | undefined {
  if (contentType == null) return undefined
  const m = GRPC_CONTENT_TYPE.exec(contentType)
  if (m == null) return undefined
  return m[1] == null ? 'proto' : m[1].toLowerCase()
}

const TIMEOUT = /^(\d{1,8})([HMSmun])$/
const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 }

/** Parses grpc-timeout ("100m", "5S" …) into milliseconds; throws INVALID_ARGUMENT on a malformed value. */
export function parseGrpcTimeout(value: string): number {
  const m = TIMEOUT.exec(value)
  if (m == null) {
    throw new StargateError(
      Code.InvalidArgument,
      `malformed grpc-timeout header ${JSON.stringify(value)}: expected 1 to 8 digits and a unit (H, M, S, m, u or n)`,
    )
  }
  return Number(m[1]) * (TIMEOUT_UNIT_MS[m[2] as string] as number)
}

/** A grpc-timeout value for ms milliseconds (rounded up to whole ms, then to the unit that fits 8 digits). */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms))
  if (whole < 100_000_000) return `${whole}m`
  const s = Math.ceil(whole / 1000)
  if (s < 100_000_000) return `${s}S`
  const min = Math.ceil(s / 60)
  if (min < 100_000_000) return `${min}M`
  return `${Math.min(99_999_999, Math.ceil(min / 60))}H`
}

const PLAIN_MESSAGE = /^[\x20-\x24\x26-\x7e]*$/
const ESCAPE = /^[0-9a-fA-F]{2}$/

/** Percent-encodes a grpc-message: every byte outside 0x20-0x7E, and '%', becomes %XX (of its UTF-8). */
export function encodeGrpcMessage(message: string): string {
  if (PLAIN_MESSAGE.test(message)) return message
  let out = ''
  for (const byte of Buffer.from(message, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/**
 * Decodes a percent-encoded grpc-message byte by byte: valid escapes are decoded, a malformed one is kept
 * as it is (so one bad escape never leaves the rest encoded), and the bytes are read as UTF-8.
 */
export function decodeGrpcMessage(value: string): string {
  if (!value.includes('%')) return value
  const bytes: number[] = []
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c === 0x25 && i + 2 < value.length && ESCAPE.test(value.slice(i + 1, i + 3))) {
      bytes.push(Number.parseInt(value.slice(i + 1, i + 3), 16))
      i += 2
    } else {
      bytes.push(c & 0xff)
    }
  }
  return Buffer.from(bytes).toString('utf8')
}

/** One length-prefixed message. */
export interface GrpcFrame {
  /** The compressed flag: the message is compressed with the stream's grpc-encoding. */
  compressed: boolean
  data: Uint8Array
}

/** Bytes of a message prefix: the flag byte, then the message length as 4 bytes big-endian. */
export const FRAME_PREFIX_BYTES = 5

/**
 * Prefixes a message with its flag byte and 4-byte big-endian length: the one place the prefix is built.
 * The flag is 0 for a message, 1 when compressed; gRPC-Web trailers use 0x80 and Connect's end-stream
 * message 0x02 in the same framing.
 */
export function encodeFrame(message: Uint8Array, flag = 0): Buffer {
  const out = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + message.byteLength)
  out[0] = flag
  out.writeUInt32BE(message.byteLength, 1)
  out.set(message, FRAME_PREFIX_BYTES)
  return out
}

/**
 * The message length a prefix declares (unsigned, up to 2^32 − 1), the prefix starting at bytes[at]:
 * the one place a prefix's length is read.
 */
export function frameLength(bytes: Uint8Array, at = 0): number {
  return bytes[at + 1]! * 0x1000000 + (bytes[at + 2]! << 16) + (bytes[at + 3]! << 8) + bytes[at + 4]!
}

/**
 * Splits a byte stream into length-prefixed messages. A message that declares more than maxBytes is refused
 * as soon as its 5-byte prefix arrives (RESOURCE_EXHAUSTED), so it is never buffered.
 */
export class FrameParser {
  private readonly maxBytes: number
  private readonly chunks: Buffer[] = []
  private buffered = 0
  /** Length of the message being read, or -1 while waiting for a prefix. */
  private length = -1
  private compressed = false

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** True while part of a message (or of its prefix) has been read. */
  get partial(): boolean {
    return this.buffered > 0 || this.length >= 0
  }

  /** Adds bytes; returns the messages they complete (views of the chunks where a message lies in one). */
  push(chunk: Uint8Array): GrpcFrame[] {
    if (chunk.byteLength > 0) {
      this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
      this.buffered += chunk.byteLength
    }
    const out: GrpcFrame[] = []
    for (;;) {
      if (this.length < 0) {
        if (this.buffered < FRAME_PREFIX_BYTES) break
        const prefix = this.take(FRAME_PREFIX_BYTES)
        const flag = prefix[0] as number
        if (flag > 1) throw new StargateError(Code.Internal, `invalid gRPC message prefix: flags 0x${flag.toString(16)}`)
        const length = frameLength(prefix)
        if (length > this.maxBytes) {
          throw new StargateError(
            Code.ResourceExhausted,
            `received a message of ${length} bytes, more than the maximum of ${this.maxBytes} bytes`,
          )
        }
        this.compressed = flag === 1
        this.length = length
      }
      if (this.buffered < this.length) break
      out.push({ compressed: this.compressed, data: this.take(this.length) })
      this.length = -1
    }
    return out
  }

  /** Removes n buffered bytes (n <= buffered); no copy when they lie in one chunk. */
  private take(n: number): Buffer {
    this.buffered -= n
    const first = this.chunks[0]
    if (n === 0) return Buffer.alloc(0)
    if (first != null && first.length >= n) {
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    // Many small chunks (a peer may send tiny DATA frames): copy them out, then drop them in one splice.
    const out = Buffer.allocUnsafe(n)
    let at = 0
    let i = 0
    while (at < n) {
      const c = this.chunks[i] as Buffer
      const used = Math.min(c.length, n - at)
      c.copy(out, at, 0, used)
      at += used
      if (used === c.length) i++
      else this.chunks[i] = c.subarray(used)
    }
    this.chunks.splice(0, i)
    return out
  }
}

const gunzipAsync = promisify(gunzip)
const inflateAsync = promisify(inflate)

/**
 * Decompresses one message (off the event loop), refusing output beyond maxBytes (RESOURCE_EXHAUSTED) and
 * data that does not decompress (INTERNAL, as the gRPC spec asks).
 */
export async function decompress(encoding: string, data: Uint8Array, maxBytes: number): Promise<Uint8Array> {
  const fn = encoding === 'gzip' ? gunzipAsync : encoding === 'deflate' ? inflateAsync : undefined
  if (fn == null) throw new StargateError(Code.Internal, `a compressed message arrived but grpc-encoding is "${encoding}"`)
  try {
    return await fn(data, { maxOutputLength: maxBytes })
  } catch (err: unknown) {
    if ((err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new StargateError(Code.ResourceExhausted, `a ${encoding} message decompresses to more than the maximum of ${maxBytes} bytes`)
    }
    throw new StargateError(Code.Internal, `could not decompress a ${encoding} message: ${(err as Error).message}`, { cause: err })
  }
}
