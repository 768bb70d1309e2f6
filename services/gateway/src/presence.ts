import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt'
import type { PrivateKey } from '@libp2p/interface'
import { messageOf } from '@stargate/shared/errors'
import type { PresenceRecord } from '@stargate/shared/gen/envelope'
import { type NatType, PeerSource } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
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
 * presence queries, and learns other gateways from theirs. Unsigned or forged records are dropped.
 */
export class Presence {
  readonly stats = { received: 0, rejected: 0, announced: 0 }
  private readonly o: PresenceOptions
  private timer?: NodeJS.Timeout
  private sequence = BigInt(Date.now())
  private lastContent = ''
  private queryDebounce?: NodeJS.Timeout

  constructor(options: PresenceOptions) {
    this.o = options
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
      this.o.peers.expire(this.o.ttlMs)
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
      const bytes = await signPresence(
        { ...content, peerId: this.o.peerId, issuedAt: timestampFromMs(Date.now()), sequence: ++this.sequence },
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
      this.o.log.warn('dropped presence record', { reason: messageOf(err) })
      return
    }
    if (record.peerId === this.o.peerId) return
    this.stats.received++
    this.o.peers.upsert(record.peerId, {
      source: PeerSource.PRESENCE,
      directAddrs: record.directAddrs,
      circuitAddrs: record.circuitAddrs,
      capabilities: record.capabilities,
      natType: record.natType,
      lastSeenMs: record.issuedAt != null ? Math.min(Date.now(), timestampMs(record.issuedAt)) : Date.now(),
    })
  }
}
