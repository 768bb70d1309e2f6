import type { Connection, Stream } from '@libp2p/interface'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerRequest } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import type { InboundMeta, PeerResponseInit } from '../inbound.ts'
import type { TunnelOptions } from '../tunnel/endpoint.ts'
import { type TunnelHandler, TunnelServer } from '../tunnel/server.ts'
import type { ConnectionBudget } from './budget.ts'
import {
  encodePeerFrame,
  type FrameReaderOptions,
  isCircuitConnection,
  isStreamFrame,
  onFrames,
  streamLink,
  writeEncodedFrame,
  writeFrame,
} from './frames.ts'

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
 *
 * The connection's budget (budget.ts) bounds what it may hold here: a stream past its stream limit is reset
 * at once; a request that would pass its byte limit is answered RESOURCE_EXHAUSTED without being run; a
 * frame in progress or an answer that would pass it resets the stream (the caller is not reading).
 */
export function serveCallStream(
  stream: Stream,
  connection: Connection,
  sink: RequestSink,
  streams: StreamSink,
  options: FrameReaderOptions,
  budget: ConnectionBudget,
  log: Logger,
): void {
  const caller = connection.remotePeer.toString()
  if (!budget.openStream()) {
    log.debug('too many call streams on one connection; resetting the new one', { caller, limit: budget.maxStreams })
    stream.abort(
      new StargateError(
        Code.ResourceExhausted,
        `connection from ${caller} already has ${budget.openStreams} call streams open (limit --max-conn-streams ${budget.maxStreams})`,
      ),
    )
    return
  }
  stream.addEventListener('close', () => budget.closeStream(), { once: true })
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
  const overBudget = (what: string): StargateError =>
    new StargateError(
      Code.ResourceExhausted,
      `connection from ${caller} has ${budget.bufferedBytes} bytes buffered at the callee's gateway and ${what} would pass its limit (--max-conn-buffered-bytes ${budget.maxBufferedBytes})`,
    )
  // A frame in progress that passes the budget fails the stream: noted here, so it is not counted as malformed.
  let frameOverBudget = false
  const frameBudget = {
    reserve: (bytes: number): boolean => {
      const ok = budget.reserve(bytes)
      if (!ok) frameOverBudget = true
      return ok
    },
    release: (bytes: number): void => budget.release(bytes),
  }
  // A closed stream does not cancel running calls: the caller may retry on another tier, and the
  // retry joins the running execution through the duplicate-request memory instead of running it twice.
  // Only an explicit cancel frame (the caller gave up) cancels.
  onFrames(
    stream,
    { ...options, budget: frameBudget },
    (frame, frameBytes) => {
      switch (frame.kind.case) {
        case 'request': {
          const req = frame.kind.value
          if (!budget.reserve(frameBytes)) {
            const e = overBudget(`a request of ${frameBytes} bytes`)
            const res = {
              exchangeId: req.exchangeId,
              requestId: req.requestId,
              result: { case: 'error' as const, value: { code: e.code, message: e.rawMessage } },
            }
            if (stream.status === 'open') writeFrame(stream, { kind: { case: 'response', value: res } }).catch(() => {})
            return
          }
          const ctl = new AbortController()
          running.set(req.exchangeId, ctl)
          sink
            .handle(req, meta, ctl.signal)
            .then(async (res) => {
              running.delete(req.exchangeId)
              budget.release(frameBytes)
              if (stream.status !== 'open') return
              const bytes = encodePeerFrame({ kind: { case: 'response', value: res } })
              if (!budget.reserve(bytes.byteLength)) {
                // Answers pile up: the caller is not reading them. Its stream goes; the answers are remembered.
                log.debug('answers pile up on a connection; resetting its stream', { caller, buffered: budget.bufferedBytes })
                stream.abort(overBudget(`an answer of ${bytes.byteLength} bytes`))
                return
              }
              try {
                await writeEncodedFrame(stream, bytes)
              } finally {
                budget.release(bytes.byteLength)
              }
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
      if (frameOverBudget)
        log.debug('a frame in progress passes the connection budget; resetting its stream', { caller, err: err.rawMessage })
      else sink.dropped('malformed or stalled frame from caller; closing stream', { caller, err: err.rawMessage })
      stream.abort(err)
    },
  )
}
