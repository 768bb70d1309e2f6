import type { Connection, Stream } from '@libp2p/interface'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerRequest } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import type { InboundMeta, PeerResponseInit } from '../inbound.ts'
import { type FrameReaderOptions, onFrames, writeFrame } from './frames.ts'

/** What the callee side of a peer stream hands requests to (the inbound dispatcher). */
export interface RequestSink {
  handle(req: PeerRequest, meta: InboundMeta, signal: AbortSignal): Promise<PeerResponseInit>
  dropped(reason: string, fields?: Record<string, unknown>): void
}

/**
 * The callee side of /stargate/call/1.0.0: reads request frames from a caller's long-lived stream, hands
 * them to the dispatcher concurrently and writes each response as it completes. The caller is the
 * connection's verified peer (Noise); the tier is relay when the connection is a circuit. Malformed or
 * stalled frames close the stream; the process stays up.
 */
export function serveCallStream(stream: Stream, connection: Connection, sink: RequestSink, options: FrameReaderOptions, log: Logger): void {
  const caller = connection.remotePeer.toString()
  const tier = connection.remoteAddr.toString().includes('/p2p-circuit') ? Tier.RELAY : Tier.DIRECT
  const meta: InboundMeta = { callerPeerId: caller, tier }
  const running = new Map<bigint, AbortController>()
  stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, options.maxFrameBytes * 2)
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
          sink.dropped('unexpected frame from caller', { caller, kind: frame.kind.case })
      }
    },
    (err) => {
      sink.dropped('malformed or stalled frame from caller; closing stream', { caller, err: err.rawMessage })
      stream.abort(err)
    },
  )
}
