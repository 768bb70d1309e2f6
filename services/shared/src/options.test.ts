import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { envName, hostPort, int, list, num, parseFlags, UsageError } from './options.ts'

const SPECS = [
  { name: 'port', type: 'string' as const, description: 'port' },
  { name: 'relay', type: 'string' as const, multiple: true, description: 'relays' },
  { name: 'verbose', type: 'boolean' as const, description: 'verbose' },
]

describe('options', () => {
  it('options - flag beats environment beats default', () => {
    assert.equal(envName('max-connections'), 'STARGATE_MAX_CONNECTIONS')
    const both = parseFlags(SPECS, ['--port', '1'], { STARGATE_PORT: '2' })
    assert.equal(int(both, 'port', 0), 1)
    const env = parseFlags(SPECS, [], { STARGATE_PORT: '2', STARGATE_RELAY: 'a, b', STARGATE_VERBOSE: 'true' })
    assert.equal(int(env, 'port', 0), 2)
    assert.deepEqual(list(env, 'relay'), ['a', 'b'])
    assert.equal(env.verbose, true)
    assert.equal(int(parseFlags(SPECS, [], {}), 'port', 0), undefined)
  })

  it('options - repeatable flags collect every value', () => {
    assert.deepEqual(list(parseFlags(SPECS, ['--relay', 'x', '--relay', 'y'], {}), 'relay'), ['x', 'y'])
  })

  it('options - unknown flags and bad values are usage errors naming the flag', () => {
    assert.throws(
      () => parseFlags(SPECS, ['--nope'], {}),
      (e: unknown) => e instanceof UsageError && /nope/.test(e.message),
    )
    assert.throws(() => int(parseFlags(SPECS, ['--port', 'x'], {}), 'port', 0), /--port must be an integer/)
    assert.throws(() => int(parseFlags(SPECS, ['--port', '70000'], {}), 'port', 0, 65535), /between 0 and 65535/)
    assert.throws(() => num(parseFlags(SPECS, ['--port', 'NaN'], {}), 'port', 0), /must be a number/)
    assert.throws(() => parseFlags(SPECS, [], { STARGATE_VERBOSE: 'maybe' }), /not a boolean/)
  })

  it('options - HOST:PORT parsing, IPv6 in brackets', () => {
    assert.deepEqual(hostPort('127.0.0.1:50051', 'listen'), { host: '127.0.0.1', port: 50051 })
    assert.deepEqual(hostPort('[::1]:80', 'listen'), { host: '::1', port: 80 })
    assert.throws(() => hostPort('localhost', 'listen'), /--listen must be HOST:PORT/)
    assert.throws(() => hostPort('a:99999', 'listen'), /at most 65535/)
  })
})
