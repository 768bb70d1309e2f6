import { readFile } from 'node:fs/promises'
import { systemClock, type Timer } from '@stargate/shared/clock'
import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import { NatsState } from '@stargate/shared/gen/gateway'
import { type Logger, RateLimitedLog } from '@stargate/shared/log'
import {
  type Authenticator,
  type ConnectionOptions,
  connect,
  createInbox,
  credsAuthenticator,
  type Msg,
  type NatsConnection,
  nkeyAuthenticator,
  type Subscription,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
} from 'nats'
import type { GatewayOptions } from './options.ts'

/** How the gateway authenticates to NATS (read from files or the environment, never only from the URL). */
export type NatsAuth =
  | { kind: 'creds'; creds: Uint8Array }
  | { kind: 'nkey'; seed: Uint8Array }
  | { kind: 'token'; token: string }
  | { kind: 'user'; user: string; password: string }

/** TLS toward NATS: PEM contents. */
export interface NatsTls {
  ca?: string
  cert?: string
  key?: string
}

/** Where the NATS credentials and TLS material come from (the gateway options of the same names). */
export type NatsSecuritySources = Partial<
  Pick<
    GatewayOptions,
    | 'natsCredsFile'
    | 'natsNkeyFile'
    | 'natsTokenFile'
    | 'natsToken'
    | 'natsUser'
    | 'natsPasswordFile'
    | 'natsPassword'
    | 'natsTlsCaFile'
    | 'natsTlsCertFile'
    | 'natsTlsKeyFile'
  >
>

/**
 * Reads the NATS credentials and TLS files once at start. Throws StargateError INVALID_ARGUMENT naming the
 * flag when a file cannot be read or is empty (which of them may be combined is checked with the options).
 */
/** NATS credentials and TLS material as read at start. */
export interface NatsSecurity {
  auth?: NatsAuth
  tls?: NatsTls
}

export async function loadNatsSecurity(o: NatsSecuritySources): Promise<NatsSecurity> {
  const read = async (file: string, flag: string): Promise<string> => {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err: unknown) {
      throw new StargateError(Code.InvalidArgument, `--${flag} ${file}: ${messageOf(err)}`, { cause: err })
    }
    if (text.trim() === '') throw new StargateError(Code.InvalidArgument, `--${flag} ${file} is empty`)
    return text
  }
  let auth: NatsAuth | undefined
  if (o.natsCredsFile != null) auth = { kind: 'creds', creds: new TextEncoder().encode(await read(o.natsCredsFile, 'nats-creds')) }
  else if (o.natsNkeyFile != null) auth = { kind: 'nkey', seed: new TextEncoder().encode((await read(o.natsNkeyFile, 'nats-nkey')).trim()) }
  else if (o.natsTokenFile != null) auth = { kind: 'token', token: (await read(o.natsTokenFile, 'nats-token-file')).trim() }
  else if (o.natsToken != null) auth = { kind: 'token', token: o.natsToken }
  else if (o.natsUser != null) {
    const password =
      o.natsPasswordFile != null ? (await read(o.natsPasswordFile, 'nats-password-file')).replace(/\r?\n$/, '') : o.natsPassword
    auth = { kind: 'user', user: o.natsUser, password: password ?? '' }
  }
  let tls: NatsTls | undefined
  if (o.natsTlsCaFile != null || o.natsTlsCertFile != null) {
    tls = {}
    if (o.natsTlsCaFile != null) tls.ca = await read(o.natsTlsCaFile, 'nats-tls-ca')
    if (o.natsTlsCertFile != null) tls.cert = await read(o.natsTlsCertFile, 'nats-tls-cert')
    if (o.natsTlsKeyFile != null) tls.key = await read(o.natsTlsKeyFile, 'nats-tls-key')
  }
  return { ...(auth != null ? { auth } : {}), ...(tls != null ? { tls } : {}) }
}

function authenticatorOf(auth: NatsAuth): Authenticator {
  switch (auth.kind) {
    case 'creds':
      return credsAuthenticator(auth.creds)
    case 'nkey':
      return nkeyAuthenticator(auth.seed)
    case 'token':
      return tokenAuthenticator(auth.token)
    case 'user':
      return usernamePasswordAuthenticator(auth.user, auth.password)
  }
}

/** True for errors where the server refused our credentials (retried slowly, not hammered). */
function isAuthError(err: unknown): boolean {
  return typeof (err as { isAuthError?: unknown })?.isAuthError === 'function' && (err as { isAuthError: () => boolean }).isAuthError()
}

/** A NATS URL without credentials (for logs and GetStatus). */
export function withoutCredentials(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//')
}

export interface NatsBusOptions {
  /** Seed servers (a cluster's other members are discovered from them). */
  servers: string[]
  peerId: string
  subjectPrefix: string
  log: Logger
  auth?: NatsAuth
  tls?: NatsTls
  /** How long start() waits for the first connection before going on (it keeps trying after). */
  firstConnectWaitMs: number
  /** Pause between reconnect attempts to the same server. */
  reconnectWaitMs: number
  /** After the client gave up (refused credentials, every server gone at start), connect again after this long. */
  retryConnectMs: number
  /** The client pings this often and drops a connection after maxPingsOut unanswered pings. */
  pingIntervalMs: number
  maxPingsOut: number
}

/** What a subscription handler learns of a message besides its data. */
export interface BusMessageInfo {
  /** The message's reply subject ('' when it has none). */
  replySubject: string
  /**
   * True for the server's "no responders" status (503, empty data): a message published with this
   * subscription's subject as its reply subject went to a subject nobody listens on.
   */
  noResponders: boolean
}

/** Receives a message; `reply` is undefined when the sender gave no reply subject. */
export type BusHandler = (data: Uint8Array, reply: ((bytes: Uint8Array) => void) | undefined, info: BusMessageInfo) => void

/** A subscription of the bus; unsubscribing is idempotent. */
export interface BusSubscription {
  unsubscribe(): void
}

interface Sub {
  subject: string
  handler: BusHandler
  sub?: Subscription
}

interface Pending {
  subject: string
  accept: (answer: Uint8Array) => unknown
  resolve: (value: unknown) => void
  reject: (err: StargateError) => void
  timer: Timer
  signal: AbortSignal
  onAbort: () => void
}

/** A request or reply waiting in the outbox. */
interface Outgoing {
  subject: string
  data: Uint8Array
  reply?: string
  /** A request whose publish failed: settled with the error. */
  failed?: (err: unknown) => void
}

/**
 * The gateway's NATS connection: request-reply for the NATS tier on `<prefix>.call.<peer id>`, the
 * per-stream subjects of tunnelled streams (`<prefix>.stream.<peer id>.<token>`, tiers/nats-streams.ts), and the
 * presence subjects. Connects to any of the seed servers, learns the other cluster members from them,
 * reconnects forever; its state and current server are reported by GetStatus.
 *
 * Requests use one inbox subscription for the connection (as nats.js does), but an answer is handed to
 * the caller's `accept` and only one it accepts settles the request: a forged or misrouted answer is
 * dropped and the genuine one can still arrive.
 */
export class NatsBus {
  private readonly o: NatsBusOptions
  private stateRef: NatsState = NatsState.DISCONNECTED
  private nc?: NatsConnection
  private readonly subscriptions = new Set<Sub>()
  private readonly onDisconnectedHooks: Array<(reason: string) => void> = []
  private stopped = false
  private retryTimer?: NodeJS.Timeout
  private firstConnected?: () => void
  private readonly onConnectedHooks: Array<() => void> = []
  private inbox = ''
  private nextToken = 0
  private readonly pending = new Map<string, Pending>()
  private readonly warnings: RateLimitedLog
  private dropped = 0
  /** Requests and replies published during this event-loop turn, sent together at its end (see `send`). */
  private outbox: Outgoing[] = []

  constructor(options: NatsBusOptions) {
    this.o = options
    this.warnings = new RateLimitedLog(options.log)
  }

  /** Answers dropped because the request's `accept` refused them (forged, misrouted, replayed). */
  get droppedAnswers(): number {
    return this.dropped
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

  /** The configured seed servers, without credentials, comma-separated. */
  get url(): string {
    return this.o.servers.map(withoutCredentials).join(',')
  }

  get state(): NatsState {
    return this.stateRef
  }

  get connected(): boolean {
    return this.nc != null && this.stateRef === NatsState.CONNECTED
  }

  /** The server this gateway is connected to now (host:port), '' when not connected. */
  get connectedServer(): string {
    return this.connected ? (this.nc?.getServer() ?? '') : ''
  }

  /** The connected server's name (server_name, else its id), '' when not connected. */
  get connectedServerName(): string {
    const info = this.connected ? this.nc?.info : undefined
    return info?.server_name ?? info?.server_id ?? ''
  }

  /** Seed servers (host:port) and the cluster members the connected server announced. */
  get knownServers(): string[] {
    const seeds = this.o.servers.map((s) => withoutCredentials(s).replace(/^[a-z]+:\/\//, ''))
    return [...new Set([...seeds, ...(this.nc?.info?.connect_urls ?? [])])].sort()
  }

  /** The largest message the connected server takes (its max_payload), 0 when not connected. */
  get maxPayloadBytes(): number {
    return this.connected ? (this.nc?.info?.max_payload ?? 0) : 0
  }

  /**
   * The subject of one tunnelled stream's frames to peerId (`<prefix>.stream.<peer id>.<token>`): the
   * receiving gateway subscribes it for the stream's lifetime.
   */
  streamSubject(peerId: string, token: string): string {
    return `${this.o.subjectPrefix}.stream.${peerId}.${token}`
  }

  /** Runs fn whenever the connection drops (messages in flight may be lost). */
  onDisconnected(fn: (reason: string) => void): void {
    this.onDisconnectedHooks.push(fn)
  }

  /** Runs fn now if connected and after every (re)connect. */
  onConnected(fn: () => void): void {
    this.onConnectedHooks.push(fn)
    if (this.connected) fn()
  }

  async start(): Promise<void> {
    const connected = new Promise<void>((resolve) => {
      this.firstConnected = resolve
    })
    void this.connectOnce()
    await Promise.race([connected, new Promise<void>((r) => setTimeout(r, this.o.firstConnectWaitMs).unref())])
  }

  /** One connection attempt through the seed servers; a failure is logged and tried again later. */
  private async connectOnce(): Promise<void> {
    const options: ConnectionOptions = {
      servers: this.o.servers,
      name: `stargate-gateway-${this.o.peerId}`,
      // Not waitOnFirstConnect: that retries silently; a failed first attempt is logged with its reason here.
      waitOnFirstConnect: false,
      maxReconnectAttempts: -1,
      reconnectTimeWait: this.o.reconnectWaitMs,
      pingInterval: this.o.pingIntervalMs,
      maxPingOut: this.o.maxPingsOut,
      noEcho: true,
      // Cluster members announced by the server join the list of servers to reconnect to.
      ignoreClusterUpdates: false,
      ...(this.o.auth != null ? { authenticator: authenticatorOf(this.o.auth) } : {}),
      ...(this.o.tls != null ? { tls: this.o.tls } : {}),
    }
    let nc: NatsConnection
    try {
      nc = await connect(options)
    } catch (err: unknown) {
      const retryInMs = isAuthError(err) ? this.o.retryConnectMs : this.o.reconnectWaitMs
      const timedOut = (err as { code?: unknown }).code === 'TIMEOUT'
      this.warnings.warn('nats connect failed', {
        url: this.url,
        err: messageOf(err),
        ...(timedOut ? { hint: 'no server completed the handshake: is it up, and does it accept our TLS (--nats-tls-*)?' } : {}),
        retryInMs,
      })
      this.retry(retryInMs)
      return
    }
    if (this.stopped) {
      await nc.close()
      return
    }
    this.nc = nc
    this.stateRef = NatsState.CONNECTED
    this.o.log.info('nats connected', { server: nc.getServer(), serverName: this.connectedServerName, known: this.knownServers })
    this.inbox = `${createInbox()}.`
    nc.subscribe(`${this.inbox}*`, { callback: (err, msg) => this.onAnswer(err, msg) })
    for (const s of this.subscriptions) this.attach(s)
    for (const fn of this.onConnectedHooks) fn()
    this.firstConnected?.()
    void this.watch(nc)
    // The client closes for good when it gives up (e.g. credentials refused twice): start over later.
    void nc.closed().then((err) => {
      if (this.stopped || this.nc !== nc) return
      this.nc = undefined
      this.stateRef = NatsState.DISCONNECTED
      this.failPending('the NATS connection was closed')
      this.disconnected('the NATS connection was closed')
      this.o.log.warn('nats connection closed', { err: err != null ? messageOf(err) : undefined, retryInMs: this.o.retryConnectMs })
      this.retry(this.o.retryConnectMs)
    })
  }

  private retry(delayMs: number): void {
    if (this.stopped) return
    this.retryTimer = setTimeout(() => void this.connectOnce(), delayMs)
    this.retryTimer.unref()
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      switch (s.type) {
        case 'disconnect':
          this.stateRef = NatsState.DISCONNECTED
          this.o.log.warn('nats disconnected', { server: String(s.data) })
          this.failPending(`lost the NATS connection to ${String(s.data)} while waiting for the answer`)
          this.disconnected(`lost the NATS connection to ${String(s.data)}`)
          break
        case 'reconnecting':
          this.stateRef = NatsState.RECONNECTING
          break
        case 'reconnect':
          this.stateRef = NatsState.CONNECTED
          this.o.log.info('nats reconnected', { server: nc.getServer(), serverName: this.connectedServerName })
          for (const fn of this.onConnectedHooks) fn()
          break
        case 'update':
          this.o.log.info('nats cluster members changed', { update: s.data, known: this.knownServers })
          break
        case 'ldm':
          this.o.log.info('nats server entering lame duck mode; will move to another cluster member', { server: nc.getServer() })
          break
        case 'error':
          this.warnings.warn('nats error', { err: String(s.data) })
          break
        default:
          break
      }
    }
  }

  private disconnected(reason: string): void {
    for (const fn of this.onDisconnectedHooks) fn(reason)
  }

  /** Subscribes now or as soon as connected; survives reconnects until unsubscribed. */
  subscribe(subject: string, handler: BusHandler): BusSubscription {
    const s: Sub = { subject, handler }
    this.subscriptions.add(s)
    if (this.nc != null) this.attach(s)
    return {
      unsubscribe: () => {
        if (!this.subscriptions.delete(s)) return
        try {
          s.sub?.unsubscribe()
        } catch (err: unknown) {
          this.warnings.warn('nats unsubscribe failed', { subject, err: messageOf(err) })
        }
      },
    }
  }

  private attach(s: Sub): void {
    s.sub = this.nc!.subscribe(s.subject, {
      callback: (err: Error | null, msg: Msg) => {
        if (err != null) {
          this.warnings.warn('nats subscription error', { subject: s.subject, err: err.message })
          return
        }
        const replySubject = msg.reply ?? ''
        s.handler(msg.data, replySubject !== '' ? (bytes) => this.send({ subject: replySubject, data: bytes }) : undefined, {
          replySubject,
          noResponders: msg.data.length === 0 && msg.headers?.code === 503,
        })
      },
    })
  }

  /**
   * Publishes data on subject (with a reply subject when given). Returns false when it was not sent: not
   * connected, or the client refused it (e.g. larger than the server's max_payload).
   */
  publish(subject: string, data: Uint8Array, reply?: string): boolean {
    if (!this.connected) return false
    try {
      this.nc!.publish(subject, data, reply != null ? { reply } : undefined)
      return true
    } catch (err: unknown) {
      this.warnings.warn('nats publish failed', { subject, err: messageOf(err) })
      return false
    }
  }

  /**
   * Request-reply: publishes data on subject and settles with the first answer `accept` returns for
   * (answers it throws for are dropped and counted; waiting goes on). Rejects with a StargateError:
   * UNAVAILABLE when not connected, nobody listens or the connection drops, DEADLINE_EXCEEDED on timeout,
   * CANCELLED/DEADLINE_EXCEEDED when the signal aborts.
   */
  request<T>(subject: string, data: Uint8Array, timeoutMs: number, signal: AbortSignal, accept: (answer: Uint8Array) => T): Promise<T> {
    const nc = this.nc
    if (nc == null || !this.connected) return Promise.reject(new StargateError(Code.Unavailable, `NATS is not connected (${this.url})`))
    if (signal.aborted) return Promise.reject(StargateError.from(signal.reason, Code.Canceled))
    const token = (++this.nextToken).toString(36)
    return new Promise<T>((resolve, reject) => {
      const waitMs = Math.max(1, timeoutMs)
      const p: Pending = {
        subject,
        accept,
        resolve: resolve as (value: unknown) => void,
        reject,
        signal,
        timer: systemClock.setTimeout(
          () => this.settle(token, new StargateError(Code.DeadlineExceeded, `no answer on ${subject} within ${waitMs} ms`)),
          waitMs,
        ),
        onAbort: () => this.settle(token, StargateError.from(signal.reason, Code.Canceled)),
      }
      signal.addEventListener('abort', p.onAbort, { once: true })
      this.pending.set(token, p)
      this.send({
        subject,
        data,
        reply: this.inbox + token,
        failed: (err) => this.settle(token, StargateError.from(err, Code.Unavailable)),
      })
    })
  }

  /**
   * Publishes a request or reply at the end of this event-loop turn, with every other one published during it.
   * nats.js writes what it has buffered once per microtask checkpoint, and calls arrive (and answers complete)
   * in separate I/O callbacks, so each went out in its own socket write; batched, the calls or answers of one
   * turn leave in one write (as peer frames do, peer/frames.ts). Order is kept.
   */
  private send(out: Outgoing): void {
    this.outbox.push(out)
    if (this.outbox.length === 1) setImmediate(this.flushOutbox)
  }

  private readonly flushOutbox = (): void => {
    const batch = this.outbox
    this.outbox = []
    const nc = this.nc
    for (const m of batch) {
      try {
        if (nc == null) throw new StargateError(Code.Unavailable, `NATS is not connected (${this.url})`)
        nc.publish(m.subject, m.data, m.reply != null ? { reply: m.reply } : undefined)
      } catch (err: unknown) {
        if (m.failed != null) m.failed(err)
        else this.warnings.warn('nats reply failed', { subject: m.subject, err: messageOf(err) })
      }
    }
  }

  private onAnswer(err: Error | null, msg: Msg): void {
    if (err != null) {
      this.warnings.warn('nats inbox subscription error', { err: err.message })
      return
    }
    const p = this.pending.get(msg.subject.slice(this.inbox.length))
    if (p == null) return // a late answer to a request that already settled
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      this.settle(
        msg.subject.slice(this.inbox.length),
        new StargateError(Code.Unavailable, `no gateway listens on ${p.subject} (the peer is not connected to NATS)`),
      )
      return
    }
    let value: unknown
    try {
      value = p.accept(msg.data)
    } catch (e: unknown) {
      this.dropped++
      this.warnings.warn('dropped NATS answer', { subject: p.subject, reason: messageOf(e) })
      return
    }
    this.settle(msg.subject.slice(this.inbox.length), undefined, value)
  }

  private settle(token: string, err: StargateError | undefined, value?: unknown): void {
    const p = this.pending.get(token)
    if (p == null) return
    this.pending.delete(token)
    p.timer.clear()
    p.signal.removeEventListener('abort', p.onAbort)
    if (err != null) p.reject(err)
    else p.resolve(value)
  }

  private failPending(reason: string): void {
    for (const token of [...this.pending.keys()]) this.settle(token, new StargateError(Code.Unavailable, reason))
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.retryTimer)
    const nc = this.nc
    this.nc = undefined
    this.stateRef = NatsState.DISCONNECTED
    this.failPending('the gateway is stopping')
    if (nc != null) {
      try {
        await nc.drain()
      } catch {
        await nc.close()
      }
    }
  }
}
