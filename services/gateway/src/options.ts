import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { corsOriginProblem } from '@stargate/shared/grpc/cors'
import type { Logger } from '@stargate/shared/log'
import { GATEWAY_DEFAULTS, GATEWAY_LIMITS } from './defaults.ts'
import { parseObserver } from './nat/detector.ts'
import type { ExposeEntry } from './tunnel/expose.ts'
import type { RouteEntry } from './tunnel/routes.ts'

/** A static peer given with --peer PEERID=MULTIADDR. */
export interface StaticPeer {
  peerId: string
  addr: string
}

/** Complete, validated gateway options. */
export interface GatewayOptions {
  privateKey: PrivateKey
  log: Logger
  apiHost: string
  apiPort: number
  /** libp2p listen multiaddrs; empty means reachable only through relays. */
  p2pListen: string[]
  /** Extra multiaddrs to announce (e.g. a public address in front of a NAT). */
  p2pAnnounce: string[]
  relays: string[]
  /** NATS seed servers (URLs); empty = no NATS tier and no presence. Cluster members are discovered. */
  natsServers: string[]
  /** NATS credentials file (JWT and nkey seed, as written by nsc). */
  natsCredsFile?: string
  /** File holding an nkey seed (SU...). */
  natsNkeyFile?: string
  /** File holding a NATS token. */
  natsTokenFile?: string
  /** NATS token (STARGATE_NATS_TOKEN). */
  natsToken?: string
  natsUser?: string
  /** File holding the password of natsUser. */
  natsPasswordFile?: string
  /** Password of natsUser (STARGATE_NATS_PASSWORD). */
  natsPassword?: string
  /** PEM CA that the NATS servers' certificates must chain to (turns TLS on). */
  natsTlsCaFile?: string
  /** PEM client certificate presented to NATS (with natsTlsKeyFile; turns TLS on). */
  natsTlsCertFile?: string
  natsTlsKeyFile?: string
  /** Sender sessions the NATS replay guard tracks at most (new sessions are refused when full). */
  natsReplayMaxSessions: number
  staticPeers: StaticPeer[]
  callDeadlineMs: number
  attemptTimeoutMs: number
  maxRetries: number
  backoffFactor: number
  backoffBaseMs: number
  backoffJitter: number
  tierStaggerMs: number
  tierCooldownMs: number
  /** Within one relay attempt, the next circuit starts when the ones started have not opened after this long. */
  relayStaggerMs: number
  /** A circuit that failed toward a peer is tried last for this long. */
  circuitCooldownMs: number
  /** When calls wait on a peer channel and nothing arrived for this long, its connection is probed. */
  livenessProbeMs: number
  /** A liveness probe unanswered for this long fails the channel's calls (they move to another circuit or tier). */
  livenessProbeTimeoutMs: number
  poolMaxPeers: number
  poolTtlMs: number
  maxPayloadBytes: number
  maxInboundCallsPerPeer: number
  frameStallTimeoutMs: number
  dedupeWindowMs: number
  dedupeMaxEntries: number
  dedupeMaxEntriesPerCaller: number
  dedupeMaxBytes: number
  dedupeMaxBytesPerCaller: number
  maxRequestIdBytes: number
  maxMethodBytes: number
  relayHealthIntervalMs: number
  relayHealthTimeoutMs: number
  relayUnhealthyAfterFailures: number
  maxReservedRelays: number
  presenceIntervalMs: number
  presenceTtlMs: number
  natsSubjectPrefix: string
  shutdownGraceMs: number
  latencyEwmaAlpha: number
  capabilities: string[]
  /** Directory of the journal of requests handed to handlers (survives restarts; no duplicate runs). Unset = memory only. */
  requestJournalDir?: string
  requestJournalMaxBytes: number
  requestJournalSyncIntervalMs: number
  /** API bearer tokens, one per line (auth is on when this or authTokens gives a token). */
  authTokenFile?: string
  /** API bearer tokens (STARGATE_AUTH_TOKENS). */
  authTokens: string[]
  /** Whether grpc.health.v1 answers without a token when auth is on. */
  authHealthOpen: boolean
  /** TLS certificate chain (PEM file) of the API; with tlsKeyFile turns TLS on. */
  tlsCertFile?: string
  /** TLS private key (PEM file) of the API. */
  tlsKeyFile?: string
  /** CA (PEM file) that API client certificates must chain to; turns mTLS on. */
  tlsClientCaFile?: string
  /** STUN observers for NAT detection as HOST:PORT; empty = each relay's host at stunPort. */
  stunServers: string[]
  stunPort: number
  stunTimeoutMs: number
  stunRetransmitMs: number
  natDetectIntervalMs: number
  natAddrPollMs: number
  /** --expose: the local gRPC backends tunnelled calls for each service go to. */
  expose: ExposeEntry[]
  /** --expose-ca: CA bundle (PEM file) that TLS backends must chain to; the system's CAs when unset. */
  exposeCaFile?: string
  /** --route: the peer tunnelled calls for a service go to when the request names none. */
  routes: RouteEntry[]
  /** Flow-control window of each tunnelled stream and direction. */
  tunnelWindowBytes: number
  /** Largest gRPC message tunnelled, either direction. */
  tunnelMaxMessageBytes: number
  /** Origins whose web pages may call the API (Connect, gRPC-Web) through CORS; `*` = any; empty = none. */
  corsAllowOrigins: string[]
  /** Caller policy rules, `PEER_ID[=PATTERN]` (--allow-caller); none and no file: every peer may call. */
  allowCallers: string[]
  /** Caller policy file (--caller-policy): one rule per line, re-read on SIGHUP. */
  callerPolicyFile?: string
  serveQueueMaxCalls: number
  serveQueueMaxBytes: number
  maxInboundStreamsPerConnection: number
  maxInboundBufferedBytesPerConnection: number
}

/**
 * Why a relay address cannot be used, or undefined when it can: a TCP multiaddr (ip4/ip6/dns*), optionally
 * ending in /p2p/<relay peer id>. Without the peer id it is learned in the handshake with the relay.
 */
export function relayAddrProblem(addr: string): string | undefined {
  let components: ReturnType<ReturnType<typeof multiaddr>['getComponents']>
  try {
    components = multiaddr(addr).getComponents()
  } catch {
    return 'is not a valid multiaddr'
  }
  const example = 'such as /dns4/relay.example.com/tcp/4001 (optionally ending in /p2p/<relay peer id>)'
  if (components.some((c) => c.name === 'p2p-circuit')) return `must be the relay's own address, not a circuit address, ${example}`
  if (!components.some((c) => c.name === 'tcp')) return `must be a TCP address ${example}`
  const p2p = components.findIndex((c) => c.name === 'p2p')
  if (p2p >= 0) {
    if (p2p !== components.length - 1) return `must end with its /p2p/<relay peer id>, ${example}`
    try {
      peerIdFromString(components[p2p]?.value ?? '')
    } catch {
      return `has an invalid relay peer id "${components[p2p]?.value}"`
    }
  }
  return undefined
}

export type GatewayInit = Pick<GatewayOptions, 'privateKey' | 'log'> & Partial<GatewayOptions>

/** Fills defaults from GATEWAY_DEFAULTS and validates; throws RangeError naming the option. */
export function resolveGatewayOptions(init: GatewayInit): GatewayOptions {
  const defined = Object.fromEntries(Object.entries(init).filter(([, v]) => v !== undefined)) as GatewayInit
  const o: GatewayOptions = {
    ...GATEWAY_DEFAULTS,
    p2pListen: [],
    p2pAnnounce: [],
    relays: [],
    natsServers: [],
    staticPeers: [],
    capabilities: [],
    authTokens: [],
    stunServers: [],
    expose: [],
    routes: [],
    corsAllowOrigins: [],
    allowCallers: [],
    ...defined,
  }
  if ((o.tlsCertFile == null) !== (o.tlsKeyFile == null)) {
    throw new RangeError('tlsCertFile and tlsKeyFile must be given together (--tls-cert and --tls-key)')
  }
  if (o.tlsClientCaFile != null && o.tlsCertFile == null) {
    throw new RangeError('tlsClientCaFile (--tls-client-ca) needs TLS: give --tls-cert and --tls-key too')
  }
  for (const a of [...o.p2pListen, ...o.p2pAnnounce]) multiaddr(a)
  for (const r of o.relays) {
    const problem = relayAddrProblem(r)
    if (problem != null) throw new RangeError(`relay address ${r} ${problem}`)
  }
  for (const s of o.stunServers) parseObserver(s)
  for (const origin of o.corsAllowOrigins) {
    const problem = corsOriginProblem(origin)
    if (problem != null) throw new RangeError(`corsAllowOrigins: "${origin}" ${problem}`)
  }
  checkNatsOptions(o)
  for (const p of o.staticPeers) {
    peerIdFromString(p.peerId)
    multiaddr(p.addr)
  }
  const positive: Array<keyof GatewayOptions> = [
    'callDeadlineMs',
    'attemptTimeoutMs',
    'backoffBaseMs',
    'poolMaxPeers',
    'poolTtlMs',
    'maxPayloadBytes',
    'maxInboundCallsPerPeer',
    'frameStallTimeoutMs',
    'dedupeWindowMs',
    'dedupeMaxEntries',
    'dedupeMaxEntriesPerCaller',
    'dedupeMaxBytes',
    'dedupeMaxBytesPerCaller',
    'maxRequestIdBytes',
    'maxMethodBytes',
    'requestJournalMaxBytes',
    'requestJournalSyncIntervalMs',
    'relayHealthIntervalMs',
    'relayHealthTimeoutMs',
    'relayUnhealthyAfterFailures',
    'maxReservedRelays',
    'presenceIntervalMs',
    'stunPort',
    'stunTimeoutMs',
    'stunRetransmitMs',
    'natDetectIntervalMs',
    'natAddrPollMs',
    'natsReplayMaxSessions',
    'livenessProbeTimeoutMs',
    'serveQueueMaxCalls',
    'serveQueueMaxBytes',
    'maxInboundStreamsPerConnection',
    'maxInboundBufferedBytesPerConnection',
  ]
  for (const k of positive) {
    if (!((o[k] as number) > 0)) throw new RangeError(`${k} must be positive, got ${String(o[k])}`)
  }
  for (const k of ['tunnelWindowBytes', 'tunnelMaxMessageBytes'] as const) {
    const { min, max } = GATEWAY_LIMITS[k]
    if (!(Number.isSafeInteger(o[k]) && o[k] >= min && o[k] <= max)) {
      throw new RangeError(`${k} must be an integer from ${min} to ${max}, got ${o[k]}`)
    }
  }
  const maxFrameBytes = o.maxPayloadBytes + GATEWAY_DEFAULTS.frameOverheadBytes
  if (o.maxInboundBufferedBytesPerConnection < maxFrameBytes) {
    throw new RangeError(
      `maxInboundBufferedBytesPerConnection (--max-conn-buffered-bytes) is ${o.maxInboundBufferedBytesPerConnection}; it must hold one frame of the largest payload (${maxFrameBytes} bytes = --max-payload-bytes + ${GATEWAY_DEFAULTS.frameOverheadBytes})`,
    )
  }
  if (o.backoffFactor < 1) throw new RangeError(`backoffFactor must be at least 1, got ${o.backoffFactor}`)
  if (o.maxRetries < 0) throw new RangeError(`maxRetries must not be negative, got ${o.maxRetries}`)
  for (const k of ['relayStaggerMs', 'circuitCooldownMs', 'livenessProbeMs'] as const) {
    if (!(o[k] >= 0)) throw new RangeError(`${k} must not be negative, got ${String(o[k])}`)
  }
  return o
}

/** NATS servers, credentials and TLS: one way to authenticate, files that go together. Throws RangeError naming the flags. */
function checkNatsOptions(o: GatewayOptions): void {
  for (const url of o.natsServers) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s,]+$/.test(url)) throw new RangeError(`--nats must be URLs like nats://HOST:4222, got "${url}"`)
  }
  const methods = [
    o.natsCredsFile != null && '--nats-creds',
    o.natsNkeyFile != null && '--nats-nkey',
    o.natsTokenFile != null && '--nats-token-file',
    o.natsToken != null && '--nats-token',
    o.natsUser != null && '--nats-user',
  ].filter((m) => m !== false)
  if (methods.length > 1) throw new RangeError(`NATS authentication: give one of ${methods.join(', ')}, not several`)
  if (o.natsUser != null && o.natsPassword == null && o.natsPasswordFile == null) {
    throw new RangeError('--nats-user needs --nats-password-file (or STARGATE_NATS_PASSWORD)')
  }
  if (o.natsUser == null && (o.natsPassword != null || o.natsPasswordFile != null)) {
    throw new RangeError('--nats-password-file / STARGATE_NATS_PASSWORD need --nats-user')
  }
  if (o.natsPassword != null && o.natsPasswordFile != null)
    throw new RangeError('give --nats-password-file or STARGATE_NATS_PASSWORD, not both')
  if ((o.natsTlsCertFile == null) !== (o.natsTlsKeyFile == null))
    throw new RangeError('--nats-tls-cert and --nats-tls-key must be given together')
  const configured = methods.length > 0 || o.natsTlsCaFile != null || o.natsTlsCertFile != null
  if (configured && o.natsServers.length === 0) throw new RangeError('NATS credentials or TLS given without --nats')
}
