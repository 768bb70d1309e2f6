import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { GATEWAY_FLAGS } from '@stargate/gateway/cli'
import { GATEWAY_DEFAULTS } from '@stargate/gateway/defaults'
import { RELAY_FLAGS } from '@stargate/relay/cli'
import { RELAY_DEFAULTS } from '@stargate/relay/defaults'
import { README, renderReadme } from '../../scripts/flags-table.ts'

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
    assert.equal(GATEWAY_DEFAULTS.poolMaxPeers, 50)
    assert.equal(GATEWAY_DEFAULTS.poolTtlMs, 300_000)
    assert.equal(GATEWAY_DEFAULTS.maxRetries, 3)
    assert.equal(GATEWAY_DEFAULTS.backoffFactor, 2.0)
    assert.equal(GATEWAY_DEFAULTS.relayHealthIntervalMs, 5_000)
    assert.equal(RELAY_DEFAULTS.port, 4001)
    assert.equal(RELAY_DEFAULTS.maxConnections, 1000)
    for (const v of ['pool 50', '300 s', '3 retries', 'factor 2.0', 'every 5 s']) assert.ok(text.includes(v), v)
  })
})
