import type { MessageInitShape } from '@bufbuild/protobuf'
import type { Connection, Stream } from '@libp2p/interface'
import { type Clock, systemClock, type Timer } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import type { PeerFrame, PeerRequestSchema, PeerResponse } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { deadline } from '@stargate/shared/signals'
import { TunnelClient, type TunnelClientOptions } from '../tunnel/client.ts'
import { chunkBytes, isCircuitConnection, isStreamFrame, onFrames, streamLink, writeFrame } from './frames.ts'

/** How a caller's channel reads frames and watches its connection. */
export interface PeerChannelOptions {
  maxFrameBytes: number
  /**
   * When calls are waiting and nothing has arrived for this long, the connection is probed (libp2p ping on a
   * new stream); a connection whose packets are silently dropped fails its calls at once instead of holding
   * them until their deadline. A call (or tunnelled stream) started on a channel silent this long is raced by
   * a probe from the start. 0 disables the probe.
   */
  livenessProbeMs: number
  /** A probe unanswered for this long fails the connection. */
  livenessProbeTimeoutMs: number
  /** The tunnelled streams the channel carries (this gateway's peer id, window, limits). */
  tunnel: Omit<TunnelClientOptions, 'log' | 'remotePeerId' | 'tier'>
  clock?: Clock
}

interface Pending {
  resolve: (r: PeerResponse) => void
  reject: (e: StargateError) => void
}

/**
 * The caller side of a long-lived /stargate/call/1.0.0 stream: many calls multiplexed by exchange id
 * (measured ~3x faster than a stream per call; see BENCHMARKS.md), and the tunnelled gRPC streams of
 * `tunnel` on the same stream. One channel per peer and tier.
 */
export class PeerChannel {
  readonly stream: Stream
  readonly connection: Connection
  /** The caller half of the tunnelled streams carried by this channel; it fails when the channel does. */
  readonly tunnel: TunnelClient
  readonly openedAtMs: number
  lastUsedAtMs: number
  private readonly pending = new Map<bigint, Pending>()
  private nextExchange = 1n
  private closedError?: StargateError
  private readonly log: Logger
  private readonly o: PeerChannelOptions
  private readonly clock: Clock
  private lastFrameAtMs: number
  private watchdog?: Timer
  private probing = false

  constructor(stream: Stream, connection: Connection, options: PeerChannelOptions, log: Logger) {
    this.stream = stream
    this.connection = connection
    this.log = log
    this.o = options
    this.clock = options.clock ?? systemClock
    this.openedAtMs = this.clock.nowMs()
    this.lastUsedAtMs = this.openedAtMs
    this.lastFrameAtMs = this.openedAtMs
    const remotePeerId = connection.remotePeer.toString()
    this.tunnel = new TunnelClient(
      streamLink(stream, () => this.tunnel),
      {
        ...options.tunnel,
        log: log.child('tunnel'),
        remotePeerId,
        tier: isCircuitConnection(connection) ? Tier.RELAY : Tier.DIRECT,
        onOpen: () => this.watch(),
      },
    )
    onFrames(
      stream,
      { maxFrameBytes: options.maxFrameBytes },
      (frame) => {
        this.lastFrameAtMs = this.clock.nowMs()
        this.onFrame(frame)
      },
      (err) => this.fail(err),
    )
    stream.addEventListener('close', (evt) => {
      const cause = (evt as { error?: unknown }).error
      this.fail(new StargateError(Code.Unavailable, `stream to ${connection.remotePeer.toString()} closed`, { cause }))
    })
  }

  /** True while calls can be sent. */
  get open(): boolean {
    return this.closedError == null && this.stream.status === 'open' && this.connection.status === 'open'
  }

  /** Calls and tunnelled streams in flight on this channel. */
  get inflight(): number {
    return this.pending.size + this.tunnel.stats.streams
  }

  /** Sends a request and resolves with the response; rejects on transport failure, abort or timeout. */
  async call(req: MessageInitShape<typeof PeerRequestSchema>, signal: AbortSignal): Promise<PeerResponse> {
    if (this.closedError != null) throw this.closedError
    signal.throwIfAborted()
    this.lastUsedAtMs = this.clock.nowMs()
    const exchangeId = this.nextExchange++
    const result = new Promise<PeerResponse>((resolve, reject) => this.pending.set(exchangeId, { resolve, reject }))
    // Rejected by abort or stream close while the request may still be being written: handled below either way.
    result.catch(() => {})
    const onAbort = (): void => {
      const p = this.pending.get(exchangeId)
      if (p == null) return
      this.pending.delete(exchangeId)
      p.reject(StargateError.from(signal.reason, Code.Canceled))
      if (this.open) writeFrame(this.stream, { kind: { case: 'cancel', value: { exchangeId } } }).catch(() => {})
    }
    signal.addEventListener('abort', onAbort, { once: true })
    this.watch()
    try {
      await writeFrame(this.stream, { kind: { case: 'request', value: { ...req, exchangeId } } }, signal)
      return await result
    } catch (err: unknown) {
      this.pending.delete(exchangeId)
      if (signal.aborted) throw StargateError.from(signal.reason, Code.Canceled)
      throw StargateError.from(err, Code.Unavailable)
    } finally {
      signal.removeEventListener('abort', onAbort)
      this.lastUsedAtMs = this.clock.nowMs()
    }
  }

  /** Closes the channel and, unless another stream still uses it, its connection. */
  async retire(): Promise<void> {
    await this.close()
    const conn = this.connection
    const others = conn.streams.filter((s) => s !== this.stream && s.protocol !== IDENTIFY_PROTOCOL)
    if (others.length === 0 && conn.status === 'open') await conn.close().catch(() => {})
  }

  /** Closes the stream; pending calls fail with UNAVAILABLE. */
  async close(): Promise<void> {
    this.fail(new StargateError(Code.Unavailable, 'channel closed'))
    try {
      await this.stream.close({ signal: AbortSignal.timeout(1000) })
    } catch (err: unknown) {
      this.stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  private onFrame(frame: PeerFrame): void {
    if (frame.kind.case !== 'response') {
      if (isStreamFrame(frame)) this.tunnel.receive(frame)
      else this.log.warn('unexpected frame on caller stream', { kind: frame.kind.case })
      return
    }
    const res = frame.kind.value
    const p = this.pending.get(res.exchangeId)
    if (p == null) return
    this.pending.delete(res.exchangeId)
    p.resolve(res)
  }

  /**
   * A call or tunnelled stream starts: a channel silent for livenessProbeMs may be dead (its far side gone
   * without a FIN), so it is probed alongside, and a dead one fails within the probe timeout instead of after
   * another watchdog period; the watchdog keeps watching while anything is in flight.
   */
  private watch(): void {
    if (this.o.livenessProbeMs > 0 && this.clock.nowMs() - this.lastFrameAtMs >= this.o.livenessProbeMs) this.probe()
    this.armWatchdog()
  }

  /** Probes the connection while calls wait, as soon as nothing has arrived for livenessProbeMs. */
  private armWatchdog(): void {
    if (this.o.livenessProbeMs <= 0 || this.watchdog != null || this.closedError != null) return
    const silentForMs = this.clock.nowMs() - this.lastFrameAtMs
    // Due when the channel will have been silent for livenessProbeMs; a full period when it already has.
    const dueInMs = silentForMs < this.o.livenessProbeMs ? this.o.livenessProbeMs - silentForMs : this.o.livenessProbeMs
    this.watchdog = this.clock.setTimeout(() => {
      this.watchdog = undefined
      if (this.inflight === 0 || this.closedError != null) return
      if (this.clock.nowMs() - this.lastFrameAtMs >= this.o.livenessProbeMs) this.probe()
      this.armWatchdog()
    }, dueInMs)
  }

  /** One probe at a time: an answer counts as a frame; none within the timeout fails the connection. */
  private probe(): void {
    if (this.probing || this.closedError != null) return
    this.probing = true
    probeConnection(this.connection, this.o.livenessProbeTimeoutMs, this.clock)
      .then(
        () => {
          this.lastFrameAtMs = this.clock.nowMs()
        },
        (err: unknown) => {
          // Another ping is in flight on this connection (libp2p's own connection monitor): no verdict; that
          // ping aborts the connection if it fails, and the watchdog probes again next period.
          if (this.closedError != null || (err as { name?: unknown } | undefined)?.name === 'TooManyOutboundProtocolStreamsError') return
          const e = new StargateError(Code.Unavailable, `connection to ${this.connection.remotePeer.toString()} stopped answering`, {
            cause: err,
          })
          this.log.warn('peer connection stopped answering; failing its calls', { peer: this.connection.remotePeer.toString() })
          this.fail(e)
          this.stream.abort(e)
          this.connection.abort(e)
        },
      )
      .finally(() => {
        this.probing = false
      })
  }

  private fail(err: StargateError): void {
    this.watchdog?.clear()
    this.watchdog = undefined
    this.closedError ??= err
    for (const [id, p] of this.pending) {
      this.pending.delete(id)
      p.reject(err)
    }
    this.tunnel.fail(this.closedError)
  }
}

const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const IDENTIFY_PROTOCOL = '/ipfs/id/1.0.0'

/** One libp2p ping round trip on a new stream of the connection; rejects on timeout or mismatch. */
export async function probeConnection(connection: Connection, timeoutMs: number, clock: Clock = systemClock): Promise<void> {
  const probe = deadline(timeoutMs, undefined, clock)
  const signal = probe.signal
  const stream = await connection.newStream(PING_PROTOCOL, { signal, runOnLimitedConnection: true }).catch((err: unknown) => {
    probe.dispose()
    throw err
  })
  try {
    const payload = crypto.getRandomValues(new Uint8Array(32))
    const echoed = new Promise<void>((resolve, reject) => {
      let got = new Uint8Array(0)
      stream.addEventListener('message', (evt) => {
        const chunk = chunkBytes(evt.data)
        const next = new Uint8Array(got.byteLength + chunk.byteLength)
        next.set(got)
        next.set(chunk, got.byteLength)
        got = next
        if (got.byteLength >= 32) {
          if (got.subarray(0, 32).every((b, i) => b === payload[i])) resolve()
          else reject(new Error('ping answer did not match'))
        }
      })
      signal.addEventListener('abort', () => reject(new Error(`no ping answer within ${timeoutMs} ms`)), { once: true })
    })
    stream.send(payload)
    await echoed
  } finally {
    probe.dispose()
    stream.abort(new Error('probe done'))
  }
}
