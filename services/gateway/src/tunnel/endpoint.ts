import { type Clock, systemClock, type Timer } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry, PeerFrame } from '@stargate/shared/gen/envelope'
import type { Logger } from '@stargate/shared/log'
import { GATEWAY_DEFAULTS, GATEWAY_LIMITS } from '../defaults.ts'
import { dataFrame, resetFrame, windowFrame } from './frames.ts'
import { MessageScanner } from './wire.ts'

/**
 * What the caller half (TunnelClient) and the callee half (TunnelServer) of tunnelled gRPC streams share:
 * the link interface, per-stream credit flow control in both directions, resets, deadlines and caps.
 *
 * Flow control: a sender sends data only within the credit its receiver granted (the opening credit,
 * then StreamWindow frames). A receiver hands data to its consumer while the consumer accepts it, queues it
 * while the consumer is paused, and grants credit only for data its consumer took: so it never holds more
 * than its window, and a consumer that stops reading stops the sender. A sender holds at most the chunk its
 * producer wrote after `write()` returned false.
 */

/** A tunnel endpoint's view of its frame link (a peer channel, NATS subjects, or the in-memory loopback). */
export interface TunnelLink {
  /**
   * Sends one frame; frames arrive in the order they were sent. Returns false when the link is congested:
   * the endpoint then holds back data frames (control frames still go) until its `drained()` is called.
   * Never throws: a link that failed is reported through the endpoint's `fail()`.
   */
  send(frame: PeerFrame): boolean
  /**
   * Optional: a stream of the endpoint ended (any way), after its last frame was handed to send(). A link
   * that holds something per stream (NATS: a subscription) releases it here.
   */
  streamEnded?(exchangeId: bigint): void
}

/** What the owner of a link drives on the endpoint bound to it. */
export interface TunnelEndpoint {
  /** A stream frame that arrived on the link. */
  receive(frame: PeerFrame): void
  /** The link, congested after a send() returned false, takes frames again. */
  drained(): void
  /**
   * The link failed: every stream ends with UNAVAILABLE and is never replayed. `undelivered` says the link
   * knows its StreamOpens reached no one (NATS: nobody listens on the peer's subject), so a call may be
   * tried on another tier.
   */
  fail(err: StargateError, undelivered?: boolean): void
}

/** The gRPC status code of success (connect-es's Code has no name for it). */
export const STATUS_OK = 0

/** How a stream ended. */
export interface TunnelStatus {
  /** The gRPC status code number (0 is OK; the other values are `Code`). */
  code: number
  message: string
  /** Trailers in wire form (grpc-status-details-bin included); empty unless the callee closed the stream. */
  trailers: MetadataEntry[]
  /**
   * Who ended the stream: the peer (its status or reset), this endpoint (deadline, a limit, a protocol
   * error) or the link failing under it. Unset for statuses made outside the endpoints.
   */
  from?: 'peer' | 'local' | 'link'
  /** Set when the link failed knowing the stream never reached the peer (TunnelEndpoint.fail). */
  undelivered?: boolean
}

/** What every stream consumer implements (one object per stream: no closure per message). */
export interface StreamEvents {
  /**
   * The peer's next data: a slice of its gRPC length-prefixed message stream. Return false to pause
   * delivery; call the stream's `resume()` once more can be taken.
   */
  onData(data: Uint8Array): boolean
  /**
   * The stream ended other than by this consumer's own reset()/close(): the callee's status (caller side),
   * a reset by the peer, a deadline, a limit, or a link failure. Called once; nothing follows it.
   */
  onClose(status: TunnelStatus): void
  /** After write() returned false: the stream takes data again. */
  onWritable(): void
}

/** Limits and parts of an endpoint; every default is in GATEWAY_DEFAULTS. */
export interface TunnelOptions {
  /** Flow-control window of each stream, per direction (at least the opening credit, 65536). */
  windowBytes: number
  /** Streams open at once on this link. */
  maxStreams: number
  /** Largest gRPC message in either direction (from its length prefix). */
  maxMessageBytes: number
  clock: Clock
  log: Logger
}

/** The complete, validated options; INVALID_ARGUMENT naming the option when a value is out of range. */
export function resolveTunnelOptions(options: Partial<TunnelOptions> & { log: Logger }): TunnelOptions {
  const resolved: TunnelOptions = {
    windowBytes: options.windowBytes ?? GATEWAY_DEFAULTS.tunnelWindowBytes,
    maxStreams: options.maxStreams ?? GATEWAY_DEFAULTS.tunnelMaxStreamsPerLink,
    maxMessageBytes: options.maxMessageBytes ?? GATEWAY_DEFAULTS.tunnelMaxMessageBytes,
    clock: options.clock ?? systemClock,
    log: options.log,
  }
  const check = (name: string, value: number, { min, max }: { min: number; max: number }): void => {
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new StargateError(Code.InvalidArgument, `tunnel option ${name} must be an integer from ${min} to ${max}, got ${value}`)
    }
  }
  check('windowBytes', resolved.windowBytes, GATEWAY_LIMITS.tunnelWindowBytes)
  check('maxStreams', resolved.maxStreams, GATEWAY_LIMITS.tunnelMaxStreamsPerLink)
  check('maxMessageBytes', resolved.maxMessageBytes, GATEWAY_LIMITS.tunnelMaxMessageBytes)
  return resolved
}

/** An endpoint's figures. */
export interface TunnelStats {
  /** Streams open now. */
  streams: number
  /** Bytes held now: received data not yet taken by consumers, plus data waiting for credit or for the link. */
  bufferedBytes: number
  /** The most bytes held at once since the endpoint was created. */
  peakBufferedBytes: number
  /** Frames dropped because they made no sense on this side (a callee frame at the caller, or the reverse). */
  unexpectedFrames: number
}

/** The shared part of an endpoint: the streams of one link, sending, congestion, buffered bytes, failure. */
export abstract class EndpointCore {
  readonly options: TunnelOptions
  protected readonly link: TunnelLink
  protected readonly streams = new Map<bigint, TunnelStream>()
  /** The peer at the other end of the link (for messages). */
  readonly remotePeerId: string
  /** True after a send() returned false, until drained(). */
  congested = false
  private readonly blocked = new Set<TunnelStream>()
  protected failure?: StargateError
  private buffered = 0
  private peakBuffered = 0
  protected unexpected = 0

  constructor(link: TunnelLink, remotePeerId: string, options: TunnelOptions) {
    this.link = link
    this.remotePeerId = remotePeerId
    this.options = options
  }

  get stats(): TunnelStats {
    return {
      streams: this.streams.size,
      bufferedBytes: this.buffered,
      peakBufferedBytes: this.peakBuffered,
      unexpectedFrames: this.unexpected,
    }
  }

  /** @internal Sends a frame, noting congestion. */
  send(frame: PeerFrame): void {
    if (!this.link.send(frame)) this.congested = true
  }

  /** @internal A stream waits for the link to drain. */
  block(stream: TunnelStream): void {
    this.blocked.add(stream)
  }

  /** @internal Buffered-byte accounting of the streams. */
  addBuffered(n: number): void {
    this.buffered += n
    if (this.buffered > this.peakBuffered) this.peakBuffered = this.buffered
  }

  /** @internal A stream ended: forget it. */
  remove(stream: TunnelStream): void {
    this.streams.delete(stream.exchangeId)
    this.blocked.delete(stream)
    this.link.streamEnded?.(stream.exchangeId)
  }

  receive(frame: PeerFrame): void {
    const kind = frame.kind
    switch (kind.case) {
      case 'streamData':
        this.streams.get(kind.value.exchangeId)?.receiveData(kind.value.data, kind.value.endOfStream)
        return
      case 'streamWindow':
        this.streams.get(kind.value.exchangeId)?.receiveWindow(kind.value.creditBytes)
        return
      case 'streamReset':
        this.streams.get(kind.value.exchangeId)?.receiveReset(kind.value.code, kind.value.message)
        return
      default:
        this.receiveOther(frame)
    }
  }

  /** Frames only one side handles (open at the callee; headers and close at the caller). */
  protected abstract receiveOther(frame: PeerFrame): void

  drained(): void {
    this.congested = false
    for (const stream of this.blocked) {
      this.blocked.delete(stream)
      stream.flush()
      if (this.congested) return
    }
  }

  fail(err: StargateError, undelivered = false): void {
    if (this.failure != null) return
    this.failure = err
    const status: TunnelStatus = {
      code: Code.Unavailable,
      message: undelivered
        ? `the tunnel link to peer ${this.remotePeerId} failed before the stream reached the peer (${err.rawMessage})`
        : `the tunnel link to peer ${this.remotePeerId} failed (${err.rawMessage}); the stream ended and was not replayed`,
      trailers: [],
      from: 'link',
      ...(undelivered ? { undelivered } : {}),
    }
    for (const stream of [...this.streams.values()]) stream.terminate(status, true)
  }
}

/**
 * One tunnelled stream as either endpoint sees it: a send half (data out within credit, then the local end)
 * and a receive half (data in within the window granted, delivered to the consumer as it drains).
 */
export abstract class TunnelStream {
  readonly exchangeId: bigint
  protected readonly core: EndpointCore
  protected events: StreamEvents
  /** True once the stream ended (any way); nothing is sent or delivered after. */
  protected ended = false
  // Send half.
  protected sendCredit: number
  private readonly pending: Uint8Array[] = []
  protected pendingBytes = 0
  private wantWritable = false
  /** The local end (caller: end of request data; callee: the close) goes after the pending data. */
  protected endQueued = false
  protected endSent = false
  private readonly scanOut: MessageScanner
  // Receive half.
  private recvAllowed: number
  private readonly queue: Uint8Array[] = []
  private queuedBytes = 0
  private unacked = 0
  private readonly grantThreshold: number
  private paused = false
  private delivering = false
  protected remoteEnded = false
  /** True once any frame of the stream arrived from the peer. */
  protected heard = false
  private endDelivered = false
  private readonly scanIn: MessageScanner
  private timer?: Timer

  constructor(core: EndpointCore, exchangeId: bigint, events: StreamEvents, sendCredit: number, recvAllowed: number) {
    this.core = core
    this.exchangeId = exchangeId
    this.events = events
    this.sendCredit = sendCredit
    this.recvAllowed = recvAllowed
    this.grantThreshold = core.options.windowBytes >>> 2
    this.scanOut = new MessageScanner(core.options.maxMessageBytes)
    this.scanIn = new MessageScanner(core.options.maxMessageBytes)
  }

  /** Which direction this side sends ("request"/"response"), for messages. */
  protected abstract readonly sendsWhat: string
  protected abstract readonly receivesWhat: string
  /** True when the peer knows the stream (frames for it may go on the link). */
  protected abstract get announced(): boolean
  /** Sends the local end after the last pending data (caller: end of stream; callee: the close frame). */
  protected abstract sendEnd(): void
  /** The peer's end arrived and every byte before it was delivered. */
  protected abstract deliverEnd(): void
  /** The message of a deadline reset. */
  protected abstract deadlineMessage(): string

  /** True while the stream is open. */
  get open(): boolean {
    return !this.ended
  }

  /** True once any frame of this stream arrived from the peer: from then on the peer knows the stream. */
  get reached(): boolean {
    return this.heard
  }

  /** Bytes held for this stream: received but not delivered, plus waiting to be sent. */
  get bufferedBytes(): number {
    return this.queuedBytes + this.pendingBytes
  }

  /**
   * Sends data (a slice of the gRPC message stream, any boundaries). Returns false when the producer should
   * pause until onWritable(): no credit or a congested link. The chunk is kept either way, uncopied.
   */
  write(data: Uint8Array): boolean {
    if (this.ended || this.endQueued) return false
    const n = data.byteLength
    if (n > 0) {
      if (!this.scanned(data)) return false
      if (this.pendingBytes === 0 && this.announced && n <= this.sendCredit && !this.core.congested) {
        this.sendCredit -= n
        this.beforeData()
        this.core.send(dataFrame(this.exchangeId, data, false))
      } else {
        this.pending.push(data)
        this.pendingBytes += n
        this.core.addBuffered(n)
        this.flush()
      }
    }
    return this.writable()
  }

  /** What write() returns: true when more can be written now, else false and onWritable() follows. */
  protected writable(): boolean {
    if (this.pendingBytes === 0 && this.sendCredit > 0 && !this.core.congested) return true
    this.wantWritable = true
    if (this.core.congested) this.core.block(this)
    return false
  }

  /** Scans outgoing data for an oversized message; false (and the stream aborted) when there is one. */
  protected scanned(data: Uint8Array): boolean {
    const over = this.scanOut.push(data)
    if (over < 0) return true
    this.abort(
      Code.ResourceExhausted,
      `${this.sendsWhat} message of ${over} bytes exceeds the max message size of ${this.core.options.maxMessageBytes} bytes`,
    )
    return false
  }

  /** Called before the first data frame goes out (the callee sends its headers). */
  protected beforeData(): void {}

  /** Resumes delivery after onData returned false. */
  resume(): void {
    if (this.ended || !this.paused) return
    this.paused = false
    this.deliver()
  }

  /** @internal Sends pending data within credit, then the local end. */
  flush(): void {
    if (this.ended || !this.announced) return
    while (this.pendingBytes > 0) {
      if (this.core.congested) {
        this.core.block(this)
        return
      }
      if (this.sendCredit === 0) return
      const chunk = this.pending[0]!
      let piece = chunk
      if (chunk.byteLength > this.sendCredit) {
        piece = chunk.subarray(0, this.sendCredit)
        this.pending[0] = chunk.subarray(this.sendCredit)
      } else {
        this.pending.shift()
      }
      const n = piece.byteLength
      this.sendCredit -= n
      this.pendingBytes -= n
      this.core.addBuffered(-n)
      const last = this.pendingBytes === 0 && this.endQueued && this.endsWithData
      if (last) this.endSent = true
      this.beforeData()
      this.core.send(dataFrame(this.exchangeId, piece, last))
    }
    if (this.endQueued && !this.endSent) {
      this.endSent = true
      this.sendEnd()
      return
    }
    if (this.wantWritable && this.sendCredit > 0) {
      if (this.core.congested) {
        this.core.block(this)
      } else {
        this.wantWritable = false
        this.events.onWritable()
      }
    }
  }

  /** True when the local end rides on the last data frame (the caller's half-close). */
  protected abstract readonly endsWithData: boolean

  /** @internal Data from the peer. */
  receiveData(data: Uint8Array, endOfStream: boolean): void {
    this.heard = true
    if (this.ended) return
    const n = data.byteLength
    if (this.remoteEnded) {
      this.protocolError(`sent ${this.receivesWhat} data after its end of stream`)
      return
    }
    if (n > this.recvAllowed) {
      this.protocolError(`sent ${n} bytes with only ${this.recvAllowed} bytes of flow-control credit`)
      return
    }
    this.recvAllowed -= n
    if (n > 0) {
      const over = this.scanIn.push(data)
      if (over >= 0) {
        this.abort(
          Code.ResourceExhausted,
          `${this.receivesWhat} message of ${over} bytes exceeds the max message size of ${this.core.options.maxMessageBytes} bytes`,
        )
        return
      }
      if (!this.paused && this.queuedBytes === 0 && !this.delivering) {
        this.unacked += n
        this.delivering = true
        this.paused = this.events.onData(data) === false
        this.delivering = false
        if (this.ended) return
        // Data that arrived while onData ran (a synchronous link) waits in the queue.
        if (this.queue.length > 0) this.deliver()
        else this.maybeGrant()
        if (this.ended) return
      } else {
        this.queue.push(data)
        this.queuedBytes += n
        this.core.addBuffered(n)
      }
    }
    if (endOfStream) this.endFromPeer()
  }

  /** The peer's end (end of stream or close) arrived: delivered once every byte before it was. */
  protected endFromPeer(): void {
    this.remoteEnded = true
    if (this.queuedBytes === 0 && !this.delivering) this.endOfPeer()
  }

  /** Grants the peer credit beyond what its consumer took (the callee's top-up to its window at open). */
  protected grant(credit: number): void {
    this.recvAllowed += credit
    this.core.send(windowFrame(this.exchangeId, credit))
  }

  /** @internal The peer broke the protocol on this stream: reset it with INTERNAL. */
  protocolError(what: string): void {
    this.abort(Code.Internal, `tunnel protocol error: peer ${this.core.remotePeerId} ${what}`)
  }

  private deliver(): void {
    if (this.delivering) return
    this.delivering = true
    while (!this.paused && this.queue.length > 0) {
      const chunk = this.queue.shift()!
      const n = chunk.byteLength
      this.queuedBytes -= n
      this.core.addBuffered(-n)
      this.unacked += n
      this.paused = this.events.onData(chunk) === false
      if (this.ended) {
        this.delivering = false
        return
      }
    }
    this.delivering = false
    this.maybeGrant()
    if (this.remoteEnded && this.queuedBytes === 0) this.endOfPeer()
  }

  private endOfPeer(): void {
    if (this.endDelivered) return
    this.endDelivered = true
    this.deliverEnd()
  }

  /** Grants the consumed bytes back once they are worth a frame (a quarter of the window). */
  private maybeGrant(): void {
    if (this.unacked < this.grantThreshold || this.remoteEnded) return
    const credit = this.unacked
    this.unacked = 0
    this.recvAllowed += credit
    this.core.send(windowFrame(this.exchangeId, credit))
  }

  /** @internal Credit from the peer. */
  receiveWindow(credit: number): void {
    this.heard = true
    if (this.ended) return
    this.sendCredit += credit
    this.flush()
  }

  /** @internal The peer reset the stream. */
  receiveReset(code: number, message: string): void {
    this.heard = true
    this.terminate({ code, message, trailers: [], from: 'peer' }, true)
  }

  /** Ends the stream at once with this status, telling the peer; the consumer gets no onClose. */
  reset(code: Code, message: string): void {
    if (this.ended) return
    if (this.announced) this.core.send(resetFrame(this.exchangeId, code, message))
    this.terminate({ code, message, trailers: [] }, false)
  }

  /** Ends the stream on a local failure: tells the peer and the consumer. */
  protected abort(code: Code, message: string): void {
    if (this.ended) return
    if (this.announced) this.core.send(resetFrame(this.exchangeId, code, message))
    this.terminate({ code, message, trailers: [], from: 'local' }, true)
  }

  /** Starts the deadline timer. */
  protected armDeadline(ms: number): void {
    // A closure per stream: ~0.2 µs more than an argument-passing timer, measured; not worth a second clock type.
    this.timer = this.core.options.clock.setTimeout(() => this.deadlineExceeded(), Math.max(0, ms))
  }

  /** @internal The deadline timer fired. */
  deadlineExceeded(): void {
    this.timer = undefined
    this.abort(Code.DeadlineExceeded, this.deadlineMessage())
  }

  /** @internal Ends the stream: forgets it, drops its buffers, and tells the consumer when notify is set. */
  terminate(status: TunnelStatus, notify: boolean): void {
    if (this.ended) return
    this.ended = true
    this.core.remove(this)
    this.timer?.clear()
    this.timer = undefined
    const held = this.queuedBytes + this.pendingBytes
    if (held > 0) this.core.addBuffered(-held)
    this.queue.length = 0
    this.pending.length = 0
    this.queuedBytes = 0
    this.pendingBytes = 0
    if (notify) this.events.onClose(status)
  }
}

/** Consumer events a stream starts with until its consumer is attached. */
export const DETACHED: StreamEvents = {
  onData: () => false,
  onClose: () => {},
  onWritable: () => {},
}
