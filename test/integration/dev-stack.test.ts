import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { dirname } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import { Harness } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)

describe('npm start dev stack', () => {
  it('dev - starts NATS, a relay and two gateways, prints grpcurl commands that work as printed, and stops on Ctrl-C', async () => {
    const h = new Harness()
    try {
      const dir = `${await h.tmp()}/dev`
      const dev = await h.spawnCli('dev', ['dev', '--dir', dir])
      await dev.waitFor(/Stargate dev stack is up/, 120_000)
      await dev.waitFor(/Ctrl-C stops everything/)
      const exportLine = dev.stdout.find((l) => l.trim().startsWith('export B='))!.trim()
      const callLines = dev.stdout.filter((l) => l.trim().startsWith('grpcurl ')).map((l) => l.trim())
      assert.equal(callLines.length, 4)
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
      assert.equal(await dev.stop('SIGINT', 15_000), 0)
      // every port is free again
      await assert.rejects(run(tool('grpcurl'), ['-plaintext', '-max-time', '2', '127.0.0.1:50051', 'list']))
    } finally {
      await h.close()
    }
  })
})
