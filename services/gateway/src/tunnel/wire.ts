import { constants as h2 } from 'node:http2'
import { Code } from '@stargate/shared/errors'
import type { MetadataEntry } from '@stargate/shared/gen/envelope'
import { FRAME_PREFIX_BYTES, frameLength } from '@stargate/shared/grpc/wire'
import { metadataEntry } from './frames.ts'

/**
 * gRPC over HTTP/2 as the tunnel bridges need it (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
 * which headers cross a gateway, HTTP and RST_STREAM codes as gRPC statuses, and a scanner of length-prefixed
 * message boundaries. Messages themselves are never decoded. The grpc-timeout and grpc-message encodings are
 * the API server's (@stargate/shared/grpc/wire).
 */

/** The request header naming the peer a tunnelled call goes to (it beats --route and discovery). */
export const PEER_HEADER = 'stargate-peer'

/**
 * Response headers the caller gateway adds to a tunnelled call's response headers: the peer that answered
 * (PEER_HEADER) and the tier of the link, as the Tier enum value's name (TIER_RELAY). The callee's own
 * stargate-* headers never cross, so these are the caller gateway's.
 */
export const TIER_HEADER = 'stargate-tier'

/**
 * The request header carrying a tunnelled call's idempotency key: the callee runs the call at most once per
 * caller and key, so the call may be retried on another tier even after its request left.
 */
export const IDEMPOTENCY_KEY_HEADER = 'stargate-idempotency-key'

/**
 * Headers that never cross a gateway: HTTP/2 connection-specific ones, those the tunnel carries in fields
 * of its own (grpc-timeout in StreamOpen.timeout, grpc-status and grpc-message in StreamClose), and
 * content-length (meaningless for a stream of messages).
 */
const NOT_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'transfer-encoding',
  'upgrade',
  'te',
  'host',
  'http2-settings',
  'content-length',
  'grpc-timeout',
  'grpc-status',
  'grpc-message',
])

/**
 * Request headers that describe only the browser side of a gRPC-Web call: the gRPC-Web client's marker and
 * name (x-grpc-web, x-user-agent; a gRPC client's name is user-agent, which crosses) and what the browser
 * adds for CORS and fetch metadata (origin, referer, sec-fetch-*, sec-ch-*, access-control-request-*). The
 * caller gateway answers the browser protocol (CORS included) itself and the backend gets a gRPC call, so
 * they are not forwarded from gRPC-Web requests. A gRPC client's metadata of these names crosses as sent.
 */
const BROWSER_ONLY = new Set(['x-grpc-web', 'x-user-agent', 'origin', 'referer'])
const BROWSER_ONLY_PREFIXES = ['sec-fetch-', 'sec-ch-', 'access-control-request-']

function isBrowserOnly(key: string): boolean {
  return BROWSER_ONLY.has(key) || BROWSER_ONLY_PREFIXES.some((p) => key.startsWith(p))
}

/** A metadata key as gRPC allows it: lower-case letters, digits, '-', '_' and '.' (pseudo-headers never match). */
const KEY_RE = /^[0-9a-z_.-]+$/
/** True when a value holds a control character other than tab, which no header value may carry. */
function hasControlCharacter(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true
  }
  return false
}

/**
 * True when a header crosses the gateway: not hop-by-hop, not pseudo, not stargate-*, not consumed here,
 * and, from a gRPC-Web request (`fromBrowser`), not one that only describes the browser side (BROWSER_ONLY).
 */
export function isForwarded(key: string, value: string, consumed?: ReadonlySet<string>, fromBrowser = false): boolean {
  return (
    KEY_RE.test(key) &&
    !NOT_FORWARDED.has(key) &&
    !key.startsWith('stargate-') &&
    consumed?.has(key) !== true &&
    !(fromBrowser && isBrowserOnly(key)) &&
    !hasControlCharacter(value)
  )
}

/**
 * The forwarded entries of a node:http2 raw header list ([name, value, name, value, ...]), in order;
 * `fromBrowser` for a request translated from gRPC-Web.
 */
export function metadataFromRawHeaders(raw: readonly string[], consumed?: ReadonlySet<string>, fromBrowser = false): MetadataEntry[] {
  const out: MetadataEntry[] = []
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i]!.toLowerCase()
    const value = raw[i + 1]!
    if (isForwarded(key, value, consumed, fromBrowser)) out.push(metadataEntry(key, value))
  }
  return out
}

/**
 * Appends metadata received from a peer to a node:http2 raw header list, filtered again: a peer never
 * injects pseudo-headers, hop-by-hop headers or malformed values.
 */
export function appendRawHeaders(out: string[], metadata: readonly MetadataEntry[], skip?: ReadonlySet<string>): string[] {
  for (const { key, value } of metadata) {
    if (isForwarded(key, value, skip)) out.push(key, value)
  }
  return out
}

/** Metadata from a peer as a node:http2 headers object (for trailers: node takes no raw list there). */
export function headersObject(metadata: readonly MetadataEntry[], skip?: ReadonlySet<string>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const { key, value } of metadata) {
    if (!isForwarded(key, value, skip)) continue
    const prev = out[key]
    if (prev == null) out[key] = value
    else if (typeof prev === 'string') out[key] = [prev, value]
    else prev.push(value)
  }
  return out
}

/** The gRPC code for an HTTP status that is not 200 (the gRPC spec's HTTP-to-gRPC table). */
export function grpcCodeOfHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal
    case 401:
      return Code.Unauthenticated
    case 403:
      return Code.PermissionDenied
    case 404:
      return Code.Unimplemented
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable
    default:
      return Code.Unknown
  }
}

/** The gRPC code for a stream reset with an HTTP/2 RST_STREAM code (the gRPC spec's table). */
export function grpcCodeOfRstCode(rstCode: number): Code {
  switch (rstCode) {
    case h2.NGHTTP2_REFUSED_STREAM:
      return Code.Unavailable
    case h2.NGHTTP2_CANCEL:
      return Code.Canceled
    case h2.NGHTTP2_ENHANCE_YOUR_CALM:
      return Code.ResourceExhausted
    case h2.NGHTTP2_INADEQUATE_SECURITY:
      return Code.PermissionDenied
    default:
      return Code.Internal
  }
}

/** The status code number of a grpc-status value; UNKNOWN when missing or malformed. */
export function parseGrpcStatus(value: string | undefined): Code {
  if (value == null || !/^\d{1,2}$/.test(value)) return Code.Unknown
  const n = Number(value)
  return n <= 16 ? (n as Code) : Code.Unknown
}

/**
 * Where one direction of a gRPC stream is (1 flag byte, 4 bytes big-endian length, the message), across
 * arbitrary chunks, reading only the 5-byte prefixes.
 */
class MessageBoundaries {
  /** Bytes of the current message's payload still to come (0 between messages or inside a prefix). */
  remaining = 0
  /** The prefix of the next message when it is split across chunks, and how many of its bytes came (0 to 4). */
  private readonly prefix = new Uint8Array(FRAME_PREFIX_BYTES)
  private prefixBytes = 0

  /** True when the stream so far ends inside a message or its prefix. */
  get midMessage(): boolean {
    return this.remaining > 0 || this.prefixBytes > 0
  }

  /**
   * Reads from `at` to the end of the current payload, or else through the next prefix (or as much of it as
   * the chunk holds). Returns the position reached and, when a prefix was completed, the length it declares
   * (else -1).
   */
  step(chunk: Uint8Array, at: number): [number, number] {
    const n = chunk.byteLength
    if (this.remaining > 0) {
      const take = Math.min(this.remaining, n - at)
      this.remaining -= take
      return [at + take, -1]
    }
    let length: number
    if (this.prefixBytes === 0 && n - at >= FRAME_PREFIX_BYTES) {
      length = frameLength(chunk, at)
      at += FRAME_PREFIX_BYTES
    } else {
      const take = Math.min(FRAME_PREFIX_BYTES - this.prefixBytes, n - at)
      this.prefix.set(chunk.subarray(at, at + take), this.prefixBytes)
      at += take
      this.prefixBytes += take
      if (this.prefixBytes < FRAME_PREFIX_BYTES) return [at, -1]
      this.prefixBytes = 0
      length = frameLength(this.prefix)
    }
    this.remaining = length
    return [at, length]
  }
}

/** Follows the message boundaries of one direction of a gRPC stream to enforce a max message size. */
export class MessageScanner {
  private readonly maxMessageBytes: number
  private readonly boundaries = new MessageBoundaries()

  constructor(maxMessageBytes: number) {
    this.maxMessageBytes = maxMessageBytes
  }

  /** True when the stream so far ends inside a message or its prefix. */
  get midMessage(): boolean {
    return this.boundaries.midMessage
  }

  /** Scans a chunk; returns the declared length of the first message over the limit, or -1. */
  push(chunk: Uint8Array): number {
    let at = 0
    while (at < chunk.byteLength) {
      const [next, length] = this.boundaries.step(chunk, at)
      at = next
      if (length > this.maxMessageBytes) return length
    }
    return -1
  }
}

/**
 * Passes one direction of a gRPC stream on in whole messages: the bytes of a message still arriving are held
 * back until its last byte is in, so that a stream cut short (a link failure, a backend reset) can still end at
 * a message boundary, followed by its status. gRPC clients report a stream that ends inside a message as
 * INTERNAL ("unexpected EOF" in grpc-go) whatever status follows. A message larger than `maxHeldBytes` passes as
 * it arrives (holding it would take more memory than the flow-control window bounds): only such a message can
 * still be cut. Nothing is copied: what leaves are the chunks as they came in, or slices of them.
 */
export class MessageAligner {
  private readonly maxHeldBytes: number
  private readonly boundaries = new MessageBoundaries()
  /** The start of the message now arriving, held back. */
  private held: Uint8Array[] = []
  private heldLength = 0
  /** The current message is passed on as it arrives (too large to hold). */
  private passing = false

  constructor(maxHeldBytes: number) {
    this.maxHeldBytes = maxHeldBytes
  }

  /** Bytes held back now (the start of a message not yet complete). */
  get heldBytes(): number {
    return this.heldLength
  }

  /** True when what was passed on ends inside a message too large to hold (the stream cannot end cleanly now). */
  get cut(): boolean {
    return this.passing && this.boundaries.remaining > 0
  }

  /** Takes a chunk; returns what may be passed on now, in order. */
  push(chunk: Uint8Array): Uint8Array[] {
    const n = chunk.byteLength
    /** chunk[0, releasable) may go: it ends at a message boundary, or inside a message that passes. */
    let releasable = 0
    let at = 0
    while (at < n) {
      const inPayload = this.boundaries.remaining > 0
      const [next, length] = this.boundaries.step(chunk, at)
      at = next
      if (!inPayload) {
        if (length < 0) continue
        this.passing = length > 0 && FRAME_PREFIX_BYTES + length > this.maxHeldBytes
      }
      if (this.passing || this.boundaries.remaining === 0) releasable = at
      if (this.boundaries.remaining === 0) this.passing = false
    }
    const out: Uint8Array[] = []
    if (releasable > 0 && this.heldLength > 0) {
      out.push(...this.held)
      this.held = []
      this.heldLength = 0
    }
    if (releasable > 0) out.push(releasable === n ? chunk : chunk.subarray(0, releasable))
    if (releasable < n) {
      // Held as a view, like the chunks node:http2 keeps queued after write(): a chunk is never reused.
      this.held.push(releasable === 0 ? chunk : chunk.subarray(releasable))
      this.heldLength += n - releasable
    }
    return out
  }

  /** Hands over what is held (the stream ended normally: the bytes go on as they are) and forgets it. */
  release(): Uint8Array[] {
    const out = this.held
    this.held = []
    this.heldLength = 0
    return out
  }
}
