import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type Server } from 'node:net'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { Code, StargateError } from '@stargate/shared/errors'
import { createLogger } from '@stargate/shared/log'
import { createGateway } from '../../services/gateway/src/gateway.ts'
import { eventually } from '../lib/eventually.ts'
import { freePort, Harness } from '../lib/harness.ts'

async function occupy(): Promise<{ server: Server; port: number }> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as { port: number }).port }
}

async function canBind(port: number): Promise<boolean> {
  const s = createServer()
  try {
    s.listen(port, '127.0.0.1')
    await once(s, 'listening')
    return true
  } catch {
    return false
  } finally {
    s.close()
  }
}

const listeners = (): number => process.getActiveResourcesInfo().filter((r) => r === 'TCPServerWrap').length

describe('gateway start', () => {
  it('start - a start that fails half way (API port taken after libp2p listened) stops what it started', async () => {
    const busy = await occupy()
    const p2pPort = await freePort()
    const before = listeners()
    try {
      const gateway = await createGateway({
        privateKey: await generateKeyPair('Ed25519'),
        log: createLogger('test', { level: 'silent' }),
        apiHost: '127.0.0.1',
        apiPort: busy.port,
        p2pListen: [`/ip4/127.0.0.1/tcp/${p2pPort}`],
      })
      await assert.rejects(gateway.start(), (err: unknown) => {
        assert.ok(err instanceof StargateError)
        assert.equal(err.code, Code.FailedPrecondition)
        assert.match(err.rawMessage, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${busy.port} \\(--listen\\): .*EADDRINUSE`))
        return true
      })
      assert.equal(await canBind(p2pPort), true, 'the libp2p listener was closed again')
      // Node releases closed server handles asynchronously: the count must come back, not grow.
      await eventually('no listener is left behind', () => listeners() <= before, 5_000)
    } finally {
      busy.server.close()
    }
  })

  it('start - the CLI exits non-zero with a message naming the flag and leaves the libp2p port free', async () => {
    const h = new Harness()
    const busy = await occupy()
    try {
      const p2pPort = await freePort()
      const proc = await h.spawnCli('gateway', [
        'gateway',
        '--listen',
        `127.0.0.1:${busy.port}`,
        '--p2p-listen',
        `/ip4/127.0.0.1/tcp/${p2pPort}`,
        '--identity',
        `${await h.tmp()}/gw.key`,
      ])
      const code = await proc.exited
      assert.equal(code, 1)
      assert.ok(
        proc.stderr.some((l) => l.includes(`stargate gateway: cannot listen on 127.0.0.1:${busy.port} (--listen)`)),
        proc.dump(),
      )
      assert.ok(proc.stderr.some((l) => l.includes('gateway failed to start; stopping what was started')))
      assert.equal(await canBind(p2pPort), true)
    } finally {
      busy.server.close()
      await h.close()
    }
  })
})
