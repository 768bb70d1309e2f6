import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { messageOf } from '@stargate/shared/errors'
import { corsOriginProblem } from '@stargate/shared/grpc/cors'
import { loadOrCreateIdentity, peerIdOf } from '@stargate/shared/identity'
import { exitOnProcessFaults, stopOnSignals } from '@stargate/shared/lifecycle'
import { createLogger } from '@stargate/shared/log'
import { type FlagSpec, hostPort, int, list, num, type ParsedFlags, str, UsageError } from '@stargate/shared/options'
import { startTelemetry } from '@stargate/shared/telemetry'
import { GATEWAY_DEFAULTS as D, GATEWAY_LIMITS as L } from './defaults.ts'
import { createGateway, type Gateway, type GatewayAddresses } from './gateway.ts'
import { type GatewayInit, relayAddrProblem, type StaticPeer } from './options.ts'
import { parseAllowCaller } from './policy.ts'
import { resolveStatePaths } from './state.ts'
import { ExposeTable, parseExposeFlag } from './tunnel/expose.ts'
import { parseRouteFlag, RouteTable } from './tunnel/routes.ts'

/** Flags of `stargate gateway`. */
export const GATEWAY_FLAGS: FlagSpec[] = [
  {
    name: 'listen',
    type: 'string',
    description: 'HOST:PORT of the gRPC / Connect / gRPC-Web API',
    defaultText: `${D.apiHost}:${D.apiPort}`,
  },
  { name: 'p2p-listen', type: 'string', multiple: true, description: 'libp2p listen multiaddr; none = reachable only through relays' },
  { name: 'p2p-announce', type: 'string', multiple: true, description: 'extra multiaddr to announce to peers' },
  {
    name: 'relay',
    type: 'string',
    multiple: true,
    description: 'relay TCP multiaddr; its peer id is learned on connecting unless it ends in /p2p/<id>',
  },
  {
    name: 'nats',
    type: 'string',
    multiple: true,
    description: 'NATS server URL(s) for the NATS tier and presence, comma-separated; other cluster members are discovered',
  },
  { name: 'identity', type: 'string', description: 'Ed25519 identity file, created on first start', defaultText: D.identityFile },
  { name: 'peer', type: 'string', multiple: true, description: 'static peer PEERID=MULTIADDR' },
  { name: 'capability', type: 'string', multiple: true, description: 'capability announced in presence records' },
  {
    name: 'call-deadline-ms',
    type: 'string',
    description: 'deadline of a Call without a client deadline',
    defaultText: String(D.callDeadlineMs),
  },
  { name: 'attempt-timeout-ms', type: 'string', description: 'timeout of one tier attempt', defaultText: String(D.attemptTimeoutMs) },
  { name: 'max-retries', type: 'string', description: 'retries of the tier chain on transport failure', defaultText: String(D.maxRetries) },
  { name: 'backoff-factor', type: 'string', description: 'exponential backoff factor', defaultText: String(D.backoffFactor) },
  { name: 'backoff-base-ms', type: 'string', description: 'delay before the first retry', defaultText: String(D.backoffBaseMs) },
  {
    name: 'tier-stagger-ms',
    type: 'string',
    description: 'start the next tier when the current one has not connected after this long',
    defaultText: String(D.tierStaggerMs),
  },
  {
    name: 'tier-cooldown-ms',
    type: 'string',
    description: 'skip a tier that failed toward a peer for this long',
    defaultText: String(D.tierCooldownMs),
  },
  { name: 'pool-max-peers', type: 'string', description: 'peers kept in the connection pool', defaultText: String(D.poolMaxPeers) },
  { name: 'pool-ttl-ms', type: 'string', description: 'idle time before a pooled connection is closed', defaultText: String(D.poolTtlMs) },
  { name: 'max-payload-bytes', type: 'string', description: 'largest call payload accepted', defaultText: String(D.maxPayloadBytes) },
  {
    name: 'relay-health-interval-ms',
    type: 'string',
    description: 'relay health check interval',
    defaultText: String(D.relayHealthIntervalMs),
  },
  {
    name: 'relay-health-timeout-ms',
    type: 'string',
    description: 'timeout of one relay health check',
    defaultText: String(D.relayHealthTimeoutMs),
  },
  {
    name: 'relay-unhealthy-after',
    type: 'string',
    description: 'consecutive failed checks before a relay is unhealthy',
    defaultText: String(D.relayUnhealthyAfterFailures),
  },
  {
    name: 'max-reserved-relays',
    type: 'string',
    description: 'relays to hold reservations on at once',
    defaultText: String(D.maxReservedRelays),
  },
  { name: 'auth-token-file', type: 'string', description: 'file of API bearer tokens, one per line; turns API auth on' },
  {
    name: 'auth-tokens',
    type: 'string',
    multiple: true,
    description: 'API bearer token; prefer the env variable or --auth-token-file (flags show in ps)',
  },
  {
    name: 'auth-health-open',
    type: 'string',
    description: 'true|false: grpc.health.v1 answers without a token when auth is on',
    defaultText: String(D.authHealthOpen),
  },
  { name: 'tls-cert', type: 'string', description: 'PEM certificate chain of the API; with --tls-key turns TLS on' },
  { name: 'tls-key', type: 'string', description: 'PEM private key of the API' },
  { name: 'tls-client-ca', type: 'string', description: 'PEM CA that API clients must present a certificate from (mTLS)' },
  {
    name: 'max-inbound-calls-per-peer',
    type: 'string',
    description: 'calls one remote peer may have in flight here (more get RESOURCE_EXHAUSTED)',
    defaultText: String(D.maxInboundCallsPerPeer),
  },
  {
    name: 'frame-stall-timeout-ms',
    type: 'string',
    description: 'close an inbound peer stream whose frame stays incomplete this long',
    defaultText: String(D.frameStallTimeoutMs),
  },
  {
    name: 'dedupe-window-ms',
    type: 'string',
    description: 'how long outcomes are remembered so a duplicate request is answered, not run again',
    defaultText: String(D.dedupeWindowMs),
  },
  {
    name: 'dedupe-max-entries',
    type: 'string',
    description: 'request ids remembered at most (all callers); when full, new requests get RESOURCE_EXHAUSTED',
    defaultText: String(D.dedupeMaxEntries),
  },
  {
    name: 'dedupe-max-bytes',
    type: 'string',
    description: 'id and response bytes remembered at most; older duplicates get ALREADY_EXISTS, never a second run',
    defaultText: String(D.dedupeMaxBytes),
  },
  {
    name: 'shutdown-grace-ms',
    type: 'string',
    description: 'time to finish in-flight calls on SIGTERM',
    defaultText: String(D.shutdownGraceMs),
  },
  {
    name: 'stun',
    type: 'string',
    multiple: true,
    description: 'STUN server HOST:PORT for NAT detection (two or more needed to classify)',
    defaultText: `each relay's host at port ${D.stunPort}`,
  },
  {
    name: 'nat-detect-interval-ms',
    type: 'string',
    description: 'NAT re-detection interval (also re-run when local addresses change)',
    defaultText: String(D.natDetectIntervalMs),
  },
  {
    name: 'metrics-listen',
    type: 'string',
    description: 'HOST:PORT to serve Prometheus metrics on (/metrics); OTLP export is configured by OTEL_* variables',
  },
  {
    name: 'state-dir',
    type: 'string',
    description: 'writable directory for all the gateway writes (the request journal); identity may be read-only',
    defaultText: "identity file's directory",
  },
  {
    name: 'request-journal',
    type: 'string',
    description: `directory of the request journal (a restart never runs a request twice); "${D.requestJournalOff}" turns it off`,
    defaultText: `<state-dir>/<peer id>${D.requestJournalSuffix}`,
  },
  {
    name: 'request-journal-max-bytes',
    type: 'string',
    description: 'disk space of the request journal at most; when full, new requests get RESOURCE_EXHAUSTED',
    defaultText: String(D.requestJournalMaxBytes),
  },
  {
    name: 'dedupe-caller-max-entries',
    type: 'string',
    description: 'request ids remembered at most per calling peer; when full, new ones get RESOURCE_EXHAUSTED',
    defaultText: String(D.dedupeMaxEntriesPerCaller),
  },
  {
    name: 'dedupe-caller-max-bytes',
    type: 'string',
    description: 'id and response bytes remembered at most per calling peer (its oldest responses go first)',
    defaultText: String(D.dedupeMaxBytesPerCaller),
  },
  {
    name: 'expose',
    type: 'string',
    multiple: true,
    description:
      'SERVICE=HOST:PORT: tunnelled gRPC calls for SERVICE (fully qualified, or * for every service) go to this h2c backend; https://HOST:PORT for TLS',
  },
  {
    name: 'expose-ca',
    type: 'string',
    description: 'PEM CA bundle that the certificates of TLS --expose backends must chain to',
    defaultText: "the system's CAs",
  },
  {
    name: 'route',
    type: 'string',
    multiple: true,
    description:
      'SERVICE=PEER_ID: tunnel gRPC calls for SERVICE (or * for every service) to this peer when the request has no stargate-peer header',
  },
  {
    name: 'tunnel-window-bytes',
    type: 'string',
    description: 'flow-control window of each tunnelled stream and direction (what a gateway buffers per stream)',
    defaultText: String(D.tunnelWindowBytes),
  },
  {
    name: 'tunnel-max-message-bytes',
    type: 'string',
    description: 'largest gRPC message tunnelled in either direction (larger: RESOURCE_EXHAUSTED)',
    defaultText: String(D.tunnelMaxMessageBytes),
  },
  {
    name: 'cors-allow-origin',
    type: 'string',
    multiple: true,
    description: 'origin whose web pages may call the API (CORS), e.g. https://app.example.com; * = any',
  },
  { name: 'nats-creds', type: 'string', description: 'NATS credentials file (user JWT and nkey seed, as nsc writes it)' },
  { name: 'nats-nkey', type: 'string', description: 'file holding the nkey seed (SU...) to authenticate to NATS with' },
  { name: 'nats-token-file', type: 'string', description: 'file holding the NATS token' },
  { name: 'nats-token', type: 'string', description: 'NATS token; prefer the env variable or --nats-token-file (flags show in ps)' },
  { name: 'nats-user', type: 'string', description: 'NATS user name (with --nats-password-file or STARGATE_NATS_PASSWORD)' },
  { name: 'nats-password-file', type: 'string', description: 'file holding the password of --nats-user' },
  { name: 'nats-password', type: 'string', description: 'password of --nats-user; prefer the env variable or --nats-password-file' },
  { name: 'nats-tls-ca', type: 'string', description: 'PEM CA the NATS servers must present a certificate from (turns TLS on)' },
  { name: 'nats-tls-cert', type: 'string', description: 'PEM client certificate for NATS (mTLS), with --nats-tls-key' },
  { name: 'nats-tls-key', type: 'string', description: 'PEM private key of --nats-tls-cert' },
  {
    name: 'nats-replay-max-sessions',
    type: 'string',
    description: 'sender sessions the NATS replay guard tracks; when full, new sessions are refused until old ones expire',
    defaultText: String(D.natsReplayMaxSessions),
  },
  {
    name: 'relay-stagger-ms',
    type: 'string',
    description: 'start the next relay circuit of an attempt when the ones started have not opened after this long',
    defaultText: String(D.relayStaggerMs),
  },
  {
    name: 'circuit-cooldown-ms',
    type: 'string',
    description: 'try a circuit that failed toward a peer last for this long (probing it in the background)',
    defaultText: String(D.circuitCooldownMs),
  },
  {
    name: 'liveness-probe-ms',
    type: 'string',
    description: 'ping a peer connection when calls wait and nothing arrived for this long; 0 = never',
    defaultText: String(D.livenessProbeMs),
  },
  {
    name: 'liveness-probe-timeout-ms',
    type: 'string',
    description: 'fail the calls of a connection whose ping is unanswered this long (they move on)',
    defaultText: String(D.livenessProbeTimeoutMs),
  },
  {
    name: 'allow-caller',
    type: 'string',
    multiple: true,
    description: 'PEER_ID[=PATTERN]: a peer (* = any) that may call methods matching PATTERN (NAME, PREFIX.*, *)',
  },
  {
    name: 'caller-policy',
    type: 'string',
    description: 'file of --allow-caller rules, one PEER_ID[=PATTERN] per line; re-read on SIGHUP',
  },
  {
    name: 'serve-queue-max-calls',
    type: 'string',
    description: 'calls waiting at most for one Serve stream; more get RESOURCE_EXHAUSTED',
    defaultText: String(D.serveQueueMaxCalls),
  },
  {
    name: 'serve-queue-max-bytes',
    type: 'string',
    description: 'payload bytes waiting at most for one Serve stream; more get RESOURCE_EXHAUSTED',
    defaultText: String(D.serveQueueMaxBytes),
  },
  {
    name: 'max-conn-streams',
    type: 'string',
    description: 'call streams one libp2p connection may open here; more are reset',
    defaultText: String(D.maxInboundStreamsPerConnection),
  },
  {
    name: 'max-conn-buffered-bytes',
    type: 'string',
    description: 'bytes one libp2p connection may have buffered here; more get RESOURCE_EXHAUSTED',
    defaultText: String(D.maxInboundBufferedBytesPerConnection),
  },
]

function parsePeer(value: string): StaticPeer {
  const eq = value.indexOf('=')
  if (eq <= 0) throw new UsageError(`--peer must be PEERID=MULTIADDR, got "${value}"`)
  const peerId = value.slice(0, eq)
  const addr = value.slice(eq + 1)
  try {
    peerIdFromString(peerId)
  } catch {
    throw new UsageError(`--peer "${value}": "${peerId}" is not a valid peer id`)
  }
  try {
    multiaddr(addr)
  } catch {
    throw new UsageError(`--peer "${value}": "${addr}" is not a valid multiaddr`)
  }
  return { peerId, addr }
}

/** Parses each value of a repeatable flag, turning a parse error into a usage error. */
function parsedList<T>(flags: ParsedFlags, name: string, parse: (value: string) => T): T[] {
  return list(flags, name).map((v) => {
    try {
      return parse(v)
    } catch (err: unknown) {
      throw new UsageError(messageOf(err))
    }
  })
}

/** Runs a whole-list check (a service given twice), turning its error into a usage error. */
function checked<T>(values: T, check: (values: T) => unknown): T {
  try {
    check(values)
  } catch (err: unknown) {
    throw new UsageError(messageOf(err))
  }
  return values
}

function multiaddrs(flags: ParsedFlags, name: string): string[] {
  const values = list(flags, name)
  for (const v of values) {
    try {
      multiaddr(v)
    } catch {
      throw new UsageError(`--${name} "${v}" is not a valid multiaddr`)
    }
  }
  return values
}

function trueFalse(flags: ParsedFlags, name: string): boolean | undefined {
  const v = str(flags, name)
  if (v === undefined) return undefined
  if (/^(1|true|yes)$/i.test(v)) return true
  if (/^(0|false|no)$/i.test(v)) return false
  throw new UsageError(`--${name} must be true or false, got "${v}"`)
}

/** Turns parsed flags into gateway options (without key and logger). */
export function gatewayConfigFromFlags(flags: ParsedFlags): {
  init: Omit<GatewayInit, 'privateKey' | 'log'>
  identityFile: string
  /** --state-dir and --request-journal, resolved with the peer id by resolveStatePaths() at start. */
  stateDir?: string
  requestJournal?: string
  metricsListen?: { host: string; port: number }
} {
  const listen = str(flags, 'listen')
  const api = listen != null ? hostPort(listen, 'listen') : undefined
  const relays = list(flags, 'relay')
  for (const r of relays) {
    const problem = relayAddrProblem(r)
    if (problem != null) throw new UsageError(`--relay "${r}" ${problem}`)
  }
  const identityFile = str(flags, 'identity') ?? D.identityFile
  const requestJournal = str(flags, 'request-journal')
  if (requestJournal === '') throw new UsageError(`--request-journal must be a directory or "${D.requestJournalOff}"`)
  const stateDir = str(flags, 'state-dir')
  if (stateDir === '') throw new UsageError('--state-dir must be a directory')
  const nats = list(flags, 'nats').flatMap((v) =>
    v
      .split(',')
      .map((u) => u.trim())
      .filter((u) => u !== ''),
  )
  const metricsListen = str(flags, 'metrics-listen')
  for (const url of nats) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s]+$/.test(url)) throw new UsageError(`--nats must be URLs like nats://HOST:4222, got "${url}"`)
  }
  const tlsCert = str(flags, 'tls-cert')
  const tlsKey = str(flags, 'tls-key')
  if ((tlsCert == null) !== (tlsKey == null)) throw new UsageError('--tls-cert and --tls-key must be given together')
  const allowCallers = parsedList(flags, 'allow-caller', (v) => {
    parseAllowCaller(v)
    return v
  })
  const callerPolicy = str(flags, 'caller-policy')
  if (callerPolicy === '') throw new UsageError('--caller-policy must be a file')
  const tlsClientCa = str(flags, 'tls-client-ca')
  if (tlsClientCa != null && tlsCert == null) throw new UsageError('--tls-client-ca needs --tls-cert and --tls-key')
  return {
    init: {
      apiHost: api?.host,
      apiPort: api?.port,
      p2pListen: multiaddrs(flags, 'p2p-listen'),
      p2pAnnounce: multiaddrs(flags, 'p2p-announce'),
      relays,
      natsServers: nats,
      natsCredsFile: str(flags, 'nats-creds'),
      natsNkeyFile: str(flags, 'nats-nkey'),
      natsTokenFile: str(flags, 'nats-token-file'),
      natsToken: str(flags, 'nats-token'),
      natsUser: str(flags, 'nats-user'),
      natsPasswordFile: str(flags, 'nats-password-file'),
      natsPassword: str(flags, 'nats-password'),
      natsTlsCaFile: str(flags, 'nats-tls-ca'),
      natsTlsCertFile: str(flags, 'nats-tls-cert'),
      natsTlsKeyFile: str(flags, 'nats-tls-key'),
      natsReplayMaxSessions: int(flags, 'nats-replay-max-sessions', 1),
      staticPeers: list(flags, 'peer').map(parsePeer),
      capabilities: list(flags, 'capability'),
      callDeadlineMs: int(flags, 'call-deadline-ms', 1),
      attemptTimeoutMs: int(flags, 'attempt-timeout-ms', 1),
      maxRetries: int(flags, 'max-retries', L.maxRetries.min, L.maxRetries.max),
      backoffFactor: num(flags, 'backoff-factor', L.backoffFactor.min, L.backoffFactor.max),
      backoffBaseMs: int(flags, 'backoff-base-ms', 1),
      tierStaggerMs: int(flags, 'tier-stagger-ms', 0),
      tierCooldownMs: int(flags, 'tier-cooldown-ms', 0),
      poolMaxPeers: int(flags, 'pool-max-peers', 1),
      poolTtlMs: int(flags, 'pool-ttl-ms', 1),
      maxPayloadBytes: int(flags, 'max-payload-bytes', 1),
      relayHealthIntervalMs: int(flags, 'relay-health-interval-ms', 1),
      relayHealthTimeoutMs: int(flags, 'relay-health-timeout-ms', 1),
      relayUnhealthyAfterFailures: int(flags, 'relay-unhealthy-after', 1),
      maxReservedRelays: int(flags, 'max-reserved-relays', 1),
      shutdownGraceMs: int(flags, 'shutdown-grace-ms', 0),
      maxInboundCallsPerPeer: int(flags, 'max-inbound-calls-per-peer', 1),
      frameStallTimeoutMs: int(flags, 'frame-stall-timeout-ms', 1),
      dedupeWindowMs: int(flags, 'dedupe-window-ms', 1),
      dedupeMaxEntries: int(flags, 'dedupe-max-entries', 1),
      dedupeMaxBytes: int(flags, 'dedupe-max-bytes', 1),
      dedupeMaxEntriesPerCaller: int(flags, 'dedupe-caller-max-entries', 1),
      dedupeMaxBytesPerCaller: int(flags, 'dedupe-caller-max-bytes', 1),
      requestJournalMaxBytes: int(flags, 'request-journal-max-bytes', 1),
      authTokenFile: str(flags, 'auth-token-file'),
      authTokens: list(flags, 'auth-tokens'),
      authHealthOpen: trueFalse(flags, 'auth-health-open'),
      tlsCertFile: tlsCert,
      tlsKeyFile: tlsKey,
      tlsClientCaFile: tlsClientCa,
      stunServers: list(flags, 'stun').map((v) => {
        if (hostPort(v, 'stun').port === 0) throw new UsageError(`--stun port must not be 0, got "${v}"`)
        return v
      }),
      natDetectIntervalMs: int(flags, 'nat-detect-interval-ms', 1),
      expose: checked(parsedList(flags, 'expose', parseExposeFlag), (e) => new ExposeTable(e)),
      exposeCaFile: str(flags, 'expose-ca'),
      routes: checked(parsedList(flags, 'route', parseRouteFlag), (r) => new RouteTable(r)),
      tunnelWindowBytes: int(flags, 'tunnel-window-bytes', L.tunnelWindowBytes.min, L.tunnelWindowBytes.max),
      tunnelMaxMessageBytes: int(flags, 'tunnel-max-message-bytes', L.tunnelMaxMessageBytes.min, L.tunnelMaxMessageBytes.max),
      corsAllowOrigins: list(flags, 'cors-allow-origin').map((v) => {
        const problem = corsOriginProblem(v)
        if (problem != null) throw new UsageError(`--cors-allow-origin "${v}" ${problem}`)
        return v
      }),
      relayStaggerMs: int(flags, 'relay-stagger-ms', 0),
      circuitCooldownMs: int(flags, 'circuit-cooldown-ms', 0),
      livenessProbeMs: int(flags, 'liveness-probe-ms', 0),
      livenessProbeTimeoutMs: int(flags, 'liveness-probe-timeout-ms', 1),
      allowCallers,
      callerPolicyFile: callerPolicy,
      serveQueueMaxCalls: int(flags, 'serve-queue-max-calls', 1),
      serveQueueMaxBytes: int(flags, 'serve-queue-max-bytes', 1),
      maxInboundStreamsPerConnection: int(flags, 'max-conn-streams', 1),
      maxInboundBufferedBytesPerConnection: int(flags, 'max-conn-buffered-bytes', 1),
    },
    identityFile,
    stateDir,
    requestJournal,
    metricsListen: metricsListen != null ? hostPort(metricsListen, 'metrics-listen') : undefined,
  }
}

/** `stargate gateway`: runs until SIGTERM/SIGINT. */
export async function runGateway(flags: ParsedFlags): Promise<void> {
  const log = createLogger('gateway')
  exitOnProcessFaults(log)
  const config = gatewayConfigFromFlags(flags)
  const { privateKey, created } = await loadOrCreateIdentity(config.identityFile)
  if (created) log.info('created identity', { file: config.identityFile })
  const state = resolveStatePaths({ ...config, peerId: peerIdOf(privateKey) })
  if (state.requestJournalDir == null) log.warn('request journal off: a restart may run an interrupted request again')
  const telemetry = await startTelemetry({
    serviceName: 'stargate-gateway',
    peerId: peerIdOf(privateKey),
    metricsListen: config.metricsListen,
    log: log.child('otel'),
  })
  let gateway: Gateway
  let addresses: GatewayAddresses
  try {
    gateway = await createGateway({ ...config.init, requestJournalDir: state.requestJournalDir, privateKey, log })
    // A start that fails half way has already stopped what it started (Gateway.start rolls back).
    addresses = await gateway.start()
  } catch (err: unknown) {
    await telemetry.shutdown()
    throw err
  }
  // Signal handlers go in before the readiness lines: whoever reads them may send SIGTERM at once.
  stopOnSignals(async () => {
    await gateway.stop()
    await telemetry.shutdown()
  }, log)
  // SIGHUP re-reads the caller policy file (and is otherwise ignored, instead of ending the process).
  process.on('SIGHUP', () => gateway.reloadCallerPolicy())
  const { api, multiaddrs } = addresses
  process.stdout.write(`Gateway started: ${gateway.peerId}\n`)
  process.stdout.write(`API: ${api.host}:${api.port}\n`)
  process.stdout.write(`Multiaddrs: ${JSON.stringify(multiaddrs)}\n`)
}
