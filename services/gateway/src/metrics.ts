import { Tier } from '@stargate/shared/gen/gateway'

/** Call metrics toward one peer. */
export interface PeerMetricsRecord {
  peerId: string
  connectionType: Tier
  latencyMs: number
  totalRequests: number
  failedRequests: number
  lastCallAtMs: number
}

export interface PeerMetricsOptions {
  /** EWMA smoothing of per-peer latency. */
  ewmaAlpha: number
  /** Peers kept at most; the one called least recently is forgotten first (GATEWAY_DEFAULTS.peerMetricsMaxEntries). */
  maxPeers: number
}

/**
 * Per-peer call metrics: last tier used, EWMA latency, success rate, counts. Bounded whatever peer ids
 * clients call: at most maxPeers, the peer called least recently forgotten first.
 */
export class PeerMetricsTable {
  /** Least recently called first (a call moves its peer to the end). */
  private readonly peers = new Map<string, PeerMetricsRecord>()
  private readonly alpha: number
  private readonly maxPeers: number

  constructor(options: PeerMetricsOptions) {
    this.alpha = options.ewmaAlpha
    this.maxPeers = options.maxPeers
  }

  record(peerId: string, outcome: { ok: boolean; tier: Tier; latencyMs: number }, nowMs = Date.now()): void {
    const m = this.peers.get(peerId) ?? {
      peerId,
      connectionType: Tier.UNSPECIFIED,
      latencyMs: 0,
      totalRequests: 0,
      failedRequests: 0,
      lastCallAtMs: nowMs,
    }
    m.totalRequests++
    m.lastCallAtMs = nowMs
    if (!outcome.ok) {
      m.failedRequests++
    } else {
      m.connectionType = outcome.tier
      m.latencyMs =
        m.totalRequests - m.failedRequests === 1 ? outcome.latencyMs : m.latencyMs + this.alpha * (outcome.latencyMs - m.latencyMs)
    }
    this.peers.delete(peerId)
    this.peers.set(peerId, m)
    for (const [oldest] of this.peers) {
      if (this.peers.size <= this.maxPeers) break
      this.peers.delete(oldest)
    }
  }

  get(peerId: string): PeerMetricsRecord | undefined {
    return this.peers.get(peerId)
  }

  all(): PeerMetricsRecord[] {
    return [...this.peers.values()]
  }

  static successRate(m: PeerMetricsRecord): number {
    return m.totalRequests === 0 ? 0 : (m.totalRequests - m.failedRequests) / m.totalRequests
  }
}
