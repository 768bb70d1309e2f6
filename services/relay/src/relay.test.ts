import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createLogger } from '@stargate/shared/log'
import { RELAY_DEFAULTS } from './defaults.ts'
import { resolveRelayOptions } from './relay.ts'

const log = createLogger('test', { level: 'silent' })

describe('relay options', () => {
  it('relay options - default to RELAY_DEFAULTS: no circuit data or duration limit, reservations = connections', async () => {
    const privateKey = await generateKeyPair('Ed25519')
    const o = resolveRelayOptions({ privateKey, log })
    assert.equal(o.maxCircuitBytes, 0)
    assert.equal(o.maxCircuitDurationMs, 0)
    assert.equal(o.maxConnections, RELAY_DEFAULTS.maxConnections)
    assert.equal(o.maxReservations, RELAY_DEFAULTS.maxReservations)
    assert.equal(o.maxConnectionsPerIpPerSecond, RELAY_DEFAULTS.maxConnectionsPerIpPerSecond)
    assert.equal(o.shutdownGraceMs, RELAY_DEFAULTS.shutdownGraceMs)
    assert.equal(o.stopTimeoutMs, RELAY_DEFAULTS.stopTimeoutMs)
    assert.equal(o.maxStopFailures, RELAY_DEFAULTS.maxStopFailures)
    assert.equal(o.maxCircuitsPerIpPerSecond, RELAY_DEFAULTS.maxCircuitsPerIpPerSecond)
    assert.equal(o.maxCircuitsToPeer, RELAY_DEFAULTS.maxCircuitsToPeer)
    assert.equal(resolveRelayOptions({ privateKey, log, maxConnections: 5000 }).maxReservations, 5000)
  })

  it('relay options - one IP gets a small share of the reservations, and STOP is bounded by at most 2 s (issues 13, 18)', () => {
    assert.ok(RELAY_DEFAULTS.maxReservationsPerIp * 10 <= RELAY_DEFAULTS.maxReservations)
    assert.ok(RELAY_DEFAULTS.maxCircuitsPerPeer <= RELAY_DEFAULTS.maxCircuitsPerIp)
    assert.ok(RELAY_DEFAULTS.stopTimeoutMs <= 2_000)
    assert.ok(RELAY_DEFAULTS.maxStopFailures > 1, 'one slow answer does not cost a reservation')
  })

  it('relay options - rejects nonsense limits', async () => {
    const privateKey = await generateKeyPair('Ed25519')
    assert.throws(() => resolveRelayOptions({ privateKey, log, maxReservationsPerPeer: 0 }), RangeError)
    assert.throws(() => resolveRelayOptions({ privateKey, log, maxCircuitBytes: -1 }), RangeError)
    assert.throws(() => resolveRelayOptions({ privateKey, log, reservationTtlMs: 10 }), RangeError)
    assert.throws(() => resolveRelayOptions({ privateKey, log, stopTimeoutMs: 0 }), /stopTimeoutMs/)
    assert.throws(() => resolveRelayOptions({ privateKey, log, maxCircuitsToPeer: 0.5 }), /maxCircuitsToPeer/)
    assert.throws(() => resolveRelayOptions({ privateKey, log, announce: ['not a multiaddr'] }))
  })
})
