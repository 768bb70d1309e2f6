import { randomBytes } from 'node:crypto'
import { toBinary } from '@bufbuild/protobuf'
import { type Clock, systemClock, type Timer } from '@stargate/shared/clock'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import { type PeerFrame, PeerFrameSchema, type StreamOpen } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import { type Logger, RateLimitedLog } from '@stargate/shared/log'
import { SEAL_OVERHEAD_BYTES, type Sealer } from '@stargate/shared/seal'
import type { BusHandler, BusSubscription } from '../nats.ts'
import type { StreamSink } from '../peer/server.ts'
import { type ClientStreamEvents, type OpenInit, TunnelClient, type TunnelClientStream } from '../tunnel/client.ts'
import type { TunnelEndpoint, TunnelLink, TunnelOptions } from '../tunnel/endpoint.ts'
import { dataFrame, openFrame, resetFrame, windowFrame } from '../tunnel/frames.ts'
import { TunnelServer } from '../tunnel/server.ts'

/**
 * Tunnelled gRPC streams on the NATS tier: the same TunnelClient / TunnelServer as on libp2p (credit flow
 * control, resets, deadlines, limits; at the callee the same caller policy, exposure checks and egress), over
 * one NATS link per stream.
 *
 * - Subjects. The caller subscribes `<prefix>.stream.<caller id>.<token>` for the stream and publishes the
 *   StreamOpen to the callee's call subject with that as its reply subject. The callee subscribes a subject
 *   of its own, `<prefix>.stream.<callee id>.<token>`, and sends every frame to the caller's subject with its
 *   own as reply subject; the caller's later frames go there (until the callee's first frame arrives, they
 *   wait: at most the opening credit of request data and a reset). Each side removes its subscription when
 *   the stream ends on its side (close, reset, deadline, a failure).
 * - Frames are PeerFrames sealed to the peer (seal.ts), numbered per stream and direction (PeerFrame.sequence,
 *   from 1). A receiver takes a frame only as the next of its stream: a gap (a frame lost) or a repeat ends
 *   the stream UNAVAILABLE at once, both sides (a reset goes to the peer), and nothing is replayed. NATS keeps
 *   the order of one publisher's messages, so there is no reordering buffer: any disorder is a loss.
 * - Memory is bounded by the tunnel's credits: a sender publishes data only within the credit its receiver
 *   granted, a receiver grants only what its consumer took, so at most the window per stream and direction is
 *   in flight or buffered on either gateway, whatever the peer does (data beyond credit resets the stream).
 * - Size: data frames are split to fit the server's max_payload (sealed frame: the data plus 113 bytes of
 *   sealing plus a few bytes of framing); a StreamOpen too large travels without its data, which follows in
 *   data frames. Metadata must fit one message: max_payload must be at least NATS_STREAM_MIN_PAYLOAD_BYTES.
 * - Liveness. Every frame carries its sender's stream subject as reply subject, so a frame sent to a subject
 *   nobody listens on any more (the peer ended the stream or went away) comes back as the server's "no
 *   responders" status and ends the stream; a StreamOpen that reaches nobody ends it as undelivered (the call
 *   may move to another tier). A stream that heard nothing for natsStreamProbeMs probes its peer (an empty
 *   request to the peer's stream subject, or its call subject before the callee answered): no responders, no
 *   answer within natsStreamProbeTimeoutMs, or a callee that answers on its call subject without having
 *   acknowledged the StreamOpen (it refused or never got it) end the stream UNAVAILABLE. Losing the NATS
 *   connection ends every stream on it.
 */

/** The smallest NATS max_payload the tier carries streams with (metadata of a frame must fit one message). */
export const NATS_STREAM_MIN_PAYLOAD_BYTES = 64 * 1024

/** Bytes a sealed frame needs beyond its data: sealing, then the PeerFrame's tags, lengths, ids and sequence. */
const FRAME_OVERHEAD_BYTES = SEAL_OVERHEAD_BYTES + 64

const EMPTY = new Uint8Array(0)
const NEVER = new AbortController().signal

/** What the NATS stream links need of the bus (NatsBus; unit tests use an in-memory one). */
export interface StreamBus {
  readonly connected: boolean
  /** The server's max_payload, 0 when not connected. */
  readonly maxPayloadBytes: number
  callSubject(peerId: string): string
  streamSubject(peerId: string, token: string): string
  subscribe(subject: string, handler: BusHandler): BusSubscription
  /** False when the message was not sent (not connected, refused by the client). */
  publish(subject: string, data: Uint8Array, reply?: string): boolean
  /** Request-reply; rejects UNAVAILABLE when nobody listens, DEADLINE_EXCEEDED without an answer in time. */
  request<T>(subject: string, data: Uint8Array, timeoutMs: number, signal: AbortSignal, accept: (answer: Uint8Array) => T): Promise<T>
  onDisconnected(fn: (reason: string) => void): void
}

/** Seals frames to a peer and opens the peer's (the gateway's Sealer, as for Calls on NATS). */
export type StreamCodec = Pick<Sealer, 'seal' | 'open'>

export interface NatsStreamsOptions {
  bus: StreamBus
  codec: StreamCodec
  selfPeerId: string
  /** Where tunnelled streams from other gateways go (the tunnel callee: exposure checks, egress). */
  sink: StreamSink
  /** Window and message size of the stream endpoints (both sides). */
  limits: Partial<Omit<TunnelOptions, 'log' | 'clock'>>
  /** Streams open at once to one peer, and served at once for one caller. */
  maxStreamsPerPeer: number
  /** Streams served at once for all callers. */
  maxInboundStreams: number
  /** A stream that heard nothing from its peer for this long probes it. */
  probeMs: number
  /** A probe unanswered for this long ends the stream. */
  probeTimeoutMs: number
  clock?: Clock
  log: Logger
}

/** Why NATS streams ended other than by their own status, counted. */
export type NatsStreamFailure = 'lost' | 'peer_gone' | 'unanswered' | 'disconnected' | 'too_large' | 'refused'

/** Figures of the NATS stream links of a gateway. */
export interface NatsStreamStats {
  /** Streams open now that this gateway called. */
  callerStreams: number
  /** Streams open now that other gateways called here. */
  calleeStreams: number
  /** Per-stream subscriptions held now (one per open stream, and for a caller's ended stream until its callee answered). */
  subscriptions: number
  /** Streams that ended on a NATS failure, by reason. */
  failures: Record<NatsStreamFailure, number>
}

/**
 * The NATS stream links of one gateway: opens caller streams, accepts StreamOpens arriving on the call
 * subject, counts streams per peer, probes quiet streams, and ends every stream when NATS is lost.
 */
export class NatsStreams {
  readonly o: NatsStreamsOptions
  readonly clock: Clock
  readonly warnings: RateLimitedLog
  private readonly links = new Set<NatsStreamLink>()
  /** Streams open per side and peer ("caller <id>", "callee <id>"). */
  private readonly perPeer = new Map<string, number>()
  private readonly open = { caller: 0, callee: 0 }
  private sweep?: Timer
  private readonly failures: Record<NatsStreamFailure, number> = {
    lost: 0,
    peer_gone: 0,
    unanswered: 0,
    disconnected: 0,
    too_large: 0,
    refused: 0,
  }

  constructor(options: NatsStreamsOptions) {
    this.o = options
    this.clock = options.clock ?? systemClock
    this.warnings = new RateLimitedLog(options.log)
    options.bus.onDisconnected((reason) => this.failAll(`${reason}; the stream ended and was not replayed`, 'disconnected'))
  }

  get stats(): NatsStreamStats {
    let subscriptions = 0
    for (const link of this.links) if (link.subscribed) subscriptions++
    return { callerStreams: this.open.caller, calleeStreams: this.open.callee, subscriptions, failures: { ...this.failures } }
  }

  /** Why streams cannot go over NATS now, or undefined. */
  unavailableReason(): string | undefined {
    const bus = this.o.bus
    if (!bus.connected) return 'NATS is not connected'
    if (bus.maxPayloadBytes < NATS_STREAM_MIN_PAYLOAD_BYTES) {
      return `the NATS server's max_payload of ${bus.maxPayloadBytes} bytes is below the ${NATS_STREAM_MIN_PAYLOAD_BYTES} bytes tunnelled streams need`
    }
    return undefined
  }

  /**
   * Opens a tunnelled stream to peerId on NATS. Throws (nothing sent) UNAVAILABLE when NATS cannot carry it,
   * RESOURCE_EXHAUSTED when as many streams as allowed are open to the peer.
   */
  openStream(peerId: string, init: OpenInit, events: ClientStreamEvents): TunnelClientStream {
    const reason = this.unavailableReason()
    if (reason != null) throw new StargateError(Code.Unavailable, reason)
    if ((this.perPeer.get(`caller ${peerId}`) ?? 0) >= this.o.maxStreamsPerPeer) {
      throw new StargateError(
        Code.ResourceExhausted,
        `${this.o.maxStreamsPerPeer} tunnelled streams are already open to peer ${peerId} on NATS (the limit per peer)`,
      )
    }
    const link = new NatsStreamLink(this, 'caller', peerId)
    const client = new TunnelClient(link, {
      ...this.o.limits,
      clock: this.clock,
      log: this.o.log,
      localPeerId: this.o.selfPeerId,
      remotePeerId: peerId,
      tier: Tier.NATS,
    })
    link.bind(client)
    this.added(link)
    try {
      return client.open(init, events)
    } catch (err: unknown) {
      link.close()
      throw err
    }
  }

  /** A StreamOpen sealed by `sender` arrived on this gateway's call subject, to be answered on `replySubject`. */
  accept(frame: PeerFrame, sender: string, replySubject: string): void {
    if (frame.kind.case !== 'streamOpen') return
    const open = frame.kind.value
    if (replySubject === '' || frame.sequence !== 1n) {
      this.warnings.warn('dropped a NATS StreamOpen without a reply subject or not numbered 1', { sender })
      return
    }
    const full = this.open.callee >= this.o.maxInboundStreams
    if (full || (this.perPeer.get(`callee ${sender}`) ?? 0) >= this.o.maxStreamsPerPeer) {
      this.failures.refused++
      const message = full
        ? `the callee's gateway already serves ${this.o.maxInboundStreams} tunnelled streams on NATS (its limit)`
        : `the callee's gateway already serves ${this.o.maxStreamsPerPeer} tunnelled streams from peer ${sender} on NATS (the limit per caller)`
      const reset = toBinary(PeerFrameSchema, { ...resetFrame(open.exchangeId, Code.ResourceExhausted, message), sequence: 1n })
      this.o.bus.publish(replySubject, this.o.codec.seal(reset, sender))
      return
    }
    const link = new NatsStreamLink(this, 'callee', sender, replySubject)
    const server = new TunnelServer(link, {
      ...this.o.limits,
      clock: this.clock,
      log: this.o.log,
      remotePeerId: sender,
      handler: this.o.sink.handler({ callerPeerId: sender, tier: Tier.NATS }),
    })
    link.bind(server)
    this.added(link)
    link.accepted(open.exchangeId)
    server.receive(frame)
    // Refused (a reset went out) or answered at once (a close went out): nothing is left of the stream.
    if (server.stats.streams === 0) link.close()
    else link.greet()
  }

  /** Ends every stream UNAVAILABLE: NATS was lost (or the gateway stops). */
  failAll(reason: string, why: NatsStreamFailure = 'disconnected'): void {
    for (const link of [...this.links]) link.fail(new StargateError(Code.Unavailable, reason), why)
  }

  private added(link: NatsStreamLink): void {
    this.links.add(link)
    const key = `${link.role} ${link.peerId}`
    this.perPeer.set(key, (this.perPeer.get(key) ?? 0) + 1)
    this.open[link.role]++
    this.armSweep()
  }

  /** @internal The link's stream ended on this side (the link may still wait for the callee's first frame). */
  ended(link: NatsStreamLink): void {
    const key = `${link.role} ${link.peerId}`
    const n = (this.perPeer.get(key) ?? 1) - 1
    if (n === 0) this.perPeer.delete(key)
    else this.perPeer.set(key, n)
    this.open[link.role]--
  }

  /** @internal The link holds nothing any more. */
  removed(link: NatsStreamLink): void {
    this.links.delete(link)
  }

  /** @internal */
  counted(why: NatsStreamFailure): void {
    this.failures[why]++
  }

  private armSweep(): void {
    if (this.sweep != null || this.links.size === 0) return
    this.sweep = this.clock.setTimeout(
      () => {
        this.sweep = undefined
        const now = this.clock.nowMs()
        for (const link of this.links) link.checkLiveness(now)
        this.armSweep()
      },
      Math.max(1, this.o.probeMs / 2),
    )
  }
}

/** One tunnelled stream's frame link on NATS, at the caller or at the callee. */
export class NatsStreamLink implements TunnelLink {
  readonly role: 'caller' | 'callee'
  readonly peerId: string
  /** This side's subject for the stream (subscribed while the stream lives). */
  readonly subject: string
  private readonly owner: NatsStreams
  private endpoint?: TunnelEndpoint
  private peerSubject?: string
  private sub?: BusSubscription
  private exchangeId = 0n
  private nextOut = 1
  private nextIn = 1
  /** The caller's frames until the callee's first frame names its subject. */
  private waiting: PeerFrame[] = []
  private openPublished = false
  /** The peer's close or reset arrived: "no responders" after it is the peer having ended, not a failure. */
  private peerEnded = false
  /** live: the stream is open here; lingering: it ended, but a frame waits for the callee's subject. */
  private state: 'live' | 'lingering' | 'closed' = 'live'
  private endedHere = false
  private lastHeardAtMs: number
  private probing = false
  private lingerTimer?: Timer

  constructor(owner: NatsStreams, role: 'caller' | 'callee', peerId: string, peerSubject?: string) {
    this.owner = owner
    this.role = role
    this.peerId = peerId
    this.peerSubject = peerSubject
    this.subject = owner.o.bus.streamSubject(owner.o.selfPeerId, randomBytes(12).toString('base64url'))
    this.lastHeardAtMs = owner.clock.nowMs()
  }

  bind(endpoint: TunnelEndpoint): void {
    this.endpoint = endpoint
  }

  get subscribed(): boolean {
    return this.sub != null
  }

  // The callee side.

  /** @internal The callee took the StreamOpen (number 1): subscribes its subject before anything is sent. */
  accepted(exchangeId: bigint): void {
    this.exchangeId = exchangeId
    this.nextIn = 2
    this.subscribe()
  }

  /** @internal The callee's first frame tells the caller its subject: an empty window when nothing went yet. */
  greet(): void {
    if (this.state === 'live' && this.nextOut === 1) this.send(windowFrame(this.exchangeId, 0))
  }

  // TunnelLink.

  send(frame: PeerFrame): boolean {
    if (this.state !== 'live') return true
    if (frame.kind.case === 'streamOpen' && this.role === 'caller' && !this.openPublished) {
      this.publishOpen(frame.kind.value)
    } else if (this.peerSubject == null) {
      this.waiting.push(frame)
    } else {
      this.publish(frame)
    }
    // Never congested: the tunnel's credits bound what is in flight (see the module comment).
    return true
  }

  streamEnded(): void {
    if (this.state !== 'live') return
    if (this.role === 'caller' && this.openPublished && this.peerSubject == null && this.waiting.length > 0 && !this.peerEnded) {
      // The callee has not named its subject yet: the reset (or end) waits for it, for at most a probe timeout.
      this.markEnded()
      this.state = 'lingering'
      this.lingerTimer = this.owner.clock.setTimeout(() => this.close(), this.owner.o.probeTimeoutMs)
      return
    }
    this.close()
  }

  /** Removes the subscription and forgets the link. Idempotent. */
  close(): void {
    if (this.state === 'closed') return
    this.markEnded()
    this.state = 'closed'
    this.sub?.unsubscribe()
    this.sub = undefined
    this.lingerTimer?.clear()
    this.waiting = []
    this.owner.removed(this)
  }

  /** Closes the link and ends its stream UNAVAILABLE (never replayed; `undelivered`: it never reached the peer). */
  fail(err: StargateError, why: NatsStreamFailure, undelivered = false): void {
    if (this.state === 'closed') return
    if (this.state === 'live') {
      this.owner.counted(why)
      this.owner.warnings.warn('tunnelled stream on NATS failed', { peer: this.peerId, role: this.role, reason: err.rawMessage })
    }
    this.close()
    this.endpoint?.fail(err, undelivered)
  }

  private markEnded(): void {
    if (this.endedHere) return
    this.endedHere = true
    this.owner.ended(this)
  }

  // Sending.

  private subscribe(): void {
    this.sub = this.owner.o.bus.subscribe(this.subject, this.onMessage)
  }

  private publishOpen(open: StreamOpen): void {
    this.exchangeId = open.exchangeId
    this.openPublished = true
    this.subscribe()
    const room = this.roomBytes()
    let encoded = this.encodeNext(openFrame(open))
    if (encoded.byteLength > room && open.data.byteLength > 0) {
      // The data follows in data frames of its own, once the callee named its subject.
      encoded = this.encodeNext(openFrame({ ...open, data: EMPTY, endOfStream: false }))
      this.waiting.push(dataFrame(open.exchangeId, open.data, open.endOfStream))
    }
    if (encoded.byteLength > room) {
      const message = `the StreamOpen's ${encoded.byteLength} bytes of metadata do not fit the NATS server's max_payload (${this.owner.o.bus.maxPayloadBytes} bytes)`
      this.fail(new StargateError(Code.ResourceExhausted, message), 'too_large', true)
      return
    }
    this.emit(this.owner.o.bus.callSubject(this.peerId), encoded)
  }

  /** Bytes a frame may have before sealing. */
  private roomBytes(): number {
    return this.owner.o.bus.maxPayloadBytes - SEAL_OVERHEAD_BYTES
  }

  /** The frame in wire form as the stream's next (numbered; the number is taken by emit). */
  private encodeNext(frame: PeerFrame): Uint8Array {
    return toBinary(PeerFrameSchema, { ...frame, sequence: BigInt(this.nextOut) })
  }

  private publish(frame: PeerFrame): void {
    const to = this.peerSubject!
    const kind = frame.kind
    if (kind.case === 'streamData') {
      const pieceBytes = this.owner.o.bus.maxPayloadBytes - FRAME_OVERHEAD_BYTES
      const { exchangeId, data, endOfStream } = kind.value
      if (data.byteLength > pieceBytes) {
        for (let at = 0; at < data.byteLength && this.state !== 'closed'; at += pieceBytes) {
          const end = Math.min(at + pieceBytes, data.byteLength)
          this.emit(to, this.encodeNext(dataFrame(exchangeId, data.subarray(at, end), endOfStream && end === data.byteLength)))
        }
        return
      }
    }
    const encoded = this.encodeNext(frame)
    if (encoded.byteLength > this.roomBytes()) {
      const message = `the ${kind.case} frame's ${encoded.byteLength} bytes do not fit the NATS server's max_payload (${this.owner.o.bus.maxPayloadBytes} bytes)`
      this.emit(to, this.encodeNext(resetFrame(this.exchangeId, Code.ResourceExhausted, message)))
      this.fail(new StargateError(Code.ResourceExhausted, message), 'too_large')
      return
    }
    this.emit(to, encoded)
  }

  /** Seals and publishes the next frame (from encodeNext), with this side's subject as reply subject. */
  private emit(to: string, encoded: Uint8Array): void {
    const o = this.owner.o
    this.nextOut++
    let sent: boolean
    try {
      sent = o.bus.publish(to, o.codec.seal(encoded, this.peerId), this.subject)
    } catch (err: unknown) {
      this.fail(StargateError.from(err, Code.Unavailable), 'disconnected')
      return
    }
    if (!sent) {
      const why = o.bus.connected ? 'the NATS client refused it' : 'NATS is not connected'
      this.fail(new StargateError(Code.Unavailable, `could not publish the stream's frame on NATS (${why})`), 'disconnected')
    }
  }

  // Receiving.

  private readonly onMessage: BusHandler = (data, _reply, info) => {
    if (this.state === 'closed') return
    if (info.noResponders) {
      this.noResponders()
      return
    }
    if (data.byteLength === 0) {
      // A liveness probe from the peer: answered.
      if (info.replySubject !== '') this.owner.o.bus.publish(info.replySubject, EMPTY)
      return
    }
    let frame: PeerFrame
    try {
      frame = decodePeerFrame(this.owner.o.codec.open(data, { expectedSender: this.peerId }).frame)
    } catch (err: unknown) {
      // Not from the peer, forged, replayed or malformed: dropped (the sealer counts refusals).
      this.owner.warnings.warn('dropped a message on a NATS stream subject', { subject: this.subject, err: messageOf(err) })
      return
    }
    this.take(frame, info.replySubject)
  }

  private take(frame: PeerFrame, replySubject: string): void {
    if (frame.sequence !== BigInt(this.nextIn)) {
      this.lost(frame.sequence)
      return
    }
    this.nextIn++
    this.lastHeardAtMs = this.owner.clock.nowMs()
    if (this.peerSubject == null && replySubject !== '') {
      this.peerSubject = replySubject
      const waiting = this.waiting
      this.waiting = []
      for (const f of waiting) {
        if (this.state === 'closed') return
        this.publish(f)
      }
    }
    if (this.state === 'lingering') {
      this.close()
      return
    }
    if (this.state !== 'live') return
    if (streamIdOf(frame) !== this.exchangeId) {
      const message = `tunnel protocol error: peer ${this.peerId} sent a ${frame.kind.case} frame on the subject of stream ${this.exchangeId}`
      this.fail(new StargateError(Code.Internal, message), 'lost')
      return
    }
    if (frame.kind.case === 'streamClose' || frame.kind.case === 'streamReset') this.peerEnded = true
    this.endpoint?.receive(frame)
  }

  /** A gap or a repeat in the peer's frames: the stream ends UNAVAILABLE on both sides, never replayed. */
  private lost(seq: bigint): void {
    const due = BigInt(this.nextIn)
    const what =
      seq < due ? `frame ${seq} again where frame ${due} was due (a repeat)` : `frame ${seq} where frame ${due} was due (${seq - due} lost)`
    const message = `NATS delivered ${what} on the stream from peer ${this.peerId}`
    if (this.peerSubject != null && this.state === 'live') {
      this.emit(
        this.peerSubject,
        this.encodeNext(resetFrame(this.exchangeId, Code.Unavailable, `${message}; the stream ended and was not replayed`)),
      )
    }
    this.fail(new StargateError(Code.Unavailable, message), 'lost')
  }

  /** Something this side published (its subject as reply subject) went to a subject nobody listens on. */
  private noResponders(): void {
    if (this.state === 'lingering' || this.peerEnded) {
      this.close()
      return
    }
    if (this.peerSubject == null) {
      const message = `no gateway listens on ${this.owner.o.bus.callSubject(this.peerId)} (peer ${this.peerId} is not connected to NATS)`
      this.fail(new StargateError(Code.Unavailable, message), 'peer_gone', true)
      return
    }
    const message = `peer ${this.peerId} no longer listens on the stream's NATS subject (it ended the stream or went away)`
    this.fail(new StargateError(Code.Unavailable, message), 'peer_gone')
  }

  /** @internal Probes the peer when the stream heard nothing for the probe interval. */
  checkLiveness(nowMs: number): void {
    if (this.state !== 'live' || this.probing || nowMs - this.lastHeardAtMs < this.owner.o.probeMs) return
    this.probing = true
    const o = this.owner.o
    const acknowledged = this.peerSubject != null
    const target = this.peerSubject ?? o.bus.callSubject(this.peerId)
    o.bus
      .request(target, EMPTY, o.probeTimeoutMs, NEVER, () => true)
      .then(
        () => {
          this.probing = false
          if (this.state !== 'live') return
          if (!acknowledged && this.peerSubject == null) {
            // The callee answers on its call subject in order: had it taken the StreamOpen, its first frame
            // would have arrived before this answer. It refused the StreamOpen or never got it.
            const message = `peer ${this.peerId} answers on NATS but did not take the stream (its StreamOpen was refused or lost)`
            this.fail(new StargateError(Code.Unavailable, message), 'unanswered', true)
            return
          }
          this.lastHeardAtMs = this.owner.clock.nowMs()
        },
        (err: unknown) => {
          this.probing = false
          if (this.state !== 'live') return
          const e = StargateError.from(err, Code.Unavailable)
          if (e.code === Code.Unavailable && o.bus.connected) {
            this.fail(
              new StargateError(Code.Unavailable, `peer ${this.peerId} no longer listens on NATS for the stream (${e.rawMessage})`),
              'peer_gone',
            )
          } else {
            const message = `peer ${this.peerId} did not answer a liveness probe on NATS within ${o.probeTimeoutMs} ms`
            this.fail(new StargateError(Code.Unavailable, message), 'unanswered')
          }
        },
      )
  }
}

/** The exchange id of a stream frame (undefined for other kinds). */
function streamIdOf(frame: PeerFrame): bigint | undefined {
  const kind = frame.kind
  switch (kind.case) {
    case 'streamOpen':
    case 'streamHeaders':
    case 'streamData':
    case 'streamClose':
    case 'streamReset':
    case 'streamWindow':
      return kind.value.exchangeId
    default:
      return undefined
  }
}
