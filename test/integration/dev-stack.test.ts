import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import { parseRun } from '../interop/echo-programs.ts'
import { Harness } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)

describe('npm start dev stack', () => {
  it('dev - starts NATS, a relay, two gateways and an exposed gRPC service on free ports, prints commands that work as printed, and stops on Ctrl-C', async () => {
    const h = new Harness()
    try {
      const dir = `${await h.tmp()}/dev`
      // --ports 0: beside a dev stack someone is running, and with every address taken from what it printed.
      const dev = await h.spawnCli('dev', ['dev', '--dir', dir, '--ports', '0'])
      await dev.waitFor(/Stargate dev stack is up/, 120_000)
      await dev.waitFor(/Ctrl-C stops everything/)
      const exportLine = dev.stdout.find((l) => l.trim().startsWith('export B='))!.trim()
      const callLines = dev.stdout.filter((l) => l.trim().startsWith('grpcurl ')).map((l) => l.trim())
      assert.equal(callLines.length, 8)
      const [, apiA] = await dev.waitFor(/^\s*gateway A .* API (\S+)/)
      assert.doesNotMatch(apiA!, /:50051$/, 'gateway A is not on its fixed port')
      const env = { ...process.env, PATH: `${dirname(tool('grpcurl'))}:${process.env.PATH}` }
      const echo = await run('bash', ['-c', `${exportLine}; ${callLines[0]}`], { env, timeout: 30_000 })
      assert.match(echo.stdout, /"hello": "world"/)
      assert.match(echo.stdout, /"tier": "TIER_RELAY"/)
      const ping = await run('bash', ['-c', `${exportLine}; ${callLines[1]}`], { env, timeout: 30_000 })
      assert.match(ping.stdout, /"peerId": "12D3KooW/)
      const status = await run('bash', ['-c', callLines[2]!], { env, timeout: 30_000 })
      assert.match(status.stdout, /"state": "NATS_STATE_CONNECTED"/)
      const stats = await run('bash', ['-c', callLines[3]!], { env, timeout: 30_000 })
      assert.match(stats.stdout, /"reservations": 2/)
      // The exposed EchoService through A: reflection passthrough (list, describe), a stream by header, a
      // call routed by --route, and the unmodified Go and Python clients (run where printed: the repository root).
      const tunnel = async (line: string): Promise<string> =>
        (await run('bash', ['-c', `${exportLine}; ${line}`], { env, cwd: join(import.meta.dirname, '../..'), timeout: 180_000 })).stdout
      assert.match(await tunnel(callLines[4]!), /^stargate\.test\.v1\.EchoService$/m)
      assert.match(
        await tunnel(callLines[5]!),
        /rpc Bidi \( stream \.stargate\.test\.v1\.BidiRequest \) returns \( stream \.stargate\.test\.v1\.BidiResponse \);/,
      )
      assert.equal((await tunnel(callLines[6]!)).match(/"payload": "aGVsbG8="/g)?.length, 3)
      assert.deepEqual(JSON.parse(await tunnel(callLines[7]!)), { payload: 'aGVsbG8=' })
      const clientLines = dev.stdout.filter((l) => /echo[-_]client/.test(l)).map((l) => l.trim())
      assert.equal(clientLines.length, 2)
      for (const line of clientLines) {
        const { results } = parseRun(await tunnel(line))
        assert.deepEqual(
          results.map((r) => [r.kind, r.code]),
          [
            ['unary', 0],
            ['server_stream', 0],
            ['client_stream', 0],
            ['bidi', 0],
          ],
          line,
        )
      }
      assert.equal(await dev.stop('SIGINT', 15_000), 0)
      // gateway A's port is free again
      await assert.rejects(run(tool('grpcurl'), ['-plaintext', '-max-time', '2', apiA!, 'list']))
    } finally {
      await h.close()
    }
  })
})
