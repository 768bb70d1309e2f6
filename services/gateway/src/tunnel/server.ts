import { durationToMs } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry, PeerFrame, StreamOpen } from '@stargate/shared/gen/envelope'
import type { Logger } from '@stargate/shared/log'
import {
  DETACHED,
  EndpointCore,
  resolveTunnelOptions,
  type StreamEvents,
  type TunnelLink,
  type TunnelOptions,
  TunnelStream,
} from './endpoint.ts'
import { closeFrame, headersFrame, OPEN_CREDIT_BYTES, resetFrame } from './frames.ts'

/** The callee's consumer of one stream: the request side of a tunnelled call. */
export interface ServerStreamEvents extends StreamEvents {
  /** The caller half-closed: no more request data. */
  onEnd(): void
}

/**
 * Takes a new stream: returns its consumer. May answer at once (stream.close) and return any consumer.
 * A handler that throws ends the stream with the error's status.
 */
export type TunnelHandler = (stream: TunnelServerStream, open: StreamOpen) => ServerStreamEvents

export interface TunnelServerOptions extends Partial<TunnelOptions> {
  log: Logger
  /** The calling gateway, as the transport verified it; a StreamOpen naming another caller is refused. */
  remotePeerId: string
  handler: TunnelHandler
}

/**
 * The callee half of tunnelled gRPC streams on one frame link: accepts StreamOpens (up to the stream
 * limit), hands each to the handler, delivers request data as the handler's consumer drains, and sends
 * the response (headers, data within the caller's credit, status and trailers). The caller's timeout is
 * enforced here too.
 */
export class TunnelServer extends EndpointCore {
  private readonly handler: TunnelHandler

  constructor(link: TunnelLink, options: TunnelServerOptions) {
    super(link, options.remotePeerId, resolveTunnelOptions(options))
    this.handler = options.handler
  }

  protected receiveOther(frame: PeerFrame): void {
    if (frame.kind.case === 'streamOpen') {
      this.accept(frame.kind.value)
      return
    }
    this.unexpected++
    this.options.log.debug('unexpected frame on the callee side of a tunnel link', { kind: frame.kind.case, peer: this.remotePeerId })
  }

  private accept(open: StreamOpen): void {
    if (this.failure != null) return
    const id = open.exchangeId
    const existing = this.streams.get(id)
    if (existing != null) {
      existing.protocolError(`opened stream ${id} twice`)
      return
    }
    if (this.streams.size >= this.options.maxStreams) {
      this.send(
        resetFrame(
          id,
          Code.ResourceExhausted,
          `the callee's gateway already serves ${this.options.maxStreams} tunnelled streams from peer ${this.remotePeerId} (the limit per link)`,
        ),
      )
      return
    }
    if (open.callerPeerId !== '' && open.callerPeerId !== this.remotePeerId) {
      this.send(
        resetFrame(id, Code.PermissionDenied, `stream names caller ${open.callerPeerId} but the link belongs to ${this.remotePeerId}`),
      )
      return
    }
    const stream = new TunnelServerStream(this, id, open.initialWindowBytes)
    this.streams.set(id, stream)
    let events: ServerStreamEvents
    try {
      events = this.handler(stream, open)
    } catch (err: unknown) {
      const e = StargateError.from(err, Code.Internal)
      stream.close(e.code, e.rawMessage, [])
      return
    }
    stream.attach(events, open)
  }
}

/** One tunnelled call as its callee sees it. */
export class TunnelServerStream extends TunnelStream {
  protected readonly sendsWhat = 'response'
  protected readonly receivesWhat = 'request'
  protected readonly endsWithData = false
  private serverEvents: ServerStreamEvents = { ...DETACHED, onEnd: () => {} }
  private headersSent = false
  private closing?: { code: number; message: string; trailers: MetadataEntry[] }
  private timeoutMs = 0

  constructor(server: TunnelServer, exchangeId: bigint, initialWindowBytes: number) {
    super(server, exchangeId, DETACHED, initialWindowBytes, OPEN_CREDIT_BYTES)
  }

  /** @internal Attaches the handler's consumer, grants the window, starts the deadline, delivers the open's data. */
  attach(events: ServerStreamEvents, open: StreamOpen): void {
    if (this.ended) return
    this.serverEvents = events
    this.events = events
    const topUp = this.core.options.windowBytes - OPEN_CREDIT_BYTES
    if (topUp > 0) this.grant(topUp)
    if (open.timeout != null) {
      this.timeoutMs = durationToMs(open.timeout)
      this.armDeadline(this.timeoutMs)
    }
    if (open.data.byteLength > 0 || open.endOfStream) this.receiveData(open.data, open.endOfStream)
  }

  protected get announced(): boolean {
    return true
  }

  /** Sends the response headers (once; an empty set goes before the first data when none was sent). */
  sendHeaders(metadata: MetadataEntry[]): void {
    if (this.ended || this.headersSent || this.endQueued) return
    this.headersSent = true
    this.core.send(headersFrame(this.exchangeId, metadata))
  }

  protected override beforeData(): void {
    if (!this.headersSent) this.sendHeaders([])
  }

  /** Ends the call with a status (code 0 is OK) and trailers, after the response data written so far. */
  close(code: number, message: string, trailers: MetadataEntry[]): void {
    if (this.ended || this.endQueued) return
    this.closing = { code, message, trailers }
    this.endQueued = true
    this.flush()
  }

  protected sendEnd(): void {
    const c = this.closing!
    this.core.send(closeFrame(this.exchangeId, c.code, c.message, c.trailers))
    this.terminate({ code: c.code, message: c.message, trailers: c.trailers }, false)
  }

  protected deliverEnd(): void {
    this.serverEvents.onEnd()
  }

  protected deadlineMessage(): string {
    return `deadline exceeded: the call's ${Math.round(this.timeoutMs)} ms left at open passed at the callee's gateway`
  }
}
