import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { StargateError } from '@stargate/shared/errors'
import { createLogger } from '@stargate/shared/log'
import { parseFlags, UsageError } from '@stargate/shared/options'
import { GATEWAY_FLAGS, gatewayConfigFromFlags } from './cli.ts'
import { loadNatsSecurity, withoutCredentials } from './nats.ts'
import { type GatewayInit, resolveGatewayOptions } from './options.ts'

const config = (argv: string[], env: NodeJS.ProcessEnv = {}) => gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, argv, env)).init
const key = await generateKeyPair('Ed25519')
const resolve = (init: Partial<GatewayInit>) =>
  resolveGatewayOptions({ privateKey: key, log: createLogger('t', { level: 'silent' }), ...init })

describe('nats options', () => {
  it('nats options - --nats takes a comma-separated list, may be repeated, and is read from STARGATE_NATS', () => {
    assert.deepEqual(config(['--nats', 'nats://a:4222, nats://b:4222', '--nats', 'tls://c:4222']).natsServers, [
      'nats://a:4222',
      'nats://b:4222',
      'tls://c:4222',
    ])
    assert.deepEqual(config([], { STARGATE_NATS: 'nats://a:4222,nats://b:4222' }).natsServers, ['nats://a:4222', 'nats://b:4222'])
    assert.throws(
      () => config(['--nats', 'nats://a:4222,b:4222']),
      (e: unknown) => e instanceof UsageError && /--nats must be URLs/.test(e.message),
    )
  })

  it('nats options - credentials come from flags, files or the environment; one method at a time', () => {
    const c = config(['--nats', 'nats://a:4222', '--nats-user', 'gw'], { STARGATE_NATS_PASSWORD: 's3cret' })
    assert.equal(c.natsUser, 'gw')
    assert.equal(c.natsPassword, 's3cret')
    resolve(c)
    assert.throws(() => resolve({ natsServers: ['nats://a:4222'], natsUser: 'gw' }), /--nats-user needs --nats-password-file/)
    assert.throws(
      () => resolve({ natsServers: ['nats://a:4222'], natsToken: 't', natsCredsFile: '/x' }),
      /give one of --nats-creds, --nats-token, not several/,
    )
    assert.throws(() => resolve({ natsServers: ['nats://a:4222'], natsTlsCertFile: '/c' }), /--nats-tls-cert and --nats-tls-key/)
    assert.throws(() => resolve({ natsTokenFile: '/t' }), /without --nats/)
  })

  it('nats options - files are read at start; a missing or empty one names its flag', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nats-opts-'))
    try {
      await writeFile(join(dir, 'token'), 'tok\n')
      await writeFile(join(dir, 'pw'), ' pass word \n')
      await writeFile(join(dir, 'ca.pem'), 'CA PEM')
      await writeFile(join(dir, 'empty'), '\n')
      assert.deepEqual(await loadNatsSecurity({ natsTokenFile: join(dir, 'token'), natsTlsCaFile: join(dir, 'ca.pem') }), {
        auth: { kind: 'token', token: 'tok' },
        tls: { ca: 'CA PEM' },
      })
      assert.deepEqual(await loadNatsSecurity({ natsUser: 'u', natsPasswordFile: join(dir, 'pw') }), {
        auth: { kind: 'user', user: 'u', password: ' pass word ' },
      })
      await assert.rejects(
        loadNatsSecurity({ natsCredsFile: join(dir, 'missing.creds') }),
        (e: unknown) => e instanceof StargateError && /--nats-creds .*missing\.creds/.test(e.message),
      )
      await assert.rejects(loadNatsSecurity({ natsNkeyFile: join(dir, 'empty') }), /--nats-nkey .* is empty/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('nats options - URLs are shown without credentials', () => {
    assert.equal(withoutCredentials('nats://user:pw@host:4222'), 'nats://host:4222')
    assert.equal(withoutCredentials('tls://token@host:4222'), 'tls://host:4222')
  })
})
