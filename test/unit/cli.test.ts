import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
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
})
