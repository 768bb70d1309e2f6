import { create } from '@bufbuild/protobuf'
import { durationFromMs, timestampFromDate } from '@bufbuild/protobuf/wkt'
import type { ServiceImpl } from '@connectrpc/connect'
import {
  CircuitEnd,
  type GetRelayInfoResponse,
  GetRelayInfoResponseSchema,
  type GetRelayStatsResponse,
  GetRelayStatsResponseSchema,
  RefusalReason,
  type RelayService,
} from '@stargate/shared/gen/relay'
import { STARGATE_VERSION } from '@stargate/shared/version'
import type { Relay } from './relay.ts'
import type { SpliceEnd } from './splice.ts'
import type { RefusalReasonName } from './stats.ts'

const REFUSAL_REASONS: RefusalReasonName[] = [
  'RESERVATION_LIMIT',
  'PERMISSION_DENIED',
  'RATE_LIMITED',
  'PER_PEER_LIMIT',
  'PER_IP_LIMIT',
  'NO_RESERVATION',
  'CONNECTION_LIMIT',
  'CONNECTION_FAILED',
  'SOURCE_RATE_LIMITED',
  'DESTINATION_RATE_LIMITED',
  'SOURCE_CIRCUIT_LIMIT',
  'DESTINATION_CIRCUIT_LIMIT',
  'STOP_TIMEOUT',
]

/** Every circuit end, in enum order, with its wire value. */
const CIRCUIT_ENDS: Array<[SpliceEnd, CircuitEnd]> = [
  ['closed', CircuitEnd.CLOSED],
  ['reset', CircuitEnd.RESET],
  ['data-limit', CircuitEnd.DATA_LIMIT],
  ['duration-limit', CircuitEnd.DURATION_LIMIT],
  ['shutdown', CircuitEnd.SHUTDOWN],
  ['replaced', CircuitEnd.REPLACED],
  ['target-gone', CircuitEnd.TARGET_GONE],
  ['initiator-gone', CircuitEnd.INITIATOR_GONE],
]

/** The admin RelayService over a running relay. */
export function relayServiceImpl(relay: Relay): ServiceImpl<typeof RelayService> {
  return {
    getRelayInfo(): GetRelayInfoResponse {
      const o = relay.options
      return create(GetRelayInfoResponseSchema, {
        peerId: relay.peerId.toString(),
        multiaddrs: relay.multiaddrs,
        version: STARGATE_VERSION,
        startedAt: timestampFromDate(relay.startedAt),
        limits: {
          maxReservations: o.maxReservations,
          maxConnections: o.maxConnections,
          reservationTtl: durationFromMs(o.reservationTtlMs),
          maxCircuitBytes: BigInt(o.maxCircuitBytes),
          maxCircuitDuration: durationFromMs(o.maxCircuitDurationMs),
          maxReservationsPerPeer: o.maxReservationsPerPeer,
          maxReservationsPerIp: o.maxReservationsPerIp,
          maxConnectionsPerIpPerSecond: o.maxConnectionsPerIpPerSecond,
          maxReservationsPerIpPerSecond: o.maxReservationsPerIpPerSecond,
          allowlistEnabled: o.allowlist.length > 0,
          maxCircuitsPerIpPerSecond: o.maxCircuitsPerIpPerSecond,
          maxCircuitsToPeerPerSecond: o.maxCircuitsToPeerPerSecond,
          maxCircuitsPerIp: o.maxCircuitsPerIp,
          maxCircuitsPerPeer: o.maxCircuitsPerPeer,
          maxCircuitsToPeer: o.maxCircuitsToPeer,
          stopTimeout: durationFromMs(o.stopTimeoutMs),
          maxStopFailures: o.maxStopFailures,
        },
      })
    },
    getRelayStats(): GetRelayStatsResponse {
      const s = relay.snapshot()
      return create(GetRelayStatsResponseSchema, {
        reservations: s.reservations,
        activeCircuits: s.activeCircuits,
        totalCircuits: BigInt(s.totalCircuits),
        bytesFromInitiator: s.bytesFromInitiator,
        bytesToInitiator: s.bytesToInitiator,
        // Every reason, zero counts included, in enum order: stable rows for dashboards.
        refusals: REFUSAL_REASONS.map((name) => ({ reason: RefusalReason[name], count: BigInt(s.refusals.get(name) ?? 0) })),
        uptime: durationFromMs(s.uptimeMs),
        connections: s.connections,
        totalReservations: BigInt(s.totalReservations),
        reservationsReplaced: BigInt(s.reservationsReplaced),
        reservationsDropped: BigInt(s.reservationsDropped),
        circuitEnds: CIRCUIT_ENDS.map(([name, end]) => ({ end, count: BigInt(s.circuitEnds.get(name) ?? 0) })),
      })
    },
  }
}
