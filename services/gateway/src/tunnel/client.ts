import { durationOfMs } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry, PeerFrame, StreamOpen } from '@stargate/shared/gen/envelope'
import type { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import {
  EndpointCore,
  resolveTunnelOptions,
  type StreamEvents,
  type TunnelLink,
  type TunnelOptions,
  type TunnelStatus,
  TunnelStream,
} from './endpoint.ts'
import { dataFrame, OPEN_CREDIT_BYTES, openFrame } from './frames.ts'

/** Where a tunnelled call went: the peer that answered it and the tier of the link. */
export interface TunnelVia {
  peerId: string
  tier: Tier
}

/** The caller's consumer of one stream: the response side of a tunnelled call. */
export interface ClientStreamEvents extends StreamEvents {
  /**
   * The callee's response headers, and the peer and tier they came from: at most once, before any data.
   * A trailers-only answer has none.
   */
  onHeaders(metadata: MetadataEntry[], via: TunnelVia): void
}

/** A call to tunnel. */
export interface OpenInit {
  /** Full method path, "/package.Service/Method". */
  method: string
  /** Identifies the call across attempts (its idempotency key when `idempotent`). */
  requestId: string
  /** True when requestId is the client's idempotency key: the callee runs the call at most once. */
  idempotent?: boolean
  /** Request metadata in wire form, already filtered (wire.ts metadataFromRawHeaders). */
  metadata: MetadataEntry[]
  /** When the call's deadline passes (none: no deadline). The stream ends DEADLINE_EXCEEDED then. */
  deadlineAtMs?: number
  /** W3C trace context of the caller's span (traceparent, tracestate). */
  traceContext?: Record<string, string>
}

export interface TunnelClientOptions extends Partial<TunnelOptions> {
  log: Logger
  /** This gateway (the caller), sent in every StreamOpen. */
  localPeerId: string
  /** The gateway at the other end of the link. */
  remotePeerId: string
  /** The tier the link runs on. */
  tier: Tier
  /** Called when a stream opens (the owner of a link watches its liveness while streams are open). */
  onOpen?: () => void
}

const EMPTY = new Uint8Array(0)
const METHOD_PATH = /^\/[^/]+\/[^/]+$/

/**
 * The caller half of tunnelled gRPC streams on one frame link: opens streams, sends request data within
 * the callee's credit, delivers the response (headers, data, status and trailers) as its consumer drains.
 * The StreamOpen of a new stream waits for the end of the current event-loop turn, so that request data
 * and end of stream written in that turn travel in it (a unary call is one frame).
 */
export class TunnelClient extends EndpointCore {
  private readonly localPeerId: string
  private readonly tier: Tier
  private readonly onOpen?: () => void
  private nextId = 1n
  private readonly opening: TunnelClientStream[] = []
  private flushScheduled = false

  constructor(link: TunnelLink, options: TunnelClientOptions) {
    super(link, options.remotePeerId, resolveTunnelOptions(options))
    this.localPeerId = options.localPeerId
    this.tier = options.tier
    this.onOpen = options.onOpen
  }

  /** True while streams can be opened (the link has not failed). */
  get usable(): boolean {
    return this.failure == null
  }

  /**
   * Opens a stream. Throws UNAVAILABLE when the link failed, RESOURCE_EXHAUSTED at the per-link stream
   * limit, INVALID_ARGUMENT for a method that is not a gRPC path.
   */
  open(init: OpenInit, events: ClientStreamEvents): TunnelClientStream {
    if (this.failure != null) {
      throw new StargateError(Code.Unavailable, `the tunnel link to peer ${this.remotePeerId} failed (${this.failure.rawMessage})`, {
        cause: this.failure,
      })
    }
    if (this.streams.size >= this.options.maxStreams) {
      throw new StargateError(
        Code.ResourceExhausted,
        `${this.options.maxStreams} tunnelled streams are already open on the link to peer ${this.remotePeerId} (the limit per link)`,
      )
    }
    if (!METHOD_PATH.test(init.method)) {
      throw new StargateError(Code.InvalidArgument, `method ${JSON.stringify(init.method)} is not a gRPC path "/package.Service/Method"`)
    }
    const exchangeId = this.nextId++
    const open: StreamOpen = {
      $typeName: 'stargate.v1.StreamOpen',
      exchangeId,
      requestId: init.requestId,
      method: init.method,
      metadata: init.metadata,
      traceContext: init.traceContext ?? {},
      callerPeerId: this.localPeerId,
      tier: this.tier,
      initialWindowBytes: this.options.windowBytes,
      data: EMPTY,
      endOfStream: false,
      idempotent: init.idempotent === true,
    }
    const stream = new TunnelClientStream(this, open, events, init.deadlineAtMs)
    this.streams.set(exchangeId, stream)
    this.opening.push(stream)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(this.flushOpens)
    }
    this.onOpen?.()
    return stream
  }

  private readonly flushOpens = (): void => {
    this.flushScheduled = false
    for (const stream of this.opening.splice(0)) stream.sendOpen()
  }

  protected receiveOther(frame: PeerFrame): void {
    const kind = frame.kind
    switch (kind.case) {
      case 'streamHeaders':
        ;(this.streams.get(kind.value.exchangeId) as TunnelClientStream | undefined)?.receiveHeaders(kind.value.metadata)
        return
      case 'streamClose':
        ;(this.streams.get(kind.value.exchangeId) as TunnelClientStream | undefined)?.receiveClose({
          code: kind.value.code,
          message: kind.value.message,
          trailers: kind.value.trailers,
          from: 'peer',
        })
        return
      default:
        this.unexpected++
        this.options.log.debug('unexpected frame on the caller side of a tunnel link', { kind: kind.case, peer: this.remotePeerId })
    }
  }
}

/** One tunnelled call as its caller sees it. */
export class TunnelClientStream extends TunnelStream {
  protected readonly sendsWhat = 'request'
  protected readonly receivesWhat = 'response'
  protected readonly endsWithData = true
  private readonly clientEvents: ClientStreamEvents
  /** The StreamOpen until it leaves. */
  private opening?: StreamOpen
  private readonly deadlineAtMs?: number
  private readonly timeoutMs: number
  private headersReceived = false
  private closeStatus?: TunnelStatus
  private readonly via: TunnelVia

  constructor(client: TunnelClient, open: StreamOpen, events: ClientStreamEvents, deadlineAtMs: number | undefined) {
    super(client, open.exchangeId, events, OPEN_CREDIT_BYTES, client.options.windowBytes)
    this.clientEvents = events
    this.via = { peerId: client.remotePeerId, tier: open.tier }
    this.opening = open
    this.deadlineAtMs = deadlineAtMs
    this.timeoutMs = deadlineAtMs == null ? 0 : Math.max(0, deadlineAtMs - client.options.clock.nowMs())
    if (deadlineAtMs != null) this.armDeadline(this.timeoutMs)
  }

  protected get announced(): boolean {
    return this.opening == null
  }

  /** True once the StreamOpen was handed to the link: from then on the callee may have seen the call. */
  get openSent(): boolean {
    return this.opening == null
  }

  /** @internal Sends the StreamOpen (with the data and end written before it left), then what waits. */
  sendOpen(): void {
    const open = this.opening
    if (open == null || this.ended) return
    this.opening = undefined
    // Whole ms, rounded up: less than 1 ms left is not sent as a deadline already passed.
    if (this.deadlineAtMs != null) open.timeout = durationOfMs(this.deadlineAtMs - this.core.options.clock.nowMs())
    this.core.send(openFrame(open))
    this.flush()
  }

  override write(data: Uint8Array): boolean {
    const open = this.opening
    if (open != null && !this.ended && !this.endQueued && data.byteLength > 0) {
      // The first chunk rides in the StreamOpen when it fits the opening credit.
      if (open.data.byteLength === 0 && data.byteLength <= this.sendCredit) {
        if (!this.scanned(data)) return false
        open.data = data
        this.sendCredit -= data.byteLength
        return this.writable()
      }
      this.sendOpen()
    }
    return super.write(data)
  }

  /** Ends the request data (half-close); the response keeps coming. */
  end(): void {
    if (this.ended || this.endQueued) return
    this.endQueued = true
    const open = this.opening
    if (open != null && this.pendingBytes === 0) {
      open.endOfStream = true
      this.endSent = true
      return
    }
    this.flush()
  }

  protected sendEnd(): void {
    this.core.send(dataFrame(this.exchangeId, EMPTY, true))
  }

  /** @internal The callee's response headers. */
  receiveHeaders(metadata: MetadataEntry[]): void {
    this.heard = true
    if (this.ended) return
    if (this.headersReceived || this.remoteEnded) {
      this.protocolError('sent response headers twice or after the status')
      return
    }
    this.headersReceived = true
    this.clientEvents.onHeaders(metadata, this.via)
  }

  /** @internal The callee's status: delivered after the data before it. */
  receiveClose(status: TunnelStatus): void {
    this.heard = true
    if (this.ended) return
    if (this.remoteEnded) {
      this.protocolError('sent a second status')
      return
    }
    this.closeStatus = status
    this.endFromPeer()
  }

  protected deliverEnd(): void {
    this.terminate(this.closeStatus!, true)
  }

  protected deadlineMessage(): string {
    return `deadline exceeded: the call did not finish within its ${Math.round(this.timeoutMs)} ms deadline`
  }
}
