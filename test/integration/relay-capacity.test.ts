import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { RefusalReason } from '@stargate/shared/gen/relay'
import { Harness } from '../lib/harness.ts'
import { RelayClient } from '../lib/relay-client-driver.ts'

/**
 * `stargate relay --max-connections 1000` holds 1000 reservations (one per connection, the default
 * --max-reservations) from 1000 real js-libp2p clients, run in one child process. All clients share 127.0.0.1,
 * so the per-IP rate limits (meant for many IPs) are raised for this test. Slow (about a minute on 2 cores).
 */
const N = 1000

describe('relay capacity', { timeout: 400_000 }, () => {
  const h = new Harness()
  after(async () => {
    await h.close()
  })

  it('relay - --max-connections 1000 holds 1000 reservations at once, then refuses the next connection', async () => {
    const relay = await h.relay(
      [
        '--max-connections',
        String(N),
        '--max-connections-per-ip-per-second',
        '100000',
        '--max-reservations-per-ip-per-second',
        '100000',
        '--max-reservations-per-ip',
        String(N),
      ],
      { env: { STARGATE_LOG_LEVEL: 'debug' } },
    )
    const c = await RelayClient.start(h)
    await c.ok('nodes', { count: N + 1 }, 180_000)
    const r = await c.ok('reserveMany', { from: 0, to: N, relay: relay.multiaddr, concurrency: 10, retries: 3 }, 300_000)
    assert.deepEqual(r.errors, [])
    assert.equal(r.reserved, N)
    let stats = await relay.client.getRelayStats({})
    const ended = relay.proc.stderr.filter((l) => l.includes('reservation ended')).slice(0, 5)
    assert.equal(stats.reservations, N, `reservations ended early:\n${ended.join('\n')}`)
    assert.ok(stats.totalReservations >= BigInt(N), 'renewals after client-side timeouts count too')
    assert.equal(stats.connections, N)
    const extra = await c.call('reserve', { node: N, relay: relay.multiaddr })
    assert.ok(extra.error != null, 'connection 1001 is refused')
    stats = await relay.client.getRelayStats({})
    assert.ok(Number(stats.refusals.find((x) => x.reason === RefusalReason.CONNECTION_LIMIT)?.count) >= 1)
    assert.equal(stats.reservations, N)
  })
})
