import { Code, StargateError } from './errors.ts'

/**
 * Length-prefixed framing of /stargate/call/1.0.0 streams: each frame is an unsigned varint
 * (LEB128, as protobuf and it-length-prefixed use) holding the byte length, then the bytes.
 */

/** Longest legal varint: 10 bytes encode 64 bits. */
const MAX_VARINT_BYTES = 10

/** Smallest buffer started for a frame that did not arrive whole. */
const MIN_BUFFER_BYTES = 4096

/** Prefixes bytes with their varint length. */
export function encodeFrame(bytes: Uint8Array): Uint8Array {
  let n = bytes.length
  const header: number[] = []
  while (n >= 0x80) {
    header.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  header.push(n)
  const out = new Uint8Array(header.length + bytes.length)
  out.set(header)
  out.set(bytes, header.length)
  return out
}

export interface FrameDecoderOptions {
  /** Largest frame accepted; a longer declared length throws RESOURCE_EXHAUSTED before any of it is buffered. */
  maxFrameBytes: number
}

/**
 * Incremental frame decoder: push chunks as they arrive, get the complete frames back.
 * Handles frames split across chunks and several frames in one chunk. After it throws, the
 * stream is out of sync: close it.
 */
export class FrameDecoder {
  readonly maxFrameBytes: number
  // Header state: the varint value read so far (as a float: only compared against the max).
  private length = 0
  private multiplier = 1
  private headerBytes = 0
  // Body state of a frame that did not arrive whole: its declared length, and a buffer that grows with the
  // bytes actually received (doubling, capped at the length), so a peer announcing a large frame and
  // sending little of it costs little.
  private bodyLength = 0
  private body?: Uint8Array
  private filled = 0

  constructor(options: FrameDecoderOptions) {
    if (!(Number.isSafeInteger(options.maxFrameBytes) && options.maxFrameBytes >= 0)) {
      throw new RangeError(`maxFrameBytes must be a non-negative integer, got ${options.maxFrameBytes}`)
    }
    this.maxFrameBytes = options.maxFrameBytes
  }

  /** True when a frame (or its header) has been started but not completed. */
  get midFrame(): boolean {
    return this.headerBytes > 0 || this.body != null
  }

  /** Bytes of buffer held for the frame in progress: at most 4 KiB or twice what arrived of it, whichever is more. */
  get bufferedBytes(): number {
    return this.body?.byteLength ?? 0
  }

  /** Feeds a chunk; returns the frames it completed, in order. */
  push(chunk: Uint8Array): Uint8Array[] {
    const frames: Uint8Array[] = []
    let at = 0
    while (at < chunk.length) {
      if (this.body == null) {
        const byte = chunk[at++] as number
        this.headerBytes++
        if (this.headerBytes === MAX_VARINT_BYTES) {
          if ((byte & 0x80) !== 0) {
            throw new StargateError(Code.InvalidArgument, `malformed frame header: length varint longer than ${MAX_VARINT_BYTES} bytes`)
          }
          if (byte > 0x01) throw new StargateError(Code.InvalidArgument, 'malformed frame header: length varint overflows 64 bits')
        }
        this.length += (byte & 0x7f) * this.multiplier
        this.multiplier *= 0x80
        if ((byte & 0x80) !== 0) continue
        const length = this.length
        this.length = 0
        this.multiplier = 1
        this.headerBytes = 0
        if (length > this.maxFrameBytes) {
          throw new StargateError(Code.ResourceExhausted, `frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes} bytes`)
        }
        if (length === 0) {
          frames.push(new Uint8Array(0))
          continue
        }
        // Fast path: the whole frame is in this chunk.
        if (chunk.length - at >= length) {
          // A copy (plain Uint8Array, also for Buffer chunks): the caller may reuse its chunk buffer.
          const frame = new Uint8Array(length)
          frame.set(chunk.subarray(at, at + length))
          frames.push(frame)
          at += length
          continue
        }
        this.bodyLength = length
        this.body = new Uint8Array(Math.min(length, Math.max(MIN_BUFFER_BYTES, 2 * (chunk.length - at))))
        this.filled = 0
      }
      const take = Math.min(this.bodyLength - this.filled, chunk.length - at)
      if (this.filled + take > this.body.length) {
        const grown = new Uint8Array(Math.min(this.bodyLength, Math.max(2 * this.body.length, this.filled + take)))
        grown.set(this.body.subarray(0, this.filled))
        this.body = grown
      }
      this.body.set(chunk.subarray(at, at + take), this.filled)
      this.filled += take
      at += take
      if (this.filled === this.bodyLength) {
        frames.push(this.body)
        this.body = undefined
        this.filled = 0
      }
    }
    return frames
  }

  /** Call at end of stream: throws INVALID_ARGUMENT when it ended inside a frame. */
  end(): void {
    if (this.midFrame) {
      const what = this.body != null ? `after ${this.filled} of ${this.bodyLength} bytes` : 'inside a frame header'
      throw new StargateError(Code.InvalidArgument, `stream ended ${what}`)
    }
  }
}
