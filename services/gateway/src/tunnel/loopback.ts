import { decodePeerFrame, encodePeerFrame } from '@stargate/shared/envelope'
import type { StargateError } from '@stargate/shared/errors'
import { encodeFrame, FrameDecoder } from '@stargate/shared/framing'
import type { PeerFrame } from '@stargate/shared/gen/envelope'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import type { TunnelEndpoint, TunnelLink } from './endpoint.ts'
import { encodeDataFrameChunks } from './frames.ts'

export interface LoopbackOptions {
  /**
   * Put every frame through the wire encoding real links use (varint length prefix, PeerFrame,
   * zero-copy data frames) and decode it on the other side, as tests of the protocol want. Off, frames
   * are handed over as objects (a gateway calling itself).
   */
  encode?: boolean
  /** Bytes queued in one direction past which send() reports congestion; default GATEWAY_DEFAULTS.loopbackHighWaterMarkBytes. */
  highWaterMarkBytes?: number
}

/** Frame bytes counted for a frame handed over as an object. */
const CONTROL_FRAME_BYTES = 32

/** One direction of a loopback: frames queue and are delivered in order in a later event-loop turn. */
class Pipe implements TunnelLink {
  target?: TunnelEndpoint
  source?: TunnelEndpoint
  paused = false
  failed = false
  /** Frames delivered so far. */
  delivered = 0
  private queue: Array<PeerFrame | Uint8Array[]> = []
  private queuedBytes = 0
  private congested = false
  private scheduled = false
  private readonly encode: boolean
  private readonly highWaterMarkBytes: number
  private readonly decoder: FrameDecoder

  constructor(encode: boolean, highWaterMarkBytes: number) {
    this.encode = encode
    this.highWaterMarkBytes = highWaterMarkBytes
    this.decoder = new FrameDecoder({ maxFrameBytes: GATEWAY_DEFAULTS.loopbackMaxFrameBytes })
  }

  send(frame: PeerFrame): boolean {
    if (this.failed) return true
    let size: number
    if (this.encode) {
      const chunks =
        frame.kind.case === 'streamData'
          ? encodeDataFrameChunks(frame.kind.value.exchangeId, frame.kind.value.data, frame.kind.value.endOfStream)
          : [encodeFrame(encodePeerFrame(frame))]
      size = chunks.reduce((n, c) => n + c.byteLength, 0)
      this.queue.push(chunks)
    } else {
      size = frame.kind.case === 'streamData' ? frame.kind.value.data.byteLength + CONTROL_FRAME_BYTES : CONTROL_FRAME_BYTES
      this.queue.push(frame)
    }
    this.queuedBytes += size
    this.schedule()
    if (this.queuedBytes < this.highWaterMarkBytes) return true
    this.congested = true
    return false
  }

  /** True when no frame will be delivered without a resume(). */
  get idle(): boolean {
    return (this.queue.length === 0 || this.paused || this.failed) && !this.scheduled
  }

  schedule(): void {
    if (this.scheduled || this.paused || this.queue.length === 0) return
    this.scheduled = true
    setImmediate(this.run)
  }

  private readonly run = (): void => {
    this.scheduled = false
    if (this.paused || this.failed) return
    const batch = this.queue
    this.queue = []
    this.queuedBytes = 0
    for (const item of batch) {
      if (this.failed) return
      if (Array.isArray(item)) {
        for (const chunk of item) for (const bytes of this.decoder.push(chunk)) this.deliver(decodePeerFrame(bytes))
      } else {
        this.deliver(item)
      }
    }
    if (this.congested && !this.failed) {
      this.congested = false
      this.source?.drained()
    }
  }

  private deliver(frame: PeerFrame): void {
    this.delivered++
    this.target?.receive(frame)
  }
}

/**
 * An in-memory frame link between a caller endpoint and a callee endpoint: ordered, asynchronous,
 * with congestion past a high-water mark, a pause switch and failure, like a real link.
 */
export class Loopback {
  private readonly toCallee: Pipe
  private readonly toCaller: Pipe

  constructor(options: LoopbackOptions = {}) {
    const hwm = options.highWaterMarkBytes ?? GATEWAY_DEFAULTS.loopbackHighWaterMarkBytes
    this.toCallee = new Pipe(options.encode === true, hwm)
    this.toCaller = new Pipe(options.encode === true, hwm)
  }

  /** The link the caller's endpoint sends on. */
  get callerLink(): TunnelLink {
    return this.toCallee
  }

  /** The link the callee's endpoint sends on. */
  get calleeLink(): TunnelLink {
    return this.toCaller
  }

  /** Connects the two endpoints (after constructing them on callerLink / calleeLink). */
  bind(caller: TunnelEndpoint, callee: TunnelEndpoint): void {
    this.toCallee.source = caller
    this.toCallee.target = callee
    this.toCaller.source = callee
    this.toCaller.target = caller
  }

  /** Frames delivered so far, per direction. */
  get delivered(): { toCallee: number; toCaller: number } {
    return { toCallee: this.toCallee.delivered, toCaller: this.toCaller.delivered }
  }

  /**
   * Resolves once no frame is on its way in either direction (frames sent while delivering included): the
   * two endpoints have reacted to everything. While paused, held frames do not count.
   */
  async settled(): Promise<void> {
    while (!(this.toCallee.idle && this.toCaller.idle)) await new Promise((resolve) => setImmediate(resolve))
  }

  /** Holds frames in both directions until resume(); send() reports congestion past the high-water mark. */
  pause(): void {
    this.toCallee.paused = true
    this.toCaller.paused = true
  }

  resume(): void {
    this.toCallee.paused = false
    this.toCaller.paused = false
    this.toCallee.schedule()
    this.toCaller.schedule()
  }

  /** Breaks the link: queued frames are lost and both endpoints fail. */
  fail(err: StargateError): void {
    this.toCallee.failed = true
    this.toCaller.failed = true
    this.toCallee.source?.fail(err)
    this.toCaller.source?.fail(err)
  }
}
