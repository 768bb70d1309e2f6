import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createLogger } from '@stargate/shared/log'
import { parseFlags, UsageError } from '@stargate/shared/options'
import { GATEWAY_FLAGS, gatewayConfigFromFlags } from '../cli.ts'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import { resolveGatewayOptions } from '../options.ts'

const config = (argv: string[], env: NodeJS.ProcessEnv = {}) => gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, argv, env)).init

describe('nat options', () => {
  it('nat options - --stun is repeatable and also read from STARGATE_STUN', () => {
    assert.deepEqual(config(['--stun', '198.18.0.10:3478', '--stun', '[2001:db8::1]:19302']).stunServers, [
      '198.18.0.10:3478',
      '[2001:db8::1]:19302',
    ])
    assert.deepEqual(config([], { STARGATE_STUN: '198.18.0.10:3478, 198.18.0.11:3479' }).stunServers, [
      '198.18.0.10:3478',
      '198.18.0.11:3479',
    ])
    assert.equal(config(['--nat-detect-interval-ms', '1000']).natDetectIntervalMs, 1000)
  })

  it('nat options - a malformed --stun stops start-up naming the flag', () => {
    assert.throws(
      () => config(['--stun', 'nohost']),
      (e: unknown) => e instanceof UsageError && /--stun/.test(e.message),
    )
    assert.throws(
      () => config(['--stun', '198.18.0.10:0']),
      (e: unknown) => e instanceof UsageError && /--stun/.test(e.message),
    )
    assert.throws(() => config(['--nat-detect-interval-ms', '0']), UsageError)
  })

  it('nat options - defaults come from GATEWAY_DEFAULTS', async () => {
    const { generateKeyPair } = await import('@libp2p/crypto/keys')
    const o = resolveGatewayOptions({ privateKey: await generateKeyPair('Ed25519'), log: createLogger('t', { level: 'silent' }) })
    assert.deepEqual(o.stunServers, [])
    assert.equal(o.stunPort, GATEWAY_DEFAULTS.stunPort)
    assert.equal(o.natDetectIntervalMs, GATEWAY_DEFAULTS.natDetectIntervalMs)
    assert.equal(o.stunTimeoutMs, GATEWAY_DEFAULTS.stunTimeoutMs)
    assert.throws(
      () => resolveGatewayOptions({ privateKey: o.privateKey, log: o.log, stunServers: ['x'] }),
      (e: unknown) => e instanceof RangeError && /STUN/.test(e.message),
    )
  })
})
