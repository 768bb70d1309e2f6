import { peerIdFromString } from '@libp2p/peer-id'
import { stargateDescriptorSets } from '@stargate/shared/descriptors'
import { RelayService } from '@stargate/shared/gen/relay'
import { ApiServer } from '@stargate/shared/grpc/server'
import { loadOrCreateIdentity, peerIdOf } from '@stargate/shared/identity'
import { exitOnProcessFaults, stopOnSignals } from '@stargate/shared/lifecycle'
import { createLogger } from '@stargate/shared/log'
import { bool, type FlagSpec, hostPort, int, list, type ParsedFlags, str, UsageError } from '@stargate/shared/options'
import { startTelemetry } from '@stargate/shared/telemetry'
import { rpcServerSpans } from '@stargate/shared/telemetry-rpc'
import { relayServiceImpl } from './admin.ts'
import { RELAY_DEFAULTS } from './defaults.ts'
import { Relay, type RelayInit } from './relay.ts'
import { StunServer } from './stun.ts'
import { observeRelay, RELAY_SCOPE } from './telemetry.ts'

/** Flags of `stargate relay`. */
export const RELAY_FLAGS: FlagSpec[] = [
  { name: 'host', type: 'string', description: 'address the libp2p TCP listener binds', defaultText: RELAY_DEFAULTS.host },
  { name: 'port', type: 'string', description: 'libp2p TCP port', defaultText: String(RELAY_DEFAULTS.port) },
  {
    name: 'max-connections',
    type: 'string',
    description: 'most libp2p connections held',
    defaultText: String(RELAY_DEFAULTS.maxConnections),
  },
  { name: 'max-reservations', type: 'string', description: 'most reservations held at once', defaultText: 'max-connections' },
  {
    name: 'reservation-ttl-ms',
    type: 'string',
    description: 'reservation lifetime before renewal',
    defaultText: String(RELAY_DEFAULTS.reservationTtlMs),
  },
  { name: 'max-circuit-bytes', type: 'string', description: 'data limit per relayed connection and direction, 0 = none', defaultText: '0' },
  { name: 'max-circuit-duration-ms', type: 'string', description: 'duration limit per relayed connection, 0 = none', defaultText: '0' },
  {
    name: 'max-reservations-per-peer',
    type: 'string',
    description: 'reservations one peer id holds at once (on distinct connections); a newer one replaces the oldest',
    defaultText: String(RELAY_DEFAULTS.maxReservationsPerPeer),
  },
  {
    name: 'max-reservations-per-ip',
    type: 'string',
    description: 'reservations one IP (IPv6: one /64) may hold',
    defaultText: String(RELAY_DEFAULTS.maxReservationsPerIp),
  },
  {
    name: 'max-connections-per-ip-per-second',
    type: 'string',
    description: 'inbound connection rate limit per IP',
    defaultText: String(RELAY_DEFAULTS.maxConnectionsPerIpPerSecond),
  },
  {
    name: 'max-reservations-per-ip-per-second',
    type: 'string',
    description: 'reservation rate limit per IP',
    defaultText: String(RELAY_DEFAULTS.maxReservationsPerIpPerSecond),
  },
  { name: 'allow-peer', type: 'string', multiple: true, description: 'peer id allowed to use the relay (others get PERMISSION_DENIED)' },
  {
    name: 'admin-listen',
    type: 'string',
    description: 'HOST:PORT of the admin gRPC API (RelayService, health, reflection)',
    defaultText: `${RELAY_DEFAULTS.adminHost}:${RELAY_DEFAULTS.adminPort}`,
  },
  {
    name: 'identity',
    type: 'string',
    description: 'Ed25519 identity file, created on first start',
    defaultText: RELAY_DEFAULTS.identityFile,
  },
  { name: 'announce', type: 'string', multiple: true, description: 'public multiaddr to advertise instead of the listen addresses' },
  {
    name: 'shutdown-grace-ms',
    type: 'string',
    description: 'time to drain circuits and calls on SIGTERM',
    defaultText: String(RELAY_DEFAULTS.shutdownGraceMs),
  },
  {
    name: 'stun-port',
    type: 'string',
    description: 'UDP port of the STUN responder (on --host) that gateways use for NAT detection; 0 = any free port',
    defaultText: String(RELAY_DEFAULTS.stunPort),
  },
  { name: 'no-stun', type: 'boolean', description: 'do not run the STUN responder' },
  {
    name: 'metrics-listen',
    type: 'string',
    description: 'HOST:PORT to serve Prometheus metrics on (/metrics); OTLP export is configured by OTEL_* variables',
  },
  {
    name: 'max-circuits-per-ip-per-second',
    type: 'string',
    description: 'CONNECT rate limit per source IP',
    defaultText: String(RELAY_DEFAULTS.maxCircuitsPerIpPerSecond),
  },
  {
    name: 'max-circuits-to-peer-per-second',
    type: 'string',
    description: 'CONNECT rate limit per destination peer',
    defaultText: String(RELAY_DEFAULTS.maxCircuitsToPeerPerSecond),
  },
  {
    name: 'max-circuits-per-ip',
    type: 'string',
    description: 'relayed connections open at once from one source IP',
    defaultText: String(RELAY_DEFAULTS.maxCircuitsPerIp),
  },
  {
    name: 'max-circuits-per-peer',
    type: 'string',
    description: 'relayed connections open at once from one source peer',
    defaultText: String(RELAY_DEFAULTS.maxCircuitsPerPeer),
  },
  {
    name: 'max-circuits-to-peer',
    type: 'string',
    description: 'relayed connections open at once to one reservation holder',
    defaultText: String(RELAY_DEFAULTS.maxCircuitsToPeer),
  },
  {
    name: 'stop-timeout-ms',
    type: 'string',
    description: 'CONNECT fails (CONNECTION_FAILED) when the reservation holder has not answered STOP by then',
    defaultText: String(RELAY_DEFAULTS.stopTimeoutMs),
  },
  {
    name: 'max-stop-failures',
    type: 'string',
    description: 'unanswered STOPs in a row after which a reservation is dropped and its holder disconnected',
    defaultText: String(RELAY_DEFAULTS.maxStopFailures),
  },
]

/** Turns parsed flags into relay options (without the key) and the admin address. */
export function relayConfigFromFlags(flags: ParsedFlags): {
  init: Omit<RelayInit, 'privateKey' | 'log'>
  admin: { host: string; port: number }
  identityFile: string
  /** undefined = no STUN responder (--no-stun). */
  stunPort: number | undefined
  metricsListen?: { host: string; port: number }
} {
  const allowlist = list(flags, 'allow-peer')
  for (const p of allowlist) {
    try {
      peerIdFromString(p)
    } catch {
      throw new UsageError(`--allow-peer "${p}" is not a valid peer id`)
    }
  }
  const adminListen = str(flags, 'admin-listen')
  const metricsListen = str(flags, 'metrics-listen')
  return {
    init: {
      host: str(flags, 'host'),
      port: int(flags, 'port', 0, 65535),
      maxConnections: int(flags, 'max-connections', 1),
      maxReservations: int(flags, 'max-reservations', 1),
      reservationTtlMs: int(flags, 'reservation-ttl-ms', 1000),
      maxCircuitBytes: int(flags, 'max-circuit-bytes', 0),
      maxCircuitDurationMs: int(flags, 'max-circuit-duration-ms', 0),
      maxReservationsPerPeer: int(flags, 'max-reservations-per-peer', 1),
      maxReservationsPerIp: int(flags, 'max-reservations-per-ip', 1),
      maxConnectionsPerIpPerSecond: int(flags, 'max-connections-per-ip-per-second', 1),
      maxReservationsPerIpPerSecond: int(flags, 'max-reservations-per-ip-per-second', 1),
      maxCircuitsPerIpPerSecond: int(flags, 'max-circuits-per-ip-per-second', 1),
      maxCircuitsToPeerPerSecond: int(flags, 'max-circuits-to-peer-per-second', 1),
      maxCircuitsPerIp: int(flags, 'max-circuits-per-ip', 1),
      maxCircuitsPerPeer: int(flags, 'max-circuits-per-peer', 1),
      maxCircuitsToPeer: int(flags, 'max-circuits-to-peer', 1),
      stopTimeoutMs: int(flags, 'stop-timeout-ms', 1),
      maxStopFailures: int(flags, 'max-stop-failures', 1),
      allowlist,
      announce: list(flags, 'announce'),
      shutdownGraceMs: int(flags, 'shutdown-grace-ms', 0),
    },
    admin: adminListen != null ? hostPort(adminListen, 'admin-listen') : { host: RELAY_DEFAULTS.adminHost, port: RELAY_DEFAULTS.adminPort },
    identityFile: str(flags, 'identity') ?? RELAY_DEFAULTS.identityFile,
    stunPort: bool(flags, 'no-stun') === true ? undefined : (int(flags, 'stun-port', 0, 65535) ?? RELAY_DEFAULTS.stunPort),
    metricsListen: metricsListen != null ? hostPort(metricsListen, 'metrics-listen') : undefined,
  }
}

/** `stargate relay`: runs until SIGTERM/SIGINT. */
export async function runRelay(flags: ParsedFlags): Promise<void> {
  const log = createLogger('relay')
  exitOnProcessFaults(log)
  const config = relayConfigFromFlags(flags)
  const { privateKey, created } = await loadOrCreateIdentity(config.identityFile)
  if (created) log.info('created identity', { file: config.identityFile })
  const telemetry = await startTelemetry({
    serviceName: 'stargate-relay',
    peerId: peerIdOf(privateKey),
    metricsListen: config.metricsListen,
    log: log.child('otel'),
  })
  const relay = new Relay({ ...config.init, privateKey, log })
  const api = new ApiServer({
    services: [{ service: RelayService, impl: relayServiceImpl(relay) }],
    descriptorSets: [...stargateDescriptorSets()],
    log: log.child('admin'),
    middleware: [rpcServerSpans(RELAY_SCOPE)],
  })
  const stun =
    config.stunPort != null ? new StunServer({ host: relay.options.host, port: config.stunPort, log: log.child('stun') }) : undefined
  let admin: { host: string; port: number }
  let stunAddr: { host: string; port: number } | undefined
  try {
    await relay.start()
    admin = await api.listen(config.admin.host, config.admin.port)
    stunAddr = await stun?.start()
  } catch (err: unknown) {
    await api.stop(0)
    await relay.stop()
    await telemetry.shutdown()
    throw err
  }
  observeRelay(() => relay.snapshot(), relay.options)
  // Signal handlers go in before the readiness lines: whoever reads them may send SIGTERM at once.
  stopOnSignals(async () => {
    await stun?.stop()
    // The admin API stays up while circuits drain, so operators can watch them go.
    await relay.stop(relay.options.shutdownGraceMs)
    await api.stop(1000)
    await telemetry.shutdown()
  }, log)
  process.stdout.write(`Relay node started: ${relay.peerId.toString()}\n`)
  process.stdout.write(`Multiaddrs: ${JSON.stringify(relay.multiaddrs)}\n`)
  process.stdout.write(`Admin API: ${admin.host}:${admin.port}\n`)
  if (stunAddr != null) process.stdout.write(`STUN: ${stunAddr.host}:${stunAddr.port}\n`)
}
