import { createSocket, type Socket } from 'node:dgram'
import { once } from 'node:events'
import { isIPv6 } from 'node:net'
import {
  decodeStunMessage,
  encodeBindingRequest,
  mappedAddressOf,
  newTransactionId,
  type StunAddress,
  sameTransactionId,
} from '@stargate/shared/stun'
import type { NatObservation } from './classify.ts'

/** A STUN server to probe. */
export interface StunObserver {
  host: string
  port: number
}

export interface ProbeOptions {
  /** Give up on observers that have not answered after this long. */
  timeoutMs: number
  /** First retransmission interval; doubles after each retransmission (RFC 5389 RTO). */
  retransmitMs: number
  /** Ends the probe early (observers that have not answered count as silent). */
  signal?: AbortSignal
}

/** The outcome of one probe round. */
export interface ProbeResult {
  /** Local port of the probing socket (the same for every observer). */
  localPort: number
  observations: NatObservation[]
}

export function observerName(o: StunObserver): string {
  return o.host.includes(':') ? `[${o.host}]:${o.port}` : `${o.host}:${o.port}`
}

/**
 * Sends Binding Requests from ONE local UDP socket to every observer (comparing the mappings they see
 * is what tells the NAT's behaviour apart), retransmitting until each answers or timeoutMs passes.
 * Responses are matched by transaction id; anything else arriving on the socket is ignored.
 */
export async function probeObservers(observers: StunObserver[], o: ProbeOptions): Promise<ProbeResult> {
  const v6Only = observers.length > 0 && observers.every((x) => isIPv6(x.host))
  const socket: Socket = createSocket({ type: v6Only ? 'udp6' : 'udp4' })
  socket.on('error', () => {})
  const bound = once(socket, 'listening')
  socket.bind(0)
  await bound
  const localPort = socket.address().port
  const pending = observers.map((obs) => ({
    obs,
    txid: newTransactionId(),
    mapped: undefined as StunAddress | undefined,
    // An IPv6 observer cannot be reached from an IPv4 socket (and the other way round).
    usable: v6Only || !isIPv6(obs.host),
  }))
  let done: () => void = () => {}
  const allAnswered = new Promise<void>((resolve) => {
    done = resolve
  })
  const check = (): void => {
    if (pending.every((p) => !p.usable || p.mapped != null)) done()
  }
  socket.on('message', (buf) => {
    const msg = decodeStunMessage(buf)
    if (msg == null) return
    const p = pending.find((x) => x.mapped == null && sameTransactionId(x.txid, msg.transactionId))
    const mapped = p != null ? mappedAddressOf(msg) : undefined
    if (p == null || mapped == null) return
    p.mapped = mapped
    check()
  })
  const send = (): void => {
    for (const p of pending) {
      if (!p.usable || p.mapped != null) continue
      socket.send(encodeBindingRequest(p.txid), p.obs.port, p.obs.host, () => {
        // Send errors (unresolvable host, no route) count as no answer.
      })
    }
  }
  const timers: NodeJS.Timeout[] = []
  const start = Date.now()
  for (let at = 0, rto = o.retransmitMs; at < o.timeoutMs; at += rto, rto *= 2) {
    timers.push(setTimeout(send, at))
  }
  const timedOut = new Promise<void>((resolve) => timers.push(setTimeout(resolve, Math.max(0, o.timeoutMs - (Date.now() - start)))))
  let onAbort: () => void = () => {}
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve
    if (o.signal?.aborted === true) resolve()
  })
  o.signal?.addEventListener('abort', onAbort, { once: true })
  check()
  await Promise.race([allAnswered, timedOut, aborted])
  o.signal?.removeEventListener('abort', onAbort)
  for (const t of timers) clearTimeout(t)
  const closed = once(socket, 'close')
  socket.close()
  await closed
  return {
    localPort,
    observations: pending.map((p) =>
      p.mapped != null ? { observer: observerName(p.obs), mapped: p.mapped } : { observer: observerName(p.obs) },
    ),
  }
}
