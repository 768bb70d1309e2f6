import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import { NatsState } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { connect, type Msg, type NatsConnection, type Subscription } from 'nats'

export interface NatsBusOptions {
  url: string
  peerId: string
  subjectPrefix: string
  log: Logger
  /** How long start() waits for the first connection before going on (it keeps trying after). */
  firstConnectWaitMs: number
  reconnectWaitMs: number
  /** The client pings this often and drops a connection after maxPingsOut unanswered pings. */
  pingIntervalMs: number
  maxPingsOut: number
}

type Handler = (data: Uint8Array, reply: (bytes: Uint8Array) => void) => void

/**
 * The gateway's NATS connection: request-reply for the NATS tier on `<prefix>.call.<peer id>`, and the
 * presence subjects. Reconnects forever; its state is reported by GetStatus.
 */
export class NatsBus {
  state: NatsState = NatsState.DISCONNECTED
  private readonly o: NatsBusOptions
  private nc?: NatsConnection
  private readonly subscriptions: Array<{ subject: string; handler: Handler; sub?: Subscription }> = []
  private stopped = false
  private connecting?: Promise<void>
  private readonly onConnectedHooks: Array<() => void> = []

  constructor(options: NatsBusOptions) {
    this.o = options
  }

  /** The subject a peer receives calls on. */
  callSubject(peerId: string): string {
    return `${this.o.subjectPrefix}.call.${peerId}`
  }

  get presenceSubject(): string {
    return `${this.o.subjectPrefix}.presence`
  }

  get presenceQuerySubject(): string {
    return `${this.o.subjectPrefix}.presence.query`
  }

  get url(): string {
    return this.o.url.replace(/\/\/[^@/]*@/, '//')
  }

  get connected(): boolean {
    return this.nc != null && this.state === NatsState.CONNECTED
  }

  /** Runs fn now if connected and after every (re)connect. */
  onConnected(fn: () => void): void {
    this.onConnectedHooks.push(fn)
    if (this.connected) fn()
  }

  async start(): Promise<void> {
    this.connecting = this.connectLoop()
    const wait = this.o.firstConnectWaitMs
    await Promise.race([this.connecting, new Promise<void>((r) => setTimeout(r, wait).unref())])
  }

  private async connectLoop(): Promise<void> {
    try {
      const nc = await connect({
        servers: this.o.url,
        name: `stargate-gateway-${this.o.peerId}`,
        waitOnFirstConnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: this.o.reconnectWaitMs,
        pingInterval: this.o.pingIntervalMs,
        maxPingOut: this.o.maxPingsOut,
        noEcho: true,
      })
      if (this.stopped) {
        await nc.close()
        return
      }
      this.nc = nc
      this.state = NatsState.CONNECTED
      this.o.log.info('nats connected', { url: this.url })
      for (const s of this.subscriptions) this.attach(s)
      for (const fn of this.onConnectedHooks) fn()
      void this.watch(nc)
    } catch (err: unknown) {
      this.o.log.warn('nats connect failed', { url: this.url, err: messageOf(err) })
    }
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') this.state = NatsState.DISCONNECTED
      else if (s.type === 'reconnecting') this.state = NatsState.RECONNECTING
      else if (s.type === 'reconnect') {
        this.state = NatsState.CONNECTED
        this.o.log.info('nats reconnected', { url: this.url })
        for (const fn of this.onConnectedHooks) fn()
      }
    }
  }

  /** Subscribes now or as soon as connected; survives reconnects. */
  subscribe(subject: string, handler: Handler): void {
    const s: { subject: string; handler: Handler; sub?: Subscription } = { subject, handler }
    this.subscriptions.push(s)
    if (this.nc != null) this.attach(s)
  }

  private attach(s: { subject: string; handler: Handler; sub?: Subscription }): void {
    s.sub = this.nc!.subscribe(s.subject, {
      callback: (err: Error | null, msg: Msg) => {
        if (err != null) {
          this.o.log.warn('nats subscription error', { subject: s.subject, err: err.message })
          return
        }
        s.handler(msg.data, (bytes) => {
          if (msg.reply != null && msg.reply !== '') msg.respond(bytes)
        })
      },
    })
  }

  publish(subject: string, data: Uint8Array): void {
    if (!this.connected) return
    try {
      this.nc!.publish(subject, data)
    } catch (err: unknown) {
      this.o.log.warn('nats publish failed', { subject, err: messageOf(err) })
    }
  }

  /** Request-reply; rejects with a StargateError (UNAVAILABLE when nobody listens, DEADLINE_EXCEEDED on timeout). */
  async request(subject: string, data: Uint8Array, timeoutMs: number, signal: AbortSignal): Promise<Uint8Array> {
    if (!this.connected) throw new StargateError(Code.Unavailable, `NATS is not connected (${this.url})`)
    signal.throwIfAborted()
    const aborted = new Promise<never>((_, reject) => {
      signal.addEventListener('abort', () => reject(StargateError.from(signal.reason, Code.Canceled)), { once: true })
    })
    try {
      const msg = await Promise.race([this.nc!.request(subject, data, { timeout: Math.max(1, timeoutMs) }), aborted])
      return msg.data
    } catch (err: unknown) {
      throw StargateError.from(err, Code.Unavailable)
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    const nc = this.nc
    this.nc = undefined
    this.state = NatsState.DISCONNECTED
    if (nc != null) {
      try {
        await nc.drain()
      } catch {
        await nc.close()
      }
    }
  }
}
