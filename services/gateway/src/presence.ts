import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt'
import type { PrivateKey } from '@libp2p/interface'
import { messageOf } from '@stargate/shared/errors'
import type { PresenceRecord } from '@stargate/shared/gen/envelope'
import { type NatType, PeerSource } from '@stargate/shared/gen/gateway'
import { type Logger, RateLimitedLog } from '@stargate/shared/log'
import { signPresence, verifyPresence } from '@stargate/shared/presence-sign'
import type { NatsBus } from './nats.ts'
import type { PeerBook } from './peers.ts'

export interface PresenceInit {
  directAddrs: string[]
  circuitAddrs: string[]
  capabilities: string[]
  natType: NatType
}

export interface PresenceOptions {
  bus: NatsBus
  peers: PeerBook
  key: PrivateKey
  peerId: string
  intervalMs: number
  ttlMs: number
  /** Queries are answered at most this often, however many arrive. */
  queryDebounceMs: number
  log: Logger
  /** The current record content (addresses, capabilities, NAT type). */
  current: () => PresenceInit
}

/**
 * Announces this gateway's signed presence record on NATS at start, periodically and on change, answers
 * presence queries, and learns other gateways from theirs. Unsigned or forged records are dropped; a
 * record older than the newest one accepted from its peer (sequence), or issued more than ttlMs ago, is
 * ignored, so a replayed record never replaces a peer's current addresses.
 */
export class Presence {
  readonly stats = { received: 0, rejected: 0, announced: 0, ignoredStale: 0, ignoredOlder: 0 }
  private readonly o: PresenceOptions
  private timer?: NodeJS.Timeout
  /** Increases with every record; starts from the clock in microseconds so a restart continues above it. */
  private sequence = BigInt(Date.now()) * 1000n
  private lastContent = ''
  private queryDebounce?: NodeJS.Timeout
  private readonly warnings: RateLimitedLog

  constructor(options: PresenceOptions) {
    this.o = options
    this.warnings = new RateLimitedLog(options.log)
  }

  start(): void {
    const { bus } = this.o
    bus.subscribe(bus.presenceSubject, (data) => void this.receive(data))
    bus.subscribe(bus.presenceQuerySubject, () => {
      // Answer queries, but at most once per queryDebounceMs however many arrive.
      if (this.queryDebounce != null) return
      this.queryDebounce = setTimeout(() => {
        this.queryDebounce = undefined
        void this.announce(true)
      }, this.o.queryDebounceMs)
      this.queryDebounce.unref()
    })
    bus.onConnected(() => {
      void this.announce(true)
      bus.publish(bus.presenceQuerySubject, new Uint8Array())
    })
    this.timer = setInterval(() => {
      this.o.peers.expire()
      void this.announce(true)
    }, this.o.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
    clearTimeout(this.queryDebounce)
  }

  /** Announces if the content changed (or always when forced). */
  async announce(force = false): Promise<void> {
    const content = this.o.current()
    const key = JSON.stringify(content, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))
    if (!force && key === this.lastContent) return
    this.lastContent = key
    try {
      const nowMs = Date.now()
      this.sequence = this.sequence + 1n > BigInt(nowMs) * 1000n ? this.sequence + 1n : BigInt(nowMs) * 1000n
      const bytes = await signPresence(
        { ...content, peerId: this.o.peerId, issuedAt: timestampFromMs(nowMs), sequence: this.sequence },
        this.o.key,
      )
      this.o.bus.publish(this.o.bus.presenceSubject, bytes)
      this.stats.announced++
    } catch (err: unknown) {
      this.o.log.warn('presence announce failed', { err: messageOf(err) })
    }
  }

  private async receive(data: Uint8Array): Promise<void> {
    let record: PresenceRecord
    try {
      record = await verifyPresence(data)
    } catch (err: unknown) {
      this.stats.rejected++
      this.warnings.warn('dropped presence record', { reason: messageOf(err) })
      return
    }
    if (record.peerId === this.o.peerId) return
    const nowMs = Date.now()
    const issuedAtMs = record.issuedAt != null ? timestampMs(record.issuedAt) : 0
    if (nowMs - issuedAtMs > this.o.ttlMs) {
      this.stats.ignoredStale++
      this.warnings.warn('ignored stale presence record', {
        peerId: record.peerId,
        issuedAt: new Date(issuedAtMs).toISOString(),
        ttlMs: this.o.ttlMs,
      })
      return
    }
    const newest = this.o.peers.get(record.peerId)?.presenceSequence
    if (newest != null && record.sequence <= newest) {
      // Records arrive twice in normal operation (an announcement and an answer to a query): not worth a warning.
      this.stats.ignoredOlder++
      if (record.sequence < newest) {
        this.warnings.warn('ignored presence record older than the newest one seen', {
          peerId: record.peerId,
          sequence: record.sequence,
          newest,
        })
      }
      return
    }
    this.stats.received++
    this.o.peers.upsert(record.peerId, {
      presenceSequence: record.sequence,
      source: PeerSource.PRESENCE,
      directAddrs: record.directAddrs,
      circuitAddrs: record.circuitAddrs,
      capabilities: record.capabilities,
      natType: record.natType,
      lastSeenAtMs: Math.min(nowMs, issuedAtMs),
    })
  }
}
