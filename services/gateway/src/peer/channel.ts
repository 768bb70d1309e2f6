import { create, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import type { Connection, Stream } from '@libp2p/interface'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { Code, StargateError } from '@stargate/shared/errors'
import { encodeFrame, FrameDecoder } from '@stargate/shared/framing'
import { type PeerFrame, PeerFrameSchema, type PeerRequestSchema, type PeerResponse } from '@stargate/shared/gen/envelope'
import type { Logger } from '@stargate/shared/log'

/** The libp2p protocol gateways speak to each other. */
export const CALL_PROTOCOL = '/stargate/call/1.0.0'

/** Bytes added to the largest payload to size the largest acceptable frame. */
export const FRAME_OVERHEAD_BYTES = 64 * 1024

function toBytes(data: Uint8Array | { subarray(): Uint8Array }): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray()
}

/** Frames up to this size are batched with others written in the same event-loop turn. */
const BATCH_FRAME_MAX_BYTES = 16 * 1024

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

/**
 * Writes one frame, waiting for the stream to drain when its buffer is full. The wait ends with the signal:
 * a stream whose remote stops reading (a relay that stalls the circuit) never drains, and must not hold a
 * call past its deadline.
 *
 * Small frames written during one event-loop turn (calls or answers arriving together) leave in one
 * stream.send: one yamux frame, one noise message, one socket write and one window update for all of
 * them, instead of one each. Order is kept: a large frame first sends what is batched.
 */
export async function writeFrame(stream: Stream, frame: MessageInitShape<typeof PeerFrameSchema>, signal?: AbortSignal): Promise<void> {
  const bytes = encodeFrame(toBinary(PeerFrameSchema, create(PeerFrameSchema, frame)))
  let room: boolean
  if (bytes.byteLength > BATCH_FRAME_MAX_BYTES) {
    const pending = batches.get(stream)
    if (pending != null) sendBatch(stream, pending)
    room = stream.send(bytes)
  } else {
    let batch = batches.get(stream)
    if (batch == null) {
      let settle: Batch['settle'] = () => {}
      const sent = new Promise<boolean>((resolve, reject) => {
        settle = (err, ok) => (err === undefined ? resolve(ok === true) : reject(err))
      })
      const created: Batch = { chunks: [], bytes: 0, sent, settle }
      batch = created
      batches.set(stream, created)
      setImmediate(() => sendBatch(stream, created))
    }
    batch.chunks.push(bytes)
    batch.bytes += bytes.byteLength
    room = await batch.sent
  }
  if (!room) await stream.onDrain({ signal })
}

/** Feeds a stream's incoming bytes through a length-prefix decoder into PeerFrames. */
export function onFrames(
  stream: Stream,
  maxFrameBytes: number,
  onFrame: (frame: PeerFrame) => void,
  onError: (err: StargateError) => void,
  stallTimeoutMs = 0,
): void {
  const decoder = new FrameDecoder({ maxFrameBytes })
  // A peer that starts a frame and stops sending must not hold the stream (and its buffer) forever.
  let stall: NodeJS.Timeout | undefined
  stream.addEventListener('close', () => clearTimeout(stall))
  stream.addEventListener('message', (evt) => {
    let frames: Uint8Array[]
    try {
      frames = decoder.push(toBytes(evt.data))
    } catch (err: unknown) {
      onError(StargateError.from(err, Code.InvalidArgument))
      return
    }
    clearTimeout(stall)
    if (stallTimeoutMs > 0 && decoder.midFrame) {
      stall = setTimeout(
        () =>
          onError(new StargateError(Code.DeadlineExceeded, `stalled: a frame was started but not completed within ${stallTimeoutMs} ms`)),
        stallTimeoutMs,
      )
      stall.unref()
    }
    for (const bytes of frames) {
      let frame: PeerFrame
      try {
        frame = decodePeerFrame(bytes)
      } catch (err: unknown) {
        onError(StargateError.from(err, Code.InvalidArgument))
        continue
      }
      onFrame(frame)
    }
  })
}

interface Pending {
  resolve: (r: PeerResponse) => void
  reject: (e: StargateError) => void
}

/**
 * The caller side of a long-lived /stargate/call/1.0.0 stream: many calls multiplexed by exchange id
 * (measured ~3x faster than a stream per call; see BENCHMARKS.md). One channel per peer and tier.
 */
export class PeerChannel {
  readonly stream: Stream
  readonly connection: Connection
  readonly openedAt = Date.now()
  lastUsedAt = Date.now()
  private readonly pending = new Map<bigint, Pending>()
  private nextExchange = 1n
  private closedError?: StargateError
  private readonly log: Logger
  private readonly livenessProbeMs: number
  private lastFrameAt = Date.now()
  private watchdog?: NodeJS.Timeout
  private probing = false

  /**
   * livenessProbeMs: when calls are waiting and nothing has arrived for this long, the connection is
   * probed (libp2p ping on a new stream, same timeout); a connection whose packets are silently dropped
   * fails its calls at once instead of holding them until their deadline. 0 disables the probe.
   */
  constructor(stream: Stream, connection: Connection, maxFrameBytes: number, log: Logger, livenessProbeMs = 1_000) {
    this.stream = stream
    this.connection = connection
    this.log = log
    this.livenessProbeMs = livenessProbeMs
    onFrames(
      stream,
      maxFrameBytes,
      (frame) => {
        this.lastFrameAt = Date.now()
        this.onFrame(frame)
      },
      (err) => this.fail(err),
    )
    stream.addEventListener('close', (evt) => {
      const cause = (evt as { error?: unknown }).error
      this.fail(new StargateError(Code.Unavailable, `stream to ${connection.remotePeer.toString()} closed`, { cause }))
    })
  }

  /** True while calls can be sent. */
  get open(): boolean {
    return this.closedError == null && this.stream.status === 'open' && this.connection.status === 'open'
  }

  /** Calls in flight on this channel. */
  get inflight(): number {
    return this.pending.size
  }

  /** Sends a request and resolves with the response; rejects on transport failure, abort or timeout. */
  async call(req: MessageInitShape<typeof PeerRequestSchema>, signal: AbortSignal): Promise<PeerResponse> {
    if (this.closedError != null) throw this.closedError
    signal.throwIfAborted()
    this.lastUsedAt = Date.now()
    const exchangeId = this.nextExchange++
    const result = new Promise<PeerResponse>((resolve, reject) => this.pending.set(exchangeId, { resolve, reject }))
    // Rejected by abort or stream close while the request may still be being written: handled below either way.
    result.catch(() => {})
    const onAbort = (): void => {
      const p = this.pending.get(exchangeId)
      if (p == null) return
      this.pending.delete(exchangeId)
      p.reject(StargateError.from(signal.reason, Code.Canceled))
      if (this.open) writeFrame(this.stream, { kind: { case: 'cancel', value: { exchangeId } } }).catch(() => {})
    }
    signal.addEventListener('abort', onAbort, { once: true })
    this.armWatchdog()
    try {
      await writeFrame(this.stream, { kind: { case: 'request', value: { ...req, exchangeId } } }, signal)
      return await result
    } catch (err: unknown) {
      this.pending.delete(exchangeId)
      if (signal.aborted) throw StargateError.from(signal.reason, Code.Canceled)
      throw StargateError.from(err, Code.Unavailable)
    } finally {
      signal.removeEventListener('abort', onAbort)
      this.lastUsedAt = Date.now()
    }
  }

  /** Closes the stream; pending calls fail with UNAVAILABLE. */
  async close(): Promise<void> {
    this.fail(new StargateError(Code.Unavailable, 'channel closed'))
    try {
      await this.stream.close({ signal: AbortSignal.timeout(1000) })
    } catch (err: unknown) {
      this.stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  private onFrame(frame: PeerFrame): void {
    if (frame.kind.case !== 'response') {
      this.log.warn('unexpected frame on caller stream', { kind: frame.kind.case })
      return
    }
    const res = frame.kind.value
    const p = this.pending.get(res.exchangeId)
    if (p == null) return
    this.pending.delete(res.exchangeId)
    p.resolve(res)
  }

  private armWatchdog(): void {
    if (this.livenessProbeMs <= 0 || this.watchdog != null || this.closedError != null) return
    this.watchdog = setTimeout(() => {
      this.watchdog = undefined
      if (this.pending.size === 0 || this.closedError != null) return
      if (Date.now() - this.lastFrameAt < this.livenessProbeMs || this.probing) {
        this.armWatchdog()
        return
      }
      this.probing = true
      probeConnection(this.connection, Math.max(this.livenessProbeMs, 2_000))
        .then(
          () => {
            this.lastFrameAt = Date.now()
            this.armWatchdog()
          },
          (err: unknown) => {
            const e = new StargateError(Code.Unavailable, `connection to ${this.connection.remotePeer.toString()} stopped answering`, {
              cause: err,
            })
            this.log.warn('peer connection stopped answering; failing its calls', { peer: this.connection.remotePeer.toString() })
            this.fail(e)
            this.stream.abort(e)
            this.connection.abort(e)
          },
        )
        .finally(() => {
          this.probing = false
        })
    }, this.livenessProbeMs)
    this.watchdog.unref()
  }

  private fail(err: StargateError): void {
    clearTimeout(this.watchdog)
    this.closedError ??= err
    for (const [id, p] of this.pending) {
      this.pending.delete(id)
      p.reject(err)
    }
  }
}

const PING_PROTOCOL = '/ipfs/ping/1.0.0'

/** One libp2p ping round trip on a new stream of the connection; rejects on timeout or mismatch. */
export async function probeConnection(connection: Connection, timeoutMs: number): Promise<void> {
  const signal = AbortSignal.timeout(timeoutMs)
  const stream = await connection.newStream(PING_PROTOCOL, { signal, runOnLimitedConnection: true })
  try {
    const payload = crypto.getRandomValues(new Uint8Array(32))
    const echoed = new Promise<void>((resolve, reject) => {
      let got = new Uint8Array(0)
      stream.addEventListener('message', (evt) => {
        const chunk = toBytes(evt.data)
        const next = new Uint8Array(got.byteLength + chunk.byteLength)
        next.set(got)
        next.set(chunk, got.byteLength)
        got = next
        if (got.byteLength >= 32) {
          if (got.subarray(0, 32).every((b, i) => b === payload[i])) resolve()
          else reject(new Error('ping answer did not match'))
        }
      })
      signal.addEventListener('abort', () => reject(new Error(`no ping answer within ${timeoutMs} ms`)), { once: true })
    })
    stream.send(payload)
    await echoed
  } finally {
    stream.abort(new Error('probe done'))
  }
}
