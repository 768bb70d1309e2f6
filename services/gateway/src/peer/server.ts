import type { Connection, Stream } from '@libp2p/interface'
import { Code, StargateError } from '@stargate/shared/errors'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import type { InboundDispatcher } from '../inbound.ts'
import type { InFlight } from '../inflight.ts'
import { onFrames, writeFrame } from './channel.ts'

/**
 * The callee side of /stargate/call/1.0.0: reads request frames from a caller's long-lived stream, runs
 * them concurrently through the dispatcher and writes each response as it completes. Malformed frames
 * are counted and close the stream; the process stays up.
 */
export function serveCallStream(
  stream: Stream,
  connection: Connection,
  dispatcher: InboundDispatcher,
  inflight: InFlight,
  maxFrameBytes: number,
  log: Logger,
  stallTimeoutMs = 10_000,
): void {
  const caller = connection.remotePeer.toString()
  const tier = connection.remoteAddr.toString().includes('/p2p-circuit') ? Tier.RELAY : Tier.DIRECT
  const running = new Map<bigint, AbortController>()
  stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, maxFrameBytes * 2)
  // A closed stream does not cancel running calls: the caller may retry on another tier, and the
  // retry joins the running execution through the duplicate-request memory instead of running it twice.
  // Only an explicit cancel frame (the caller gave up) cancels.
  onFrames(
    stream,
    maxFrameBytes,
    (frame) => {
      switch (frame.kind.case) {
        case 'request': {
          const req = frame.kind.value
          const ctl = new AbortController()
          running.set(req.exchangeId, ctl)
          inflight
            .track(() => dispatcher.handle(req, { callerPeerId: caller, tier }, ctl.signal))
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
          dispatcher.stats.malformed++
          log.warn('unexpected frame from caller', { caller, kind: frame.kind.case })
      }
    },
    (err) => {
      dispatcher.stats.malformed++
      log.warn('malformed or stalled frame from caller; closing stream', { caller, err: err.rawMessage })
      stream.abort(err)
    },
    stallTimeoutMs,
  )
}
