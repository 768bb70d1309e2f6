import { create } from '@bufbuild/protobuf'
import { PeerRequestSchema, PeerResponseSchema } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import type { RequestSink, StreamSink } from '../peer/server.ts'
import { TunnelClient } from '../tunnel/client.ts'
import { Loopback } from '../tunnel/loopback.ts'
import { TunnelServer } from '../tunnel/server.ts'
import type { TierLink, TierTransport } from './tier.ts'

/**
 * The tier of an exchange with this gateway itself: a Call goes straight to the inbound dispatcher, with the
 * same envelope, timeout, in-flight tracking, duplicate memory, tracing and metrics as a remote call; a
 * tunnelled stream goes through an in-memory frame link (tunnel/loopback.ts) to this gateway's own tunnel
 * egress, with the same flow control, limits and deduplication as over a peer link. The router uses this
 * tier (and only it) when the target is this gateway's own peer id.
 */
export class LoopbackTier implements TierTransport {
  readonly tier = Tier.LOCAL
  private readonly link: TierLink

  constructor(selfPeerId: string, sink: RequestSink, streams: StreamSink, log: Logger) {
    const loop = new Loopback()
    const client = new TunnelClient(loop.callerLink, {
      ...streams.limits,
      log: log.child('tunnel'),
      localPeerId: selfPeerId,
      remotePeerId: selfPeerId,
      tier: Tier.LOCAL,
    })
    const server = new TunnelServer(loop.calleeLink, {
      ...streams.limits,
      log: log.child('tunnel'),
      remotePeerId: selfPeerId,
      handler: streams.handler({ callerPeerId: selfPeerId, tier: Tier.LOCAL }),
    })
    loop.bind(client, server)
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
      openStream: (init, events) => client.open(init, events),
    }
  }

  async unavailableReason(): Promise<string | undefined> {
    return undefined
  }

  async connect(): Promise<TierLink> {
    return this.link
  }
}
