import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createLogger } from '@stargate/shared/log'
import { parseFlags } from '@stargate/shared/options'
import { GATEWAY_FLAGS, gatewayConfigFromFlags } from './cli.ts'
import { GATEWAY_LIMITS } from './defaults.ts'
import { resolveGatewayOptions } from './options.ts'
import { resolveTunnelOptions } from './tunnel/endpoint.ts'

const log = createLogger('test:options', { level: 'silent' })

describe('gateway options', () => {
  it('options - the tunnel bounds of GATEWAY_LIMITS hold alike for the flags, GatewayOptions and a tunnel endpoint', async () => {
    const privateKey = await generateKeyPair('Ed25519')
    const fromFlags = (argv: string[]) => gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, argv, {})).init
    const cases = [
      ['tunnel-window-bytes', 'tunnelWindowBytes', 'windowBytes'],
      ['tunnel-max-message-bytes', 'tunnelMaxMessageBytes', 'maxMessageBytes'],
    ] as const
    for (const [flag, key, option] of cases) {
      const { min, max } = GATEWAY_LIMITS[key]
      for (const ok of [min, max]) {
        assert.equal(fromFlags([`--${flag}`, String(ok)])[key], ok)
        assert.equal(resolveGatewayOptions({ privateKey, log, [key]: ok })[key], ok)
        assert.equal(resolveTunnelOptions({ log, [option]: ok })[option], ok)
      }
      for (const bad of [min - 1, max + 1]) {
        assert.throws(() => fromFlags([`--${flag}`, String(bad)]), new RegExp(`--${flag}.*${min}.*${max}`), `--${flag} ${bad}`)
        assert.throws(
          () => resolveGatewayOptions({ privateKey, log, [key]: bad }),
          new RegExp(`${key} must be an integer from ${min} to ${max}`),
        )
        assert.throws(() => resolveTunnelOptions({ log, [option]: bad }), new RegExp(`${option} must be an integer from ${min} to ${max}`))
      }
    }
    const { min, max } = GATEWAY_LIMITS.tunnelMaxStreamsPerLink
    assert.equal(resolveTunnelOptions({ log, maxStreams: max }).maxStreams, max)
    assert.throws(
      () => resolveTunnelOptions({ log, maxStreams: min - 1 }),
      new RegExp(`maxStreams must be an integer from ${min} to ${max}`),
    )
  })
})
