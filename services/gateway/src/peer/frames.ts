import { create, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import type { Connection, Stream } from '@libp2p/interface'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { Code, StargateError } from '@stargate/shared/errors'
import { encodeFrame, FrameDecoder } from '@stargate/shared/framing'
import { type PeerFrame, PeerFrameSchema, PeerRequestSchema, PeerResponseSchema } from '@stargate/shared/gen/envelope'
import { Uint8ArrayList } from 'uint8arraylist'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import type { TunnelEndpoint, TunnelLink } from '../tunnel/endpoint.ts'
import { encodeDataFrameChunks, varintLength, writeVarint } from '../tunnel/frames.ts'

/**
 * Frame I/O of /stargate/call/1.0.0 streams, used by both ends: the caller's channel (channel.ts) and the
 * callee's stream server (server.ts). Frames are varint-length-prefixed stargate.v1.PeerFrame messages.
 */

/** The libp2p protocol gateways speak to each other. */
export const CALL_PROTOCOL = '/stargate/call/1.0.0'

export type PeerFrameInit = MessageInitShape<typeof PeerFrameSchema>

/** True for a relayed connection (a circuit through a relay), false for a direct one. */
export function isCircuitConnection(connection: Connection): boolean {
  return connection.remoteAddr.toString().includes('/p2p-circuit')
}

/** True for the frames of tunnelled streams (open, headers, data, close, reset, window). */
export function isStreamFrame(frame: PeerFrame): boolean {
  return frame.kind.case?.startsWith('stream') === true
}

/** The bytes of a stream message event (a Uint8Array or a Uint8ArrayList). */
export function chunkBytes(data: Uint8Array | { subarray(): Uint8Array }): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray()
}

interface Batch {
  chunks: Uint8Array[]
  bytes: number
  /** Settles once the batch went to stream.send: true when the stream still has room. */
  sent: Promise<boolean>
  settle: (err: unknown, room?: boolean) => void
}

/** Small frames waiting for the end of the current event-loop turn, per stream. */
const batches = new WeakMap<Stream, Batch>()

function sendBatch(stream: Stream, batch: Batch): void {
  if (batches.get(stream) !== batch) return
  batches.delete(stream)
  let data = batch.chunks[0]!
  if (batch.chunks.length > 1) {
    data = new Uint8Array(batch.bytes)
    let at = 0
    for (const c of batch.chunks) {
      data.set(c, at)
      at += c.byteLength
    }
  }
  try {
    batch.settle(undefined, stream.send(data))
  } catch (err: unknown) {
    batch.settle(err)
  }
}

/** Adds a small frame (in one or more parts) to the stream's batch for this event-loop turn (starting one when there is none). */
function enqueue(stream: Stream, ...parts: Uint8Array[]): Batch {
  let batch = batches.get(stream)
  if (batch == null) {
    let settle: Batch['settle'] = () => {}
    const sent = new Promise<boolean>((resolve, reject) => {
      settle = (err, ok) => (err === undefined ? resolve(ok === true) : reject(err))
    })
    // A batch of tunnel frames only has no awaiter: its failure is reported by the stream's close.
    sent.catch(() => {})
    const created: Batch = { chunks: [], bytes: 0, sent, settle }
    batch = created
    batches.set(stream, created)
    setImmediate(() => sendBatch(stream, created))
  }
  for (const part of parts) {
    batch.chunks.push(part)
    batch.bytes += part.byteLength
  }
  return batch
}

/** Sends what is batched for the stream now (a large frame must not overtake it). */
function flushBatch(stream: Stream): void {
  const pending = batches.get(stream)
  if (pending != null) sendBatch(stream, pending)
}

/**
 * Writes one frame, waiting for the stream to drain when its buffer is full. The wait ends with the signal:
 * a stream whose remote stops reading (a relay that stalls the circuit) never drains, and must not hold a
 * call past its deadline.
 *
 * Small frames written during one event-loop turn (calls or answers arriving together) leave in one
 * stream.send: one yamux frame, one noise message, one socket write and one window update for all of
 * them, instead of one each. Order is kept: a large frame first sends what is batched.
 */
export async function writeFrame(stream: Stream, frame: PeerFrameInit, signal?: AbortSignal): Promise<void> {
  await writeEncodedFrame(stream, encodePeerFrame(frame), signal)
}

/** A frame as it goes on the stream (length prefix and encoded PeerFrame): one buffer, or header + payload. */
export type EncodedFrame = Uint8Array | Uint8ArrayList

/**
 * A frame as it goes on the stream: length prefix and encoded PeerFrame. A request or response whose `data`
 * payload is larger than a batched frame comes back as two chunks, everything but the payload and the payload
 * itself, uncopied (it is appended as the message's last field; protobuf decoders accept any field order).
 * Encoding it whole would copy a large payload four times: into protobuf-es's growing buffer (and at each
 * doubling), out of it, and behind the length prefix.
 */
export function encodePeerFrame(frame: PeerFrameInit): EncodedFrame {
  const msg = create(PeerFrameSchema, frame)
  const kind = msg.kind
  let inner: Uint8Array | undefined
  let data: Uint8Array | undefined
  if (kind.case === 'request' && kind.value.payload.case === 'data' && kind.value.payload.value.byteLength > SPLIT_PAYLOAD_BYTES) {
    data = kind.value.payload.value
    inner = toBinary(PeerRequestSchema, { ...kind.value, payload: { case: undefined } })
  } else if (kind.case === 'response' && kind.value.result.case === 'data' && kind.value.result.value.byteLength > SPLIT_PAYLOAD_BYTES) {
    data = kind.value.result.value
    inner = toBinary(PeerResponseSchema, { ...kind.value, result: { case: undefined } })
  }
  if (inner == null || data == null) return encodeFrame(toBinary(PeerFrameSchema, msg))
  // PeerFrame { request = 1 | response = 2 (length-delimited) { ...inner, data = 3 (length-delimited) } }
  const innerBytes = inner.byteLength + 1 + varintLength(data.byteLength) + data.byteLength
  const frameBytes = 1 + varintLength(innerBytes) + innerBytes
  const header = new Uint8Array(varintLength(frameBytes) + frameBytes - data.byteLength)
  let at = writeVarint(header, 0, frameBytes)
  header[at++] = kind.case === 'request' ? 0x0a : 0x12
  at = writeVarint(header, at, innerBytes)
  header.set(inner, at)
  at += inner.byteLength
  header[at++] = 0x1a
  writeVarint(header, at, data.byteLength)
  return new Uint8ArrayList(header, data)
}

/** Payloads larger than this (a frame that is never batched) are sent after the frame's header, uncopied. */
const SPLIT_PAYLOAD_BYTES = GATEWAY_DEFAULTS.batchFrameMaxBytes

/** writeFrame() of a frame encodePeerFrame() made (when its size must be known before it is written). */
export async function writeEncodedFrame(stream: Stream, bytes: EncodedFrame, signal?: AbortSignal): Promise<void> {
  let room: boolean
  if (bytes.byteLength > GATEWAY_DEFAULTS.batchFrameMaxBytes) {
    flushBatch(stream)
    room = stream.send(bytes)
  } else {
    room = await enqueue(stream, bytes instanceof Uint8Array ? bytes : bytes.subarray()).sent
  }
  if (!room) await stream.onDrain({ signal })
}

/**
 * A tunnel endpoint's link over a peer stream (the caller's channel or the callee's stream server): frames
 * leave in order with every other frame written on the stream, small ones batched per event-loop turn like
 * writeFrame's, a large data frame as its encoded header followed by the payload uncopied. send() returns
 * false while the stream needs to drain; the endpoint is told when it has. A send that throws (the stream
 * closed) fails the endpoint.
 */
export function streamLink(stream: Stream, endpoint: () => TunnelEndpoint | undefined): TunnelLink {
  stream.addEventListener('drain', () => endpoint()?.drained())
  return {
    send(frame: PeerFrame): boolean {
      try {
        const kind = frame.kind
        if (kind.case === 'streamData') {
          const [header, data] = encodeDataFrameChunks(kind.value.exchangeId, kind.value.data, kind.value.endOfStream)
          const size = header.byteLength + data.byteLength
          if (size > GATEWAY_DEFAULTS.batchFrameMaxBytes) {
            flushBatch(stream)
            return stream.send(new Uint8ArrayList(header, data))
          }
          enqueue(stream, header, data)
        } else {
          const bytes = encodeFrame(toBinary(PeerFrameSchema, frame))
          if (bytes.byteLength > GATEWAY_DEFAULTS.batchFrameMaxBytes) {
            flushBatch(stream)
            return stream.send(bytes)
          }
          enqueue(stream, bytes)
        }
        return !stream.writableNeedsDrain
      } catch (err: unknown) {
        endpoint()?.fail(StargateError.from(err, Code.Unavailable))
        return true
      }
    },
  }
}

/** How a stream's incoming frames are read. */
export interface FrameReaderOptions {
  maxFrameBytes: number
  /**
   * A frame must be complete this long after its first byte arrived (0 = no limit). The deadline is absolute:
   * a peer trickling one byte at a time does not extend it.
   */
  frameDeadlineMs?: number
  /**
   * Bytes the frame being received may hold (a connection's budget, budget.ts): when the buffer of a frame
   * in progress would pass it, the stream fails with RESOURCE_EXHAUSTED. Unset: only maxFrameBytes bounds it.
   */
  budget?: { reserve(bytes: number): boolean; release(bytes: number): void }
}

/**
 * Feeds a stream's incoming bytes through a length-prefix decoder into PeerFrames; onFrame gets each frame
 * with its encoded size. After onError the stream is out of sync and nothing more is delivered.
 */
export function onFrames(
  stream: Stream,
  options: FrameReaderOptions,
  onFrame: (frame: PeerFrame, bytes: number) => void,
  onError: (err: StargateError) => void,
): void {
  const decoder = new FrameDecoder({ maxFrameBytes: options.maxFrameBytes })
  const deadlineMs = options.frameDeadlineMs ?? 0
  const budget = options.budget
  let frameTimer: NodeJS.Timeout | undefined
  let failed = false
  /** Bytes of the frame in progress reserved in the budget. */
  let held = 0
  const fail = (err: StargateError): void => {
    failed = true
    clearTimeout(frameTimer)
    budget?.release(held)
    held = 0
    onError(err)
  }
  const stalled = (): void =>
    fail(new StargateError(Code.DeadlineExceeded, `stalled: a frame was started but not completed within ${deadlineMs} ms`))
  stream.addEventListener('close', () => {
    clearTimeout(frameTimer)
    budget?.release(held)
    held = 0
  })
  stream.addEventListener('message', (evt) => {
    if (failed) return
    let frames: Uint8Array[]
    try {
      frames = decoder.push(chunkBytes(evt.data))
    } catch (err: unknown) {
      fail(StargateError.from(err, Code.InvalidArgument))
      return
    }
    if (budget != null && decoder.bufferedBytes !== held) {
      const grown = decoder.bufferedBytes - held
      if (grown > 0 && !budget.reserve(grown)) {
        fail(
          new StargateError(
            Code.ResourceExhausted,
            `the connection has too many bytes buffered here (a frame in progress needs ${decoder.bufferedBytes} bytes)`,
          ),
        )
        return
      }
      if (grown < 0) budget.release(-grown)
      held = decoder.bufferedBytes
    }
    if (!decoder.midFrame) {
      clearTimeout(frameTimer)
      frameTimer = undefined
    } else if (deadlineMs > 0 && (frames.length > 0 || frameTimer == null)) {
      // A new frame started in this chunk: its own deadline starts now. A frame still incomplete keeps its timer.
      clearTimeout(frameTimer)
      frameTimer = setTimeout(stalled, deadlineMs)
      frameTimer.unref()
    }
    for (const bytes of frames) {
      let frame: PeerFrame
      try {
        frame = decodePeerFrame(bytes)
      } catch (err: unknown) {
        fail(StargateError.from(err, Code.InvalidArgument))
        return
      }
      onFrame(frame, bytes.byteLength)
    }
  })
}
