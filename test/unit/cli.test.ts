import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { GATEWAY_FLAGS, gatewayConfigFromFlags } from '@stargate/gateway/cli'
import { parseFlags } from '@stargate/shared/options'
import { STARGATE_BIN } from '../lib/harness.ts'

const ROOT = join(import.meta.dirname, '../..')

describe('stargate CLI', () => {
  it('cli - stargate --version prints the version of package.json and exits 0', () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
    for (const flag of ['--version', '-v']) {
      const r = spawnSync(process.execPath, [STARGATE_BIN, flag], { encoding: 'utf8', timeout: 30_000 })
      assert.equal(r.status, 0, r.stderr)
      assert.equal(r.stdout, `stargate ${version}\n`)
    }
    const help = spawnSync(process.execPath, [STARGATE_BIN, '--help'], { encoding: 'utf8', timeout: 30_000 })
    assert.match(help.stdout, /stargate --version/)
  })

  it('cli - --cors-allow-origin is repeatable (STARGATE_CORS_ALLOW_ORIGIN comma-separated), off by default', () => {
    const origins = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
      gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, argv, env)).init.corsAllowOrigins
    assert.deepEqual(origins([]), [])
    assert.deepEqual(origins(['--cors-allow-origin', 'https://app.example.com', '--cors-allow-origin', 'http://localhost:8080']), [
      'https://app.example.com',
      'http://localhost:8080',
    ])
    assert.deepEqual(origins([], { STARGATE_CORS_ALLOW_ORIGIN: 'https://app.example.com,*' }), ['https://app.example.com', '*'])
    assert.deepEqual(origins(['--cors-allow-origin', '*'], { STARGATE_CORS_ALLOW_ORIGIN: 'https://app.example.com' }), ['*'])
  })

  it('cli - a --cors-allow-origin that is not an origin exits 2 saying which origin to write', () => {
    const r = spawnSync(process.execPath, [STARGATE_BIN, 'gateway', '--cors-allow-origin', 'https://app.example.com/'], {
      encoding: 'utf8',
      timeout: 30_000,
    })
    assert.equal(r.status, 2, r.stderr)
    assert.match(
      r.stderr,
      /--cors-allow-origin "https:\/\/app\.example\.com\/" is not an origin as a browser sends it: use "https:\/\/app\.example\.com"/,
    )
  })
})
