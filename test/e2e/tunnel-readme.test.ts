/**
 * Runs every command of the README section "Use your existing gRPC services", as written, against the
 * `npm start` topology on free ports: relay, gateway B exposing the Node EchoService server
 * (examples/node/echo-server.ts), gateway A with --route to B. Only the addresses are rewritten (the README's
 * fixed ports → this stack's), so a command that stops working as written fails here.
 */
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { DEV_ECHO_SERVICE, DEV_PORTS } from '../../services/cli/src/dev-stack.ts'
import { type EchoResult, parseRun, prepareEchoPrograms, startEchoServer } from '../interop/echo-programs.ts'
import { freePort, type GatewayHandle, Harness, Proc, type RelayHandle } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)
const REPO = join(import.meta.dirname, '../..')

/** The sh blocks of a README section, as commands (continuation lines joined). */
function sectionCommands(heading: string): string[][] {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8')
  const start = readme.indexOf(`\n## ${heading}\n`)
  assert.ok(start >= 0, `README has a section "${heading}"`)
  const end = readme.indexOf('\n## ', start + 1)
  const section = readme.slice(start, end)
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) =>
    m[1]!
      .replace(/\\\n\s*/g, '')
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#')),
  )
}

describe('README "Use your existing gRPC services"', { timeout: 600_000 }, () => {
  const h = new Harness()
  let relay: RelayHandle
  let a: GatewayHandle
  let b: GatewayHandle
  const ports = { terminalServer: 0, terminalGateway: 0 }
  let env: NodeJS.ProcessEnv
  /** README address → this stack's. */
  let rewrite: (cmd: string) => string

  before(async () => {
    tool('grpcurl')
    const [r] = await Promise.all([h.relay(), prepareEchoPrograms()])
    relay = r
    const echo = await startEchoServer(h, 'node')
    const viaRelay = ['--relay', relay.multiaddr, '--relay-health-interval-ms', '500']
    b = await h.gateway([...viaRelay, '--expose', `${DEV_ECHO_SERVICE}=${echo.addr}`], { name: 'gateway-b' })
    a = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...viaRelay, '--route', `${DEV_ECHO_SERVICE}=${b.peerId}`], {
      name: 'gateway-a',
    })
    await b.proc.waitFor(/"msg":"reserved on relay"/)
    ports.terminalServer = await freePort()
    ports.terminalGateway = await freePort()
    const relayTcp = relay.multiaddr.replace(/\/p2p\/.*$/, '')
    const keyDir = await h.tmp()
    rewrite = (cmd) =>
      cmd
        .replaceAll(`127.0.0.1:${DEV_PORTS.gatewayA}`, a.api)
        .replaceAll(`127.0.0.1:${DEV_PORTS.gatewayB}`, b.api)
        .replaceAll(`/ip4/127.0.0.1/tcp/${DEV_PORTS.relay}`, relayTcp)
        .replaceAll('127.0.0.1:9090', `127.0.0.1:${ports.terminalServer}`)
        .replaceAll('127.0.0.1:50062', `127.0.0.1:${ports.terminalGateway}`)
        .replaceAll('.stargate/dev/', `${keyDir}/`)
    env = {
      ...process.env,
      PATH: `${dirname(tool('grpcurl'))}:${join(REPO, 'node_modules/.bin')}:${process.env.PATH}`,
      GOFLAGS: '-mod=mod',
      GOTOOLCHAIN: 'local',
    }
  })
  /** Process groups of the README's terminal commands (bash → go run → server): ended as a whole. */
  const groups: number[] = []
  after(async () => {
    for (const pgid of groups) {
      try {
        process.kill(-pgid, 'SIGTERM')
      } catch (err: unknown) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err // ESRCH: already gone
      }
    }
    await h.close()
  })

  /** Runs README lines in one bash (so assignments carry), in the repository root; resolves to stdout. */
  async function sh(lines: string[]): Promise<string> {
    const script = `set -euo pipefail\n${lines.map(rewrite).join('\n')}`
    try {
      return (await run('bash', ['-c', script], { cwd: REPO, env, timeout: 300_000, maxBuffer: 16 << 20 })).stdout
    } catch (err: unknown) {
      const e = err as { stdout?: string; stderr?: string }
      throw new Error(`README commands failed:\n${script}\n--- stdout\n${e.stdout ?? ''}\n--- stderr\n${e.stderr ?? ''}\n${h.dump()}`)
    }
  }

  function results(stdout: string): EchoResult[] {
    return parseRun(stdout).results
  }

  it('readme - the section has the three blocks the test knows (npm start calls, clients, your own service)', () => {
    const blocks = sectionCommands('Use your existing gRPC services')
    assert.equal(blocks.length, 3, JSON.stringify(blocks))
  })

  it('readme - grpcurl list, describe and a stream through reflection passthrough; a call routed by --route', async () => {
    const cookbookB = sectionCommands('grpcurl cookbook')
      .flat()
      .find((l) => l.startsWith('B=$('))!
    const [list, describeCmd, stream, unary] = sectionCommands('Use your existing gRPC services')[0]!
    assert.match(await sh([cookbookB, list!]), new RegExp(`^${DEV_ECHO_SERVICE.replaceAll('.', '\\.')}$`, 'm'))
    const described = await sh([cookbookB, describeCmd!])
    assert.match(described, /stargate\.test\.v1\.EchoService is a service:/)
    assert.match(
      described,
      /rpc ServerStream \( \.stargate\.test\.v1\.ServerStreamRequest \) returns \( stream \.stargate\.test\.v1\.ServerStreamResponse \);/,
    )
    const streamed = await sh([cookbookB, stream!])
    assert.equal(streamed.match(/"payload": "aGVsbG8="/g)?.length, 3, streamed)
    assert.match(streamed, /"index": 2/)
    const routed = await sh([unary!])
    assert.deepEqual(JSON.parse(routed), { payload: 'aGVsbG8=' })
  })

  it('readme - the unmodified Go and Python clients run every kind through gateway A', async () => {
    const cookbookB = sectionCommands('grpcurl cookbook')
      .flat()
      .find((l) => l.startsWith('B=$('))!
    const [goClient, pyClient] = sectionCommands('Use your existing gRPC services')[1]!
    for (const cmd of [goClient!, pyClient!]) {
      const rs = results(await sh([cookbookB, cmd]))
      assert.deepEqual(
        rs.map((r) => [r.kind, r.code]),
        [
          ['unary', 0],
          ['server_stream', 0],
          ['client_stream', 0],
          ['bidi', 0],
        ],
        cmd,
      )
      for (const r of rs.filter((x) => x.kind === 'bidi')) assert.equal(r.received_sha256, r.sent_sha256)
    }
  })

  it('readme - your own service behind a third gateway on the same relay, called with its peer id', async () => {
    const [server, gateway, ...rest] = sectionCommands('Use your existing gRPC services')[2]!
    // The first two run in terminals of their own: here, in the background until the test ends.
    for (const [name, cmd, ready] of [
      ['readme-server', server!, /^LISTENING /],
      ['readme-gateway', gateway!, /^Multiaddrs: /],
    ] as const) {
      const child = spawn('bash', ['-c', rewrite(cmd)], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
      groups.push(child.pid!)
      const proc = new Proc(name, child)
      h.procs.push(proc)
      await proc.waitFor(ready, 180_000)
    }
    const c = h.procs.find((p) => p.name === 'readme-gateway')!
    const [, cPeer] = await c.waitFor(/^Gateway started: (\S+)/)
    await c.waitFor(/"msg":"reserved on relay"/)
    const rs = results(await sh(rest))
    assert.deepEqual(
      rs.map((r) => [r.kind, r.code]),
      [
        ['server_stream', 0],
        ['bidi', 0],
      ],
    )
    assert.ok(cPeer)
  })
})
