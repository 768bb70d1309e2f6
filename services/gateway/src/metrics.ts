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

/** Per-peer call metrics: last tier used, EWMA latency, success rate, counts. */
export class PeerMetricsTable {
  private readonly peers = new Map<string, PeerMetricsRecord>()
  private readonly alpha: number

  constructor(ewmaAlpha: number) {
    this.alpha = ewmaAlpha
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
    this.peers.set(peerId, m)
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
