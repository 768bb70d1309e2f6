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
    assert.equal(resolveRelayOptions({ privateKey, log, maxConnections: 5000 }).maxReservations, 5000)
  })

  it('relay options - rejects nonsense limits', async () => {
    const privateKey = await generateKeyPair('Ed25519')
    assert.throws(() => resolveRelayOptions({ privateKey, log, maxReservationsPerPeer: 0 }), RangeError)
    assert.throws(() => resolveRelayOptions({ privateKey, log, maxCircuitBytes: -1 }), RangeError)
    assert.throws(() => resolveRelayOptions({ privateKey, log, reservationTtlMs: 10 }), RangeError)
    assert.throws(() => resolveRelayOptions({ privateKey, log, announce: ['not a multiaddr'] }))
  })
})
