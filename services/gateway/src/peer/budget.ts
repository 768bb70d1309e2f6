/**
 * What one libp2p connection may hold on the callee side: how many /stargate/call streams it has open, and
 * how many bytes are buffered on its behalf — frames still arriving, requests being handled, answers
 * waiting to be written. A connection over its limits gets its new streams reset and its new requests
 * refused (RESOURCE_EXHAUSTED); each refusal is counted.
 */

export interface ConnectionLimits {
  /** Call streams open at once per connection. */
  maxStreams: number
  /** Bytes buffered at once per connection. */
  maxBufferedBytes: number
}

/** Refusals, over all connections. */
export interface ConnectionBudgetStats {
  /** Streams reset because their connection had maxStreams open. */
  streamsRefused: number
  /** Requests refused and streams reset because their connection had maxBufferedBytes buffered. */
  bytesRefused: number
}

/** The budget of one connection. */
export class ConnectionBudget {
  private streams = 0
  private bytes = 0
  private readonly limits: ConnectionLimits
  private readonly stats: ConnectionBudgetStats

  constructor(limits: ConnectionLimits, stats: ConnectionBudgetStats) {
    this.limits = limits
    this.stats = stats
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.streams
  }

  /** Bytes reserved now. */
  get bufferedBytes(): number {
    return this.bytes
  }

  get maxStreams(): number {
    return this.limits.maxStreams
  }

  get maxBufferedBytes(): number {
    return this.limits.maxBufferedBytes
  }

  /** Takes a stream slot; false (counted) when the connection already has maxStreams open. */
  openStream(): boolean {
    if (this.streams >= this.limits.maxStreams) {
      this.stats.streamsRefused++
      return false
    }
    this.streams++
    return true
  }

  closeStream(): void {
    if (this.streams > 0) this.streams--
  }

  /** Reserves bytes; false (counted, nothing reserved) when they would pass maxBufferedBytes. */
  reserve(bytes: number): boolean {
    if (this.bytes + bytes > this.limits.maxBufferedBytes) {
      this.stats.bytesRefused++
      return false
    }
    this.bytes += bytes
    return true
  }

  release(bytes: number): void {
    this.bytes = Math.max(0, this.bytes - bytes)
  }
}

/** The budgets of every connection (each created on its first stream, dropped with the connection). */
export class ConnectionBudgets {
  readonly stats: ConnectionBudgetStats = { streamsRefused: 0, bytesRefused: 0 }
  private readonly limits: ConnectionLimits
  private readonly byConnection = new WeakMap<object, ConnectionBudget>()

  constructor(limits: ConnectionLimits) {
    this.limits = limits
  }

  get maxStreams(): number {
    return this.limits.maxStreams
  }

  /** The budget of a connection (any object standing for it). */
  of(connection: object): ConnectionBudget {
    let budget = this.byConnection.get(connection)
    if (budget == null) {
      budget = new ConnectionBudget(this.limits, this.stats)
      this.byConnection.set(connection, budget)
    }
    return budget
  }
}
