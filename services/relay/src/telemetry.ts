import { metrics } from '@opentelemetry/api'
import { STARGATE_VERSION } from '@stargate/shared/version'
import type { RelayOptions, RelaySnapshot } from './relay.ts'

/** Instrumentation scope of the relay's metrics. */
export const RELAY_SCOPE = 'stargate-relay'

/** The relay numbers exported as metrics. Counters the relay does not keep (yet) are absent. */
export interface RelayReadings {
  reservations: number
  activeCircuits: number
  connections: number
  totalCircuits?: number
  totalReservations?: number
  reservationsReplaced?: number
  reservationsDropped?: number
  /** Bytes relayed from circuit initiators to targets, and back. */
  bytesFromInitiator?: number
  bytesToInitiator?: number
  /** Refused reservations and circuits by reason. */
  refusals?: Record<string, number>
  /** Ended circuits by why they ended. */
  circuitEnds?: Record<string, number>
}

/** Reads the relay's snapshot into metric readings: the one place to extend when the relay keeps more counters. */
export function relayReadings(s: RelaySnapshot): RelayReadings {
  return {
    reservations: s.reservations,
    activeCircuits: s.activeCircuits,
    connections: s.connections,
    totalCircuits: s.totalCircuits,
    totalReservations: s.totalReservations,
    reservationsReplaced: s.reservationsReplaced,
    reservationsDropped: s.reservationsDropped,
    bytesFromInitiator: Number(s.bytesFromInitiator),
    bytesToInitiator: Number(s.bytesToInitiator),
    refusals: Object.fromEntries(s.refusals),
    circuitEnds: Object.fromEntries(s.circuitEnds),
  }
}

/**
 * Registers the relay's observable metrics: stargate.relay.reservations, stargate.relay.circuits.active,
 * stargate.relay.connections and their limits stargate.relay.reservations.limit and
 * stargate.relay.connections.limit (gauges); stargate.relay.circuits, stargate.relay.reservations.accepted,
 * stargate.relay.reservations.replaced, stargate.relay.reservations.dropped, stargate.relay.bytes{direction},
 * stargate.relay.refusals{reason} and stargate.relay.circuits.ended{end} (counters). Each collection reads one
 * snapshot. A no-op unless the process started the OpenTelemetry SDK.
 */
export function observeRelay(snapshot: () => RelaySnapshot, limits: Pick<RelayOptions, 'maxReservations' | 'maxConnections'>): void {
  const meter = metrics.getMeter(RELAY_SCOPE, STARGATE_VERSION)
  // The limits are fixed at start; as gauges next to the live numbers they let dashboards and alerts show headroom.
  meter
    .createObservableGauge('stargate.relay.reservations.limit', {
      description: 'Most reservations held at once (--max-reservations)',
      unit: '{reservation}',
    })
    .addCallback((r) => r.observe(limits.maxReservations))
  meter
    .createObservableGauge('stargate.relay.connections.limit', {
      description: 'Most libp2p connections held (--max-connections)',
      unit: '{connection}',
    })
    .addCallback((r) => r.observe(limits.maxConnections))
  const reservations = meter.createObservableGauge('stargate.relay.reservations', {
    description: 'Reservations held now',
    unit: '{reservation}',
  })
  const active = meter.createObservableGauge('stargate.relay.circuits.active', {
    description: 'Relayed connections open now',
    unit: '{circuit}',
  })
  const connections = meter.createObservableGauge('stargate.relay.connections', {
    description: 'Open libp2p connections',
    unit: '{connection}',
  })
  const circuits = meter.createObservableCounter('stargate.relay.circuits', {
    description: 'Relayed connections since start',
    unit: '{circuit}',
  })
  const accepted = meter.createObservableCounter('stargate.relay.reservations.accepted', {
    description: 'Reservations accepted since start (including renewals)',
    unit: '{reservation}',
  })
  const replaced = meter.createObservableCounter('stargate.relay.reservations.replaced', {
    description: 'Reservations replaced by a newer one of the same peer on another connection',
    unit: '{reservation}',
  })
  const dropped = meter.createObservableCounter('stargate.relay.reservations.dropped', {
    description: 'Reservations dropped because their holder left STOP handshakes unanswered',
    unit: '{reservation}',
  })
  const bytes = meter.createObservableCounter('stargate.relay.bytes', {
    description: 'Bytes relayed, by direction (from_initiator, to_initiator)',
    unit: 'By',
  })
  const refusals = meter.createObservableCounter('stargate.relay.refusals', {
    description: 'Refused reservations and circuits, by reason',
    unit: '{refusal}',
  })
  const ended = meter.createObservableCounter('stargate.relay.circuits.ended', {
    description:
      'Relayed connections ended, by why (closed, reset, data-limit, duration-limit, shutdown, replaced, target-gone, initiator-gone)',
    unit: '{circuit}',
  })
  meter.addBatchObservableCallback(
    (r) => {
      const x = relayReadings(snapshot())
      r.observe(reservations, x.reservations)
      r.observe(active, x.activeCircuits)
      r.observe(connections, x.connections)
      if (x.totalCircuits != null) r.observe(circuits, x.totalCircuits)
      if (x.totalReservations != null) r.observe(accepted, x.totalReservations)
      if (x.reservationsReplaced != null) r.observe(replaced, x.reservationsReplaced)
      if (x.reservationsDropped != null) r.observe(dropped, x.reservationsDropped)
      if (x.bytesFromInitiator != null) r.observe(bytes, x.bytesFromInitiator, { direction: 'from_initiator' })
      if (x.bytesToInitiator != null) r.observe(bytes, x.bytesToInitiator, { direction: 'to_initiator' })
      for (const [reason, count] of Object.entries(x.refusals ?? {})) r.observe(refusals, count, { reason })
      for (const [end, count] of Object.entries(x.circuitEnds ?? {})) r.observe(ended, count, { end })
    },
    [reservations, active, connections, circuits, accepted, replaced, dropped, bytes, refusals, ended],
  )
}
