import { networkInterfaces } from 'node:os'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import { multiaddr } from '@multiformats/multiaddr'
import { type NatStatusSchema, NatType } from '@stargate/shared/gen/gateway'
import type { Logger } from '@stargate/shared/log'
import { classifyNat, type NatClassification } from './classify.ts'
import { observerName, type ProbeOptions, type ProbeResult, probeObservers, type StunObserver } from './stun-client.ts'

/** The NatStatus message as GetStatus reports it. */
export type NatStatusInit = MessageInitShape<typeof NatStatusSchema>

export interface NatDetectorOptions extends ProbeOptions {
  /** STUN servers to probe; none = detection off (status stays NAT_TYPE_UNSPECIFIED). */
  observers: StunObserver[]
  /** Re-detect this often. */
  intervalMs: number
  /** Poll the local interface addresses this often; a change triggers detection at once. */
  addrPollMs: number
  log: Logger
  /** Local interface addresses; os.networkInterfaces() by default (tests inject their own). */
  localAddresses?: () => string[]
  /** The probe; probeObservers by default (tests inject their own). */
  probe?: (observers: StunObserver[], o: ProbeOptions) => Promise<ProbeResult>
}

/** Every address of every local interface. */
export function localInterfaceAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address))
}

/** The STUN observers implied by relay multiaddrs: each relay's host at the STUN port (ip4/ip6/dns*). */
export function observersFromRelays(relays: string[], stunPort: number): StunObserver[] {
  const out: StunObserver[] = []
  for (const r of relays) {
    const host = multiaddr(r)
      .getComponents()
      .find((c) => ['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(c.name))?.value
    if (host != null && !out.some((o) => o.host === host)) out.push({ host, port: stunPort })
  }
  return out
}

/**
 * Detects the NAT in front of this gateway from the mappings STUN observers see (see classifyNat),
 * once at start, then every intervalMs and whenever the local addresses change. status() is what
 * GetStatus reports; onChange listeners hear every change of type, addresses or requiresRelay.
 */
export class NatDetector {
  private readonly o: NatDetectorOptions
  private current?: NatClassification
  private detectedAt?: Date
  private readonly listeners = new Set<(s: NatStatusInit) => void>()
  private timers: NodeJS.Timeout[] = []
  private running?: Promise<NatClassification | undefined>
  private again = false
  private addrKey = ''
  private stopped = true
  private abort = new AbortController()

  constructor(o: NatDetectorOptions) {
    this.o = o
  }

  /** Starts detection in the background; returns at once. */
  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.abort = new AbortController()
    if (this.o.observers.length === 0) {
      this.o.log.info('nat detection off: no STUN observers (configure relays or --stun)')
      return
    }
    this.o.log.info('nat detection started', { observers: this.o.observers.map(observerName) })
    this.addrKey = this.addressKey()
    this.trigger('start')
    const every = setInterval(() => this.trigger('interval'), this.o.intervalMs)
    const poll = setInterval(() => {
      const key = this.addressKey()
      if (key === this.addrKey) return
      this.addrKey = key
      this.trigger('local addresses changed')
    }, this.o.addrPollMs)
    every.unref()
    poll.unref()
    this.timers = [every, poll]
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.abort.abort()
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    await this.running
  }

  /** The current status; NAT_TYPE_UNSPECIFIED until the first detection finished. */
  status(): NatStatusInit {
    if (this.current == null || this.detectedAt == null) return { natType: NatType.UNSPECIFIED, publicAddrs: [], requiresRelay: false }
    return { ...this.current, publicAddrs: [...this.current.publicAddrs], detectedAt: timestampFromDate(this.detectedAt) }
  }

  /** Calls `listener` after each detection that changed the status; returns an unsubscribe function. */
  onChange(listener: (s: NatStatusInit) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /**
   * Runs one detection now (joining a running one, then running again so the result is fresh).
   * Without observers nothing runs and the status stays NAT_TYPE_UNSPECIFIED.
   */
  async detect(): Promise<NatClassification | undefined> {
    if (this.o.observers.length === 0) return undefined
    if (this.running != null) {
      this.again = true
      await this.running
      return this.current
    }
    this.running = this.run()
    try {
      return await this.running
    } finally {
      this.running = undefined
    }
  }

  private trigger(reason: string): void {
    this.o.log.debug('nat detection', { reason })
    this.detect().catch((err: unknown) => this.o.log.warn('nat detection failed', { err }))
  }

  private async run(): Promise<NatClassification | undefined> {
    let result: NatClassification | undefined
    do {
      this.again = false
      if (this.stopped) return this.current
      const probe = this.o.probe ?? probeObservers
      const { observations, localPort } = await probe(this.o.observers, {
        timeoutMs: this.o.timeoutMs,
        retransmitMs: this.o.retransmitMs,
        signal: this.abort.signal,
      })
      // A probe cut short by stop() says nothing about the NAT.
      if (this.stopped) return this.current
      result = classifyNat(observations, this.localAddresses())
      const changed =
        this.current == null ||
        this.current.natType !== result.natType ||
        this.current.requiresRelay !== result.requiresRelay ||
        this.current.publicAddrs.join(',') !== result.publicAddrs.join(',')
      this.current = result
      this.detectedAt = new Date()
      if (changed) {
        this.o.log.info('nat status', {
          natType: NatType[result.natType],
          publicAddrs: result.publicAddrs,
          requiresRelay: result.requiresRelay,
          localPort,
          observations,
        })
        const s = this.status()
        for (const l of this.listeners) {
          try {
            l(s)
          } catch (err: unknown) {
            this.o.log.warn('nat change listener failed', { err })
          }
        }
      }
    } while (this.again && !this.stopped)
    return result
  }

  private localAddresses(): string[] {
    return (this.o.localAddresses ?? localInterfaceAddresses)()
  }

  private addressKey(): string {
    return [...this.localAddresses()].sort().join(',')
  }
}

/** The gateway options NAT detection reads (all in GATEWAY_DEFAULTS except stunServers). */
export interface NatGatewayOptions {
  relays: string[]
  /** Explicit observers as HOST:PORT (--stun); when set, relays are not used as observers. */
  stunServers: string[]
  stunPort: number
  stunTimeoutMs: number
  stunRetransmitMs: number
  natDetectIntervalMs: number
  natAddrPollMs: number
}

/** Parses HOST:PORT (IPv6 in brackets). */
export function parseObserver(value: string): StunObserver {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value)
  const port = Number(m?.[3])
  if (m == null || port < 1 || port > 65535) throw new RangeError(`STUN server must be HOST:PORT, got "${value}"`)
  return { host: m[1] ?? m[2] ?? '', port }
}

/** A detector for a gateway: explicit --stun observers, else the relays' hosts at stunPort. */
export function createNatDetector(o: NatGatewayOptions, log: Logger): NatDetector {
  return new NatDetector({
    observers: o.stunServers.length > 0 ? o.stunServers.map(parseObserver) : observersFromRelays(o.relays, o.stunPort),
    intervalMs: o.natDetectIntervalMs,
    addrPollMs: o.natAddrPollMs,
    timeoutMs: o.stunTimeoutMs,
    retransmitMs: o.stunRetransmitMs,
    log,
  })
}
