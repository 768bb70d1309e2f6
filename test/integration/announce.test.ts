import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { eventually } from '../lib/eventually.ts'
import { Harness } from '../lib/harness.ts'

describe('announce', () => {
  it('announce - --p2p-announce adds an address; listen and relay circuit addresses are still announced and the reservation holds', async () => {
    const h = new Harness()
    try {
      const relay = await h.relay()
      const extra = '/ip4/198.18.5.5/tcp/4999'
      const gw = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--p2p-announce', extra, '--relay', relay.multiaddr])
      const status = await eventually('the gateway holds its reservation', async () => {
        const s = await gw.client.getStatus({})
        return s.relays.some((r) => r.reserved) && s
      })
      const announced = status.announcedAddrs
      assert.ok(
        announced.some((a) => a.startsWith(extra)),
        `the extra address is announced: ${announced.join(' ')}`,
      )
      assert.ok(
        announced.some((a) => a.startsWith('/ip4/127.0.0.1/tcp/')),
        'the listen address is still announced',
      )
      assert.ok(
        announced.some((a) => a.includes(`/p2p/${relay.peerId}/p2p-circuit`)),
        'the circuit address through the relay is announced',
      )
    } finally {
      await h.close()
    }
  })
})
