import { create, toBinary } from '@bufbuild/protobuf'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { Code, StargateError } from '@stargate/shared/errors'
import { type PeerFrame, PeerFrameSchema, type PeerResponse } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { NatsBus } from '../nats.ts'
import type { TierLink, TierTransport } from './tier.ts'

/** Seals and opens NATS payloads (end-to-end encryption to the recipient); identity when not configured. */
export interface NatsCodec {
  seal(frame: Uint8Array, recipientPeerId: string): Uint8Array
  open(bytes: Uint8Array, expectedSender?: string): { senderPeerId?: string; frame: Uint8Array }
}

/** Tier 3: NATS request-reply on the target's subject, carrying the same envelope as libp2p. */
export class NatsTier implements TierTransport {
  readonly tier = Tier.NATS
  private readonly bus: NatsBus | undefined
  private readonly codec: NatsCodec
  private readonly timeoutMs: () => number

  constructor(bus: NatsBus | undefined, codec: NatsCodec, attemptTimeoutMs: () => number) {
    this.bus = bus
    this.codec = codec
    this.timeoutMs = attemptTimeoutMs
  }

  async unavailableReason(): Promise<string | undefined> {
    if (this.bus == null) return 'NATS is not configured (--nats)'
    if (!this.bus.connected) return `NATS is not connected (${this.bus.url})`
    return undefined
  }

  async connect(peerId: string): Promise<TierLink> {
    const bus = this.bus
    if (bus == null || !bus.connected) throw new StargateError(Code.Unavailable, (await this.unavailableReason()) ?? 'NATS unavailable')
    const subject = bus.callSubject(peerId)
    return {
      via: subject,
      pooled: true,
      send: async (req, signal): Promise<PeerResponse> => {
        const frame = toBinary(PeerFrameSchema, create(PeerFrameSchema, { kind: { case: 'request', value: { ...req, exchangeId: 1n } } }))
        const timeoutMs =
          req.timeout != null ? Number(req.timeout.seconds ?? 0) * 1000 + Math.ceil((req.timeout.nanos ?? 0) / 1e6) : this.timeoutMs()
        const answer = await bus.request(subject, this.codec.seal(frame, peerId), timeoutMs, signal)
        let decoded: PeerFrame
        try {
          decoded = decodePeerFrame(this.codec.open(answer, peerId).frame)
        } catch (err: unknown) {
          throw StargateError.from(err, Code.Unavailable)
        }
        if (decoded.kind.case !== 'response') throw new StargateError(Code.Unavailable, 'NATS answer was not a response frame')
        return decoded.kind.value
      },
    }
  }
}
