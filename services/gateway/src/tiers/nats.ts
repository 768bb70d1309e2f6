import { create, toBinary } from '@bufbuild/protobuf'
import { durationToMs } from '@stargate/shared/clock'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import { type PeerFrame, PeerFrameSchema, type PeerResponse } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { OpenOptions } from '@stargate/shared/seal'
import type { NatsBus } from '../nats.ts'
import type { RequestSink } from '../peer/server.ts'
import type { NatsStreams } from './nats-streams.ts'
import type { Purpose, TierInbound, TierLink, TierTransport } from './tier.ts'

/** Seals and opens NATS payloads (end-to-end encryption to the recipient, authenticated sender): seal.ts. */
export interface NatsCodec {
  seal(frame: Uint8Array, recipientPeerId: string): Uint8Array
  open(bytes: Uint8Array, options?: OpenOptions): { senderPeerId: string; frame: Uint8Array }
}

/** What the NATS tier needs. */
export interface NatsTierComponents {
  /** Undefined when NATS is not configured. */
  bus?: NatsBus
  codec: NatsCodec
  /** Timeout of a request that carries none. */
  attemptTimeoutMs: number
  /** Tunnelled gRPC streams on NATS (undefined when NATS is not configured). */
  streams?: NatsStreams
}

/**
 * Tier 3: NATS request-reply on the target's subject for Calls, carrying the same envelope as libp2p,
 * sealed; tunnelled gRPC streams as sealed, numbered frames on per-stream subjects (nats-streams.ts).
 */
export class NatsTier implements TierTransport {
  readonly tier = Tier.NATS
  private readonly c: NatsTierComponents

  constructor(components: NatsTierComponents) {
    this.c = components
  }

  async unavailableReason(_peerId?: string, purpose: Purpose = 'call'): Promise<string | undefined> {
    const bus = this.c.bus
    if (bus == null) return 'NATS is not configured (--nats)'
    if (!bus.connected) return `NATS is not connected (${bus.url})`
    if (purpose === 'stream') return this.c.streams?.unavailableReason()
    return undefined
  }

  async connect(peerId: string): Promise<TierLink> {
    const bus = this.c.bus
    if (bus == null || !bus.connected) throw new StargateError(Code.Unavailable, (await this.unavailableReason()) ?? 'NATS unavailable')
    const subject = bus.callSubject(peerId)
    const { codec, streams } = this.c
    return {
      via: subject,
      ...(streams != null ? { openStream: (init, events) => streams.openStream(peerId, init, events) } : {}),
      send: async (req, signal): Promise<PeerResponse> => {
        const frame = toBinary(PeerFrameSchema, create(PeerFrameSchema, { kind: { case: 'request', value: { ...req, exchangeId: 1n } } }))
        const timeoutMs = req.timeout != null ? durationToMs(req.timeout) : this.c.attemptTimeoutMs
        // Only an answer sealed by the target for this very request settles the call; any other is dropped
        // before it is recorded as received, so the genuine answer can still arrive.
        return bus.request(subject, codec.seal(frame, peerId), timeoutMs, signal, (answer) => {
          let response: PeerResponse | undefined
          codec.open(answer, {
            expectedSender: peerId,
            check: (bytes) => {
              const decoded = decodePeerFrame(bytes)
              if (decoded.kind.case !== 'response') throw new StargateError(Code.InvalidArgument, 'NATS answer is not a response frame')
              if (decoded.kind.value.requestId !== (req.requestId ?? '')) {
                throw new StargateError(
                  Code.PermissionDenied,
                  `NATS answer is for request ${JSON.stringify(decoded.kind.value.requestId)}, not ${JSON.stringify(req.requestId)}`,
                )
              }
              response = decoded.kind.value
            },
          })
          return response as PeerResponse
        })
      },
    }
  }
}

/**
 * The callee side of the NATS tier: requests sealed to this gateway on its call subject, opened (sender
 * verified), handed to the inbound dispatcher, answered sealed to the verified sender. A StreamOpen starts
 * a tunnelled stream (nats-streams.ts); an empty message is a stream caller's liveness probe, answered empty.
 */
export function natsInbound(bus: NatsBus, selfPeerId: string, codec: NatsCodec, sink: RequestSink, streams?: NatsStreams): TierInbound {
  return {
    async start() {
      bus.subscribe(bus.callSubject(selfPeerId), (data, reply, info) => {
        if (data.byteLength === 0) {
          reply?.(data)
          return
        }
        let frame: PeerFrame
        let sender: string
        try {
          const opened = codec.open(data)
          sender = opened.senderPeerId
          frame = decodePeerFrame(opened.frame)
        } catch (err: unknown) {
          sink.dropped('malformed NATS message', { err: messageOf(err) })
          return
        }
        if (frame.kind.case === 'streamOpen' && streams != null) {
          streams.accept(frame, sender, info.replySubject)
          return
        }
        if (frame.kind.case !== 'request' || reply == null) {
          sink.dropped('NATS message that is not a request with a reply subject', { kind: frame.kind.case, sender })
          return
        }
        const req = frame.kind.value
        if (req.callerPeerId !== '' && req.callerPeerId !== sender) {
          sink.dropped('NATS request whose caller_peer_id differs from its verified sender', { sender })
          return
        }
        sink
          .handle(req, { callerPeerId: sender, tier: Tier.NATS }, NEVER)
          .then((res) =>
            reply(codec.seal(toBinary(PeerFrameSchema, create(PeerFrameSchema, { kind: { case: 'response', value: res } })), sender)),
          )
          .catch((err: unknown) => sink.dropped('NATS reply failed', { err: messageOf(err) }))
      })
    },
    async stop() {
      streams?.failAll('the gateway is stopping', 'disconnected')
    },
  }
}

/** NATS request-reply has no cancellation: a request runs until answered or its own deadline. */
const NEVER = new AbortController().signal
