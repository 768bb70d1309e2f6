// The `stargate` launcher (services/cli/bin/stargate.js): V8 settings of the long-running commands, applied by
// replacing the process with itself plus the flags (same pid), an operator's own flag winning, the other commands
// untouched, and the compile cache on where it can be and off (not failing) where it cannot.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { STARGATE_VERSION } from '@stargate/shared/version'
import { Harness, Proc, STARGATE_BIN } from '../lib/harness.ts'

/** The command line of a running process, as the kernel holds it (after any exec). */
async function cmdline(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((a) => a !== '')
}

const semiSpaceFlags = (argv: string[]): string[] => argv.filter((a) => a.replaceAll('_', '-').startsWith('--max-semi-space-size'))

/** Node's own arguments: everything before the script. */
const nodeArgs = (argv: string[]): string[] => argv.slice(1, argv.indexOf(STARGATE_BIN))

/**
 * `node [nodeFlags] stargate.js gateway` with this environment minus `unset` (Node reads some variables as set
 * even when empty); resolves once it serves.
 */
async function gatewayWith(h: Harness, name: string, nodeFlags: string[], env: NodeJS.ProcessEnv, unset: string[] = []): Promise<Proc> {
  const dir = await h.tmp()
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env }
  for (const k of unset) delete childEnv[k]
  const args = [...nodeFlags, STARGATE_BIN, 'gateway', '--listen', '127.0.0.1:0', '--identity', join(dir, `${name}.key`)]
  const proc = new Proc(name, spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv, cwd: dir }))
  h.procs.push(proc)
  await proc.waitFor(/^API: /)
  return proc
}

const NO_CACHE_ENV = ['NODE_COMPILE_CACHE', 'NODE_DISABLE_COMPILE_CACHE']

describe('launcher', () => {
  it('launcher - gateway and relay run with --max-semi-space-size=8 in the same process the harness started', async () => {
    const h = new Harness()
    try {
      const env = { NODE_OPTIONS: '' }
      const g = await h.gateway([], { env })
      const r = await h.relay([], { env })
      for (const [what, pid] of [
        ['gateway', g.proc.child.pid!],
        ['relay', r.proc.child.pid!],
      ] as const) {
        const argv = await cmdline(pid)
        const flags = semiSpaceFlags(nodeArgs(argv))
        console.log(`${what} pid ${pid}: ${argv.join(' ')}`)
        assert.deepEqual(flags, ['--max-semi-space-size=8'], `${what}: ${argv.join(' ')}`)
        assert.equal(argv[0], process.execPath)
        assert.equal(argv[argv.indexOf(STARGATE_BIN) + 1], what)
      }
      // and it still serves (the process that answers is the re-executed one)
      assert.equal((await g.client.getStatus({})).peerId, g.peerId)
      assert.equal((await r.client.getRelayInfo({})).peerId, r.peerId)
    } finally {
      await h.close()
    }
  })

  it('launcher - a semi-space size the operator gives (NODE_OPTIONS or node flag) wins and is not doubled', async () => {
    const h = new Harness()
    try {
      const viaEnv = await h.gateway([], { env: { NODE_OPTIONS: '--max-semi-space-size=16' } })
      assert.deepEqual(semiSpaceFlags(await cmdline(viaEnv.proc.child.pid!)), [], 'not re-executed: V8 reads NODE_OPTIONS itself')
      assert.equal((await viaEnv.client.getStatus({})).peerId, viaEnv.peerId)

      const viaFlag = await gatewayWith(h, 'gateway-flag', ['--max_semi_space_size=4'], { NODE_OPTIONS: '' })
      assert.deepEqual(semiSpaceFlags(await cmdline(viaFlag.child.pid!)), ['--max_semi_space_size=4'])
    } finally {
      await h.close()
    }
  })

  it('launcher - the other commands run as before: --version, --help, keygen, a bad command', async () => {
    const h = new Harness()
    try {
      const version = await h.spawnCli('version', ['--version'])
      assert.equal(await version.exited, 0)
      assert.deepEqual(version.stdout, [`stargate ${STARGATE_VERSION}`])
      assert.deepEqual(version.stderr, [])
      const help = await h.spawnCli('help', ['--help'])
      assert.equal(await help.exited, 0)
      assert.match(help.stdout.join('\n'), /^Usage: stargate <command>/)
      const file = join(await h.tmp(), 'launcher.key')
      const keygen = await h.spawnCli('keygen', ['keygen', '--out', file])
      assert.equal(await keygen.exited, 0)
      assert.match(keygen.stdout[0] ?? '', /^12D3KooW/)
      const bad = await h.spawnCli('bad', ['gatewayx'])
      assert.equal(await bad.exited, 2)
      assert.match(bad.stderr.join('\n'), /unknown command "gatewayx"/)
    } finally {
      await h.close()
    }
  })

  it('launcher - the compile cache is written to the temp directory, and an unusable one leaves it off without failing', async () => {
    const h = new Harness()
    try {
      const tmp = join(await h.tmp(), 'tmp')
      mkdirSync(tmp)
      await gatewayWith(h, 'gateway-cache', [], { TMPDIR: tmp }, NO_CACHE_ENV)
      const cache = join(tmp, 'node-compile-cache')
      assert.ok(existsSync(cache) && readdirSync(cache, { recursive: true }).length > 0, `a compile cache in ${cache}`)

      // TMPDIR is a file: no cache directory can be made there; the gateway starts all the same, and says nothing
      const file = join(await h.tmp(), 'not-a-dir')
      writeFileSync(file, '')
      const off = await gatewayWith(h, 'gateway-no-cache', [], { TMPDIR: file }, NO_CACHE_ENV)
      assert.deepEqual(
        off.stderr.filter((l) => !l.startsWith('{')),
        [],
      )
    } finally {
      await h.close()
    }
  })
})
