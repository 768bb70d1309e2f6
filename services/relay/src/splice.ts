import type { MessageStream } from '@libp2p/interface'

/**
 * Why a relayed connection ended: both sides half-closed ('closed'); a side reset; a limit; the relay shutting
 * down; the holder's reservation replaced; or a side's connection gone under its stream (a peer killed or
 * its link lost: neither a reset nor a half-close), the target's ('target-gone') or the initiator's.
 */
export type SpliceEnd = 'closed' | 'reset' | 'data-limit' | 'duration-limit' | 'shutdown' | 'replaced' | 'target-gone' | 'initiator-gone'

export interface SpliceOptions {
  /** Bytes allowed per direction; 0 = no limit. */
  maxBytes: number
  /** Lifetime of the relayed connection; 0 = no limit. */
  maxDurationMs: number
  /** Called with every chunk forwarded, after it was handed to the other side. */
  onBytes(direction: 'fromInitiator' | 'toInitiator', bytes: number): void
  /** Aborting ends the relayed connection at once: 'shutdown', or the end a CircuitEndError reason names. */
  signal?: AbortSignal
}

/** The error a relayed stream is aborted with when a limit is hit. */
export class CircuitLimitError extends Error {
  override name = 'CircuitLimitError'
}

/** An abort reason that ends a relayed connection with its own end (e.g. 'replaced'). */
export class CircuitEndError extends Error {
  override name = 'CircuitEndError'
  readonly end: SpliceEnd

  constructor(end: SpliceEnd, message: string) {
    super(message)
    this.end = end
  }
}

/**
 * Joins two streams of a relayed connection — `initiator` (the hop stream from the dialing peer) and `target`
 * (the stop stream to the reserving peer) — forwarding every chunk both ways with backpressure (the reading
 * side is paused while the writing side drains), propagating half-closes and resets, counting forwarded bytes
 * per direction and enforcing the optional data (per direction) and duration limits.
 * A side that ends before both directions were half-closed (a reset, or its connection gone: a killed peer's
 * connection closes under its streams with neither a reset nor a half-close) ends the other side at once with
 * a reset, so the other peer's relayed connection fails instead of sending into a circuit nobody reads.
 * Resolves when both streams are finished.
 */
export function splice(initiator: MessageStream, target: MessageStream, opts: SpliceOptions): Promise<SpliceEnd> {
  const { promise, resolve } = Promise.withResolvers<SpliceEnd>()
  let end: SpliceEnd | undefined
  let closed = 0
  let timer: NodeJS.Timeout | undefined

  const finish = (): void => {
    if (timer != null) clearTimeout(timer)
    opts.signal?.removeEventListener('abort', onShutdown)
    resolve(end ?? 'closed')
  }
  const abortBoth = (reason: SpliceEnd, err: Error): void => {
    end ??= reason
    initiator.abort(err)
    target.abort(err)
  }
  const onShutdown = (): void => {
    const reason: unknown = opts.signal?.reason
    if (reason instanceof CircuitEndError) abortBoth(reason.end, reason)
    else abortBoth('shutdown', new CircuitLimitError('relay is shutting down'))
  }

  /** Directions whose sender half-closed (sent everything): both, and the relayed connection ended cleanly. */
  const finished = { fromInitiator: false, toInitiator: false }
  const gone = (): Error => new Error('the other side of the relayed connection is gone')

  const pump = (from: MessageStream, to: MessageStream, direction: 'fromInitiator' | 'toInitiator'): void => {
    let sent = 0
    from.addEventListener('message', (evt) => {
      const n = evt.data.byteLength
      if (opts.maxBytes > 0 && sent + n > opts.maxBytes) {
        abortBoth('data-limit', new CircuitLimitError(`data limit of ${opts.maxBytes} bytes per direction exceeded`))
        return
      }
      if (to.status !== 'open' && to.status !== 'closing') {
        abortBoth('reset', gone())
        return
      }
      sent += n
      let ok: boolean
      try {
        ok = to.send(evt.data)
      } catch (err: unknown) {
        abortBoth('reset', err instanceof Error ? err : new Error(String(err)))
        return
      }
      opts.onBytes(direction, n)
      if (!ok) {
        from.pause()
        to.onDrain().then(
          () => from.resume(),
          (err: unknown) => abortBoth('reset', err instanceof Error ? err : new Error(String(err))),
        )
      }
    })
    from.addEventListener('remoteCloseWrite', () => {
      finished[direction] = true
      to.close().catch((err: unknown) => abortBoth('reset', err instanceof Error ? err : new Error(String(err))))
    })
    from.addEventListener(
      'close',
      (evt: { error?: Error }) => {
        if (evt.error != null || !finished.fromInitiator || !finished.toInitiator) {
          end ??= evt.error != null ? 'reset' : from === initiator ? 'initiator-gone' : 'target-gone'
          if (to.status === 'open' || to.status === 'closing') to.abort(evt.error ?? gone())
        }
        if (++closed === 2) finish()
      },
      { once: true },
    )
  }

  pump(initiator, target, 'fromInitiator')
  pump(target, initiator, 'toInitiator')
  for (const [s, other] of [
    [initiator, target],
    [target, initiator],
  ] as const) {
    if (s.status !== 'open' && s.status !== 'closing') {
      end ??= 'reset'
      other.abort(gone())
      if (++closed === 2) finish()
    }
  }
  if (opts.maxDurationMs > 0) {
    timer = setTimeout(
      () => abortBoth('duration-limit', new CircuitLimitError(`duration limit of ${opts.maxDurationMs} ms exceeded`)),
      opts.maxDurationMs,
    )
    timer.unref()
  }
  if (opts.signal?.aborted === true) onShutdown()
  else opts.signal?.addEventListener('abort', onShutdown, { once: true })
  return promise
}
