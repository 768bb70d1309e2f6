import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Stream } from '@libp2p/interface'
import { GATEWAY_DEFAULTS as D } from './defaults.ts'
import { createGatewayNode, type GatewayNode } from './node.ts'

const PING = '/ipfs/ping/1.0.0'

async function gatewayNode(): Promise<GatewayNode> {
  const node = await createGatewayNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    announce: [],
    maxConnections: 10,
    reservationTimeoutMs: D.relayReservationTimeoutMs,
    inboundConnectionsPerSecond: D.inboundConnectionsPerSecond,
    dialTimeoutMs: D.dialTimeoutMs,
    yamuxMaxMessageBytes: D.yamuxMaxMessageBytes,
  })
  await node.start()
  return node
}

/** One ping round trip on a new stream of the connection, the way libp2p's connection monitor pings. */
async function monitorPing(conn: Connection): Promise<void> {
  const stream = await conn.newStream(PING, { signal: AbortSignal.timeout(10_000), runOnLimitedConnection: true })
  await roundTrip(stream)
  await stream.close()
}

async function roundTrip(stream: Stream): Promise<void> {
  const payload = crypto.getRandomValues(new Uint8Array(32))
  const echoed = new Promise<void>((resolve) => {
    let got = 0
    stream.addEventListener('message', (evt) => {
      got += evt.data.byteLength
      if (got >= 32) resolve()
    })
  })
  stream.send(payload)
  await echoed
}

describe('gateway libp2p node', () => {
  const nodes: GatewayNode[] = []
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()))
  })

  it('node - the channel liveness probe, the relay health check and libp2p connection monitor may ping one connection at once', async () => {
    const [a, b] = [await gatewayNode(), await gatewayNode()]
    nodes.push(a, b)
    const conn = await a.dial(b.getMultiaddrs()[0]!)
    // A liveness probe of a peer channel in flight (channel.ts probeConnection: a ping on its own stream)...
    const probe = await conn.newStream(PING, { runOnLimitedConnection: true })
    await roundTrip(probe)
    // ...while relay health pings the peer (relays.ts) and libp2p's connection monitor runs its heartbeat,
    // which aborts the whole connection when its ping stream cannot be opened.
    const [rtt] = await Promise.all([a.services.ping.ping(b.peerId, { signal: AbortSignal.timeout(10_000) }), monitorPing(conn)])
    assert.equal(typeof rtt, 'number')
    await roundTrip(probe)
    assert.equal(conn.status, 'open')
    probe.abort(new Error('probe done'))
  })
})
