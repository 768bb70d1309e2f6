import type { SpliceEnd } from './splice.ts'

/** Why the relay refused a connection, reservation or circuit (names of stargate.v1.RefusalReason). */
export type RefusalReasonName =
  | 'RESERVATION_LIMIT'
  | 'PERMISSION_DENIED'
  | 'RATE_LIMITED'
  | 'PER_PEER_LIMIT'
  | 'PER_IP_LIMIT'
  | 'NO_RESERVATION'
  | 'CONNECTION_LIMIT'
  | 'CONNECTION_FAILED'
  | 'SOURCE_RATE_LIMITED'
  | 'DESTINATION_RATE_LIMITED'
  | 'SOURCE_CIRCUIT_LIMIT'
  | 'DESTINATION_CIRCUIT_LIMIT'
  | 'STOP_TIMEOUT'

/**
 * Counters since start. Bytes are the relayed connection's bytes as the relay forwards them after the hop/stop
 * handshake: the peers' encrypted (Noise) and multiplexed (Yamux) stream, i.e. application payload plus framing.
 */
export class RelayStats {
  totalCircuits = 0
  activeCircuits = 0
  totalReservations = 0
  /** Reservations replaced by a newer one of the same peer on another connection. */
  reservationsReplaced = 0
  /** Reservations dropped because their holder left STOP handshakes unanswered. */
  reservationsDropped = 0
  bytesFromInitiator = 0n
  bytesToInitiator = 0n
  readonly refusals = new Map<RefusalReasonName, number>()
  /** Relayed connections ended since start, by why they ended. */
  readonly circuitEnds = new Map<SpliceEnd, number>()

  refuse(reason: RefusalReasonName): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1)
  }

  circuitEnded(end: SpliceEnd): void {
    this.circuitEnds.set(end, (this.circuitEnds.get(end) ?? 0) + 1)
  }
}
