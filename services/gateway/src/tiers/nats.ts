import { create, toBinary } from '@bufbuild/protobuf'
import { durationToMs } from '@stargate/shared/clock'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import { type PeerFrame, PeerFrameSchema, type PeerResponse } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { NatsBus } from '../nats.ts'
import type { RequestSink } from '../peer/server.ts'
import type { Purpose, TierInbound, TierLink, TierTransport } from './tier.ts'

/** Seals and opens NATS payloads (end-to-end encryption to the recipient, authenticated sender). */
export interface NatsCodec {
  seal(frame: Uint8Array, recipientPeerId: string): Uint8Array
  open(bytes: Uint8Array, expectedSender?: string): { senderPeerId?: string; frame: Uint8Array }
}

/** What the NATS tier needs. */
export interface NatsTierComponents {
  /** Undefined when NATS is not configured. */
  bus?: NatsBus
  codec: NatsCodec
  /** Timeout of a request that carries none. */
  attemptTimeoutMs: number
}

/** Why the NATS tier is skipped for tunnelled gRPC streams (it carries unary Calls only, for now). */
export const NATS_STREAMS_UNSUPPORTED = 'tunnelled gRPC streams are not supported on the NATS tier yet'

/** Tier 3: NATS request-reply on the target's subject, carrying the same envelope as libp2p, sealed. */
export class NatsTier implements TierTransport {
  readonly tier = Tier.NATS
  private readonly c: NatsTierComponents

  constructor(components: NatsTierComponents) {
    this.c = components
  }

  async unavailableReason(_peerId?: string, purpose: Purpose = 'call'): Promise<string | undefined> {
    const bus = this.c.bus
    if (bus == null) return 'NATS is not configured (--nats)'
    if (purpose === 'stream') return NATS_STREAMS_UNSUPPORTED
    if (!bus.connected) return `NATS is not connected (${bus.url})`
    return undefined
  }

  async connect(peerId: string): Promise<TierLink> {
    const bus = this.c.bus
    if (bus == null || !bus.connected) throw new StargateError(Code.Unavailable, (await this.unavailableReason()) ?? 'NATS unavailable')
    const subject = bus.callSubject(peerId)
    const { codec } = this.c
    return {
      via: subject,
      send: async (req, signal): Promise<PeerResponse> => {
        const frame = toBinary(PeerFrameSchema, create(PeerFrameSchema, { kind: { case: 'request', value: { ...req, exchangeId: 1n } } }))
        const timeoutMs = req.timeout != null ? durationToMs(req.timeout) : this.c.attemptTimeoutMs
        const answer = await bus.request(subject, codec.seal(frame, peerId), timeoutMs, signal)
        let decoded: PeerFrame
        try {
          decoded = decodePeerFrame(codec.open(answer, peerId).frame)
        } catch (err: unknown) {
          throw StargateError.from(err, Code.Unavailable)
        }
        if (decoded.kind.case !== 'response') throw new StargateError(Code.Unavailable, 'NATS answer was not a response frame')
        return decoded.kind.value
      },
    }
  }
}

/**
 * The callee side of the NATS tier: requests sealed to this gateway on its call subject, opened (sender
 * verified), handed to the inbound dispatcher, answered sealed to the verified sender.
 */
export function natsInbound(bus: NatsBus, selfPeerId: string, codec: NatsCodec, sink: RequestSink): TierInbound {
  return {
    async start() {
      bus.subscribe(bus.callSubject(selfPeerId), (data, reply) => {
        let frame: PeerFrame
        let sender: string | undefined
        try {
          const opened = codec.open(data)
          sender = opened.senderPeerId
          frame = decodePeerFrame(opened.frame)
        } catch (err: unknown) {
          sink.dropped('malformed NATS message', { err: messageOf(err) })
          return
        }
        if (frame.kind.case !== 'request') {
          sink.dropped('NATS message that is not a request', { kind: frame.kind.case })
          return
        }
        const req = frame.kind.value
        if (sender != null && req.callerPeerId !== '' && req.callerPeerId !== sender) {
          sink.dropped('NATS request whose caller_peer_id differs from its verified sender', { sender })
          return
        }
        const caller = sender ?? req.callerPeerId
        sink
          .handle(req, { callerPeerId: caller, tier: Tier.NATS }, NEVER)
          .then((res) =>
            reply(codec.seal(toBinary(PeerFrameSchema, create(PeerFrameSchema, { kind: { case: 'response', value: res } })), caller)),
          )
          .catch((err: unknown) => sink.dropped('NATS reply failed', { err: messageOf(err) }))
      })
    },
    async stop() {},
  }
}

/** NATS request-reply has no cancellation: a request runs until answered or its own deadline. */
const NEVER = new AbortController().signal
