import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLogger } from '@stargate/shared/log'
import { createLibp2p } from 'libp2p'
import { RELAY_DEFAULTS } from './defaults.ts'
import { Relay, resolveRelayOptions } from './relay.ts'

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

describe('relay node', () => {
  it("relay - answers a gateway's connection monitor and relay health pings at once, with one more ping stream closing", async () => {
    const relay = new Relay({ privateKey: await generateKeyPair('Ed25519'), log, host: '127.0.0.1', port: 0 })
    await relay.start()
    const client = await createLibp2p({
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionMonitor: { enabled: false },
      services: { ping: ping({ maxOutboundStreams: 8 }) },
    })
    try {
      const conn = await client.dial(multiaddr(relay.multiaddrs[0]!))
      const echo = async (stream: Stream): Promise<void> => {
        const answered = new Promise<void>((resolve, reject) => {
          stream.addEventListener('message', () => resolve())
          stream.addEventListener('close', (e) => reject(e.error ?? new Error('closed unanswered')))
        })
        stream.send(new Uint8Array(32))
        await answered
      }
      // Three ping streams open at once: the monitor's, relay health's, and one whose close is still on the way.
      const streams = await Promise.all([1, 2, 3].map(() => conn.newStream('/ipfs/ping/1.0.0')))
      await Promise.all(streams.map(echo))
      for (const s of streams) s.abort(new Error('done'))
    } finally {
      await client.stop()
      await relay.stop(0)
    }
  })
})
