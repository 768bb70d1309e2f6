import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { GATEWAY_FLAGS } from '@stargate/gateway/cli'
import { GATEWAY_DEFAULTS } from '@stargate/gateway/defaults'
import { RELAY_FLAGS } from '@stargate/relay/cli'
import { RELAY_DEFAULTS } from '@stargate/relay/defaults'
import { SEAL_DEFAULTS, SEAL_OVERHEAD_BYTES } from '@stargate/shared/seal'
import { README, renderReadme } from '../../scripts/flags-table.ts'
import { NATS_STREAM_MIN_PAYLOAD_BYTES } from '../../services/gateway/src/tiers/nats-streams.ts'

describe('README', () => {
  it('readme - the flag tables are the ones the code defines (node scripts/flags-table.ts --write)', () => {
    const text = readFileSync(README, 'utf8')
    assert.ok(text.includes('<!-- FLAGS:gateway -->') && text.includes('<!-- FLAGS:relay -->'))
    assert.equal(renderReadme(text), text)
    for (const flag of [...RELAY_FLAGS, ...GATEWAY_FLAGS]) assert.ok(text.includes(`| \`--${flag.name}\``), `README lists --${flag.name}`)
  })

  it('readme - shows the two commands and the reference defaults', () => {
    const text = readFileSync(README, 'utf8')
    assert.match(text, /^npm start\b/m)
    assert.match(text, /^npm test\b/m)
    // The reference schedule (retries 3 × 2.0, pool 50 / 300 s, health every 5 s, relay port 4001).
    assert.equal(GATEWAY_DEFAULTS.poolMaxPeers, 50)
    assert.equal(GATEWAY_DEFAULTS.poolTtlMs, 300_000)
    assert.equal(GATEWAY_DEFAULTS.maxRetries, 3)
    assert.equal(GATEWAY_DEFAULTS.backoffFactor, 2.0)
    assert.equal(GATEWAY_DEFAULTS.relayHealthIntervalMs, 5_000)
    assert.equal(RELAY_DEFAULTS.port, 4001)
    assert.equal(RELAY_DEFAULTS.maxConnections, 1000)
  })

  it('readme - every default the prose quotes is the one in GATEWAY_DEFAULTS', () => {
    const text = readFileSync(README, 'utf8').replace(/\s+/g, ' ')
    const D = GATEWAY_DEFAULTS
    const backoff = [0, 1, 2].map((r) => `${(D.backoffBaseMs * D.backoffFactor ** r) / 1000} s`).join(', ')
    for (const phrase of [
      `\`--tier-stagger-ms\` (${D.tierStaggerMs} ms)`,
      `\`--tier-cooldown-ms\` (${D.tierCooldownMs / 1000} s)`,
      `${D.maxRetries} retries with factor ${D.backoffFactor.toFixed(1)} (${backoff} plus jitter)`,
      `(${D.callDeadlineMs / 1000} s when the client sets none)`,
      `pool ${D.poolMaxPeers} peers, idle TTL ${D.poolTtlMs / 1000} s`,
      `\`--max-payload-bytes\` (${D.maxPayloadBytes / 1024 / 1024} MiB)`,
      `\`--max-reserved-relays\` (${D.maxReservedRelays})`,
      `every ${D.relayHealthIntervalMs / 1000} s (\`--relay-health-interval-ms\`)`,
      `within ±${SEAL_DEFAULTS.replayWindowMs / 1000} s of the receiver's clock`,
      `counters up to ${SEAL_DEFAULTS.replayCounterWindow.toLocaleString('en-US').replace(',', ' ')} behind the newest`,
      `\`--nats-replay-max-sessions\` (${D.natsReplayMaxSessions})`,
      `or ${SEAL_DEFAULTS.replayMaxSessionsPerSender} of one sender`,
      `cached for ${SEAL_DEFAULTS.maxCachedPeers.toLocaleString('en-US').replace(',', ' ')} peers`,
      `the frame plus ${SEAL_OVERHEAD_BYTES} bytes`,
      `retried every ${D.natsRetryConnectMs / 1000} s`,
      `issued more than ${D.presenceTtlMs / 1000} s ago`,
      `from connections ${D.connectionPeerTtlMs / 60_000} min after`,
      `at most ${D.maxLearnedPeers.toLocaleString('en-US').replace(',', ' ')} are kept`,
      `counts (for the ${D.peerMetricsMaxEntries.toLocaleString('en-US').replace(',', ' ')} peers called most recently)`,
      `\`--relay-stagger-ms\` (${D.relayStaggerMs} ms)`,
      `\`--circuit-cooldown-ms\` (${D.circuitCooldownMs / 1000} s)`,
      `\`--liveness-probe-ms\` (${D.livenessProbeMs} ms)`,
      `\`--liveness-probe-timeout-ms\` (${D.livenessProbeTimeoutMs} ms)`,
      `\`--tunnel-window-bytes\` (${D.tunnelWindowBytes / 1024} KiB)`,
      `\`--tunnel-max-message-bytes\` (${D.tunnelMaxMessageBytes / 1024 / 1024} MiB)`,
      `at most ${D.tunnelReplayMaxBytesPerCall / 1024 / 1024} MiB of request per call (${D.tunnelReplayMaxBytes / 1024 / 1024} MiB for all)`,
      `(1 to ${D.maxRequestIdBytes} bytes, like a \`Call\` idempotency key)`,
      `\`--serve-queue-max-calls\` (${D.serveQueueMaxCalls})`,
      `\`--serve-queue-max-bytes\` (${D.serveQueueMaxBytes / 1024 / 1024} MiB)`,
      `\`--max-conn-streams\` (${D.maxInboundStreamsPerConnection})`,
      `\`--max-conn-buffered-bytes\` (${D.maxInboundBufferedBytesPerConnection / 1024 / 1024} MiB)`,
      `the tunnel window (${D.tunnelWindowBytes / 1024} KiB)`,
      `at most ${D.tunnelMaxStreamsPerLink} streams per caller and ${D.natsMaxInboundStreams.toLocaleString('en-US').replace(',', ' ')} in all over NATS`,
      `\`max_payload\` is at least ${NATS_STREAM_MIN_PAYLOAD_BYTES / 1024} KiB`,
      `heard nothing for ${D.natsStreamProbeMs / 1000} s asks its peer`,
      `does not answer within ${D.natsStreamProbeTimeoutMs / 1000} s`,
    ]) {
      assert.ok(text.includes(phrase), `README says: ${phrase}`)
    }
  })

  it('proto - CallOptions comments quote the defaults the router uses', () => {
    const proto = readFileSync(join(import.meta.dirname, '../../proto/stargate/v1/gateway.proto'), 'utf8')
    const D = GATEWAY_DEFAULTS
    for (const [field, value] of [
      ['max_retries', `${D.maxRetries}`],
      ['backoff_factor', D.backoffFactor.toFixed(1)],
      ['backoff_base', `${D.backoffBaseMs / 1000}s`],
      ['attempt_timeout', `${D.attemptTimeoutMs / 1000}s`],
    ] as const) {
      const comment = new RegExp(`// ${field} [^\\n]*\\(default ([^)]+)\\)`).exec(proto)
      assert.equal(comment?.[1], value, `the comment of CallOptions.${field} says (default ${value})`)
    }
  })
})
