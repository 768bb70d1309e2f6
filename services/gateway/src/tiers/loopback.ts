import { create } from '@bufbuild/protobuf'
import { PeerRequestSchema, PeerResponseSchema } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { RequestSink } from '../peer/server.ts'
import type { TierLink, TierTransport } from './tier.ts'

/**
 * The tier of a call to this gateway itself: the request goes straight to the inbound dispatcher, with the
 * same envelope, timeout, in-flight tracking, duplicate memory, tracing and metrics as a remote call. The
 * router uses it (and only it) when the target is this gateway's own peer id.
 */
export class LoopbackTier implements TierTransport {
  readonly tier = Tier.LOCAL
  private readonly link: TierLink

  constructor(selfPeerId: string, sink: RequestSink) {
    this.link = {
      via: 'local',
      send: async (req, signal) => {
        const res = await sink.handle(
          create(PeerRequestSchema, { ...req, exchangeId: 1n }),
          { callerPeerId: selfPeerId, tier: Tier.LOCAL },
          signal,
        )
        return create(PeerResponseSchema, res)
      },
    }
  }

  async unavailableReason(): Promise<string | undefined> {
    return undefined
  }

  async connect(): Promise<TierLink> {
    return this.link
  }
}
