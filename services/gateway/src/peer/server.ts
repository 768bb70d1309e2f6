import type { Connection, Stream } from '@libp2p/interface'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerRequest } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import type { InboundMeta, PeerResponseInit } from '../inbound.ts'
import type { TunnelOptions } from '../tunnel/endpoint.ts'
import { type TunnelHandler, TunnelServer } from '../tunnel/server.ts'
import { type FrameReaderOptions, isCircuitConnection, isStreamFrame, onFrames, streamLink, writeFrame } from './frames.ts'

/** What the callee side of a peer stream hands requests to (the inbound dispatcher). */
export interface RequestSink {
  handle(req: PeerRequest, meta: InboundMeta, signal: AbortSignal): Promise<PeerResponseInit>
  dropped(reason: string, fields?: Record<string, unknown>): void
}

/** What the callee side of a peer stream hands tunnelled streams to (the gateway's tunnel egress). */
export interface StreamSink {
  /** The handler of the streams one caller opens on one link. */
  handler(meta: InboundMeta): TunnelHandler
  /** Limits of the callee endpoints (window, streams per link, message size). */
  readonly limits: Partial<Omit<TunnelOptions, 'log'>>
}

/**
 * The callee side of /stargate/call/1.0.0: reads request frames from a caller's long-lived stream, hands
 * them to the dispatcher concurrently and writes each response as it completes; the stream's tunnelled
 * gRPC streams go to a TunnelServer whose handler comes from `streams`. The caller is the connection's
 * verified peer (Noise); the tier is relay when the connection is a circuit. Malformed or stalled frames
 * close the stream; the process stays up.
 */
export function serveCallStream(
  stream: Stream,
  connection: Connection,
  sink: RequestSink,
  streams: StreamSink,
  options: FrameReaderOptions,
  log: Logger,
): void {
  const caller = connection.remotePeer.toString()
  const tier = isCircuitConnection(connection) ? Tier.RELAY : Tier.DIRECT
  const meta: InboundMeta = { callerPeerId: caller, tier }
  const running = new Map<bigint, AbortController>()
  stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, options.maxFrameBytes * 2)
  const tunnels: TunnelServer = new TunnelServer(
    streamLink(stream, () => tunnels),
    { ...streams.limits, log: log.child('tunnel'), remotePeerId: caller, handler: streams.handler(meta) },
  )
  stream.addEventListener('close', (evt) => {
    const cause = (evt as { error?: unknown }).error
    tunnels.fail(new StargateError(Code.Unavailable, `stream from ${caller} closed`, { cause }))
  })
  // A closed stream does not cancel running calls: the caller may retry on another tier, and the
  // retry joins the running execution through the duplicate-request memory instead of running it twice.
  // Only an explicit cancel frame (the caller gave up) cancels.
  onFrames(
    stream,
    options,
    (frame) => {
      switch (frame.kind.case) {
        case 'request': {
          const req = frame.kind.value
          const ctl = new AbortController()
          running.set(req.exchangeId, ctl)
          sink
            .handle(req, meta, ctl.signal)
            .then(async (res) => {
              running.delete(req.exchangeId)
              if (stream.status === 'open') await writeFrame(stream, { kind: { case: 'response', value: res } })
            })
            .catch((err: unknown) => log.debug('could not write response', { caller, err }))
          return
        }
        case 'cancel':
          running.get(frame.kind.value.exchangeId)?.abort(new StargateError(Code.Canceled, 'caller cancelled the call'))
          return
        default:
          if (isStreamFrame(frame)) tunnels.receive(frame)
          else sink.dropped('unexpected frame from caller', { caller, kind: frame.kind.case })
      }
    },
    (err) => {
      sink.dropped('malformed or stalled frame from caller; closing stream', { caller, err: err.rawMessage })
      stream.abort(err)
    },
  )
}
