import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'

export interface DevStackOptions {
  dir: string
  nats: boolean
}

/** Fixed local ports of the dev stack (the README's grpcurl examples use them). */
export const DEV_PORTS = {
  nats: 4222,
  relay: 4001,
  relayAdmin: 4002,
  gatewayA: 50051,
  gatewayB: 50052,
  gatewayAp2p: 4011,
  /** The example gRPC service (EchoService) that gateway B exposes. */
  echoService: 50061,
} as const

/** The example service gateway B exposes (test/proto/stargate/test/v1/echo.proto). */
export const DEV_ECHO_SERVICE = 'stargate.test.v1.EchoService'

const REPO = resolve(import.meta.dirname, '../../..')
const BIN = join(REPO, 'services/cli/bin/stargate.js')
const ECHO_CLIENT = join(REPO, 'examples/node/serve-client.ts')
const ECHO_SERVER = join(REPO, 'examples/node/echo-server.ts')

interface Running {
  name: string
  child: ChildProcess
  lines: string[]
}

function start(name: string, cmd: string, args: string[], ready: RegExp, logFile: string): Promise<Running> {
  // detached: its own process group, so Ctrl-C reaches only the dev command, which stops children in order.
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO, detached: true })
  const lines: string[] = []
  const log: string[] = []
  return new Promise((resolvePromise, reject) => {
    let done = false
    const onLine = (line: string): void => {
      log.push(line)
      if (log.length % 50 === 0) void writeFile(logFile, `${log.join('\n')}\n`)
      lines.push(line)
      if (!done && ready.test(line)) {
        done = true
        resolvePromise({ name, child, lines })
      }
    }
    createInterface({ input: child.stdout! }).on('line', onLine)
    // nats-server logs to stderr; the services log JSON there and print their ready lines on stdout.
    createInterface({ input: child.stderr! }).on('line', (l) => (ready.source.includes('Server is ready') ? onLine(l) : log.push(l)))
    child.once('exit', (code) => {
      void writeFile(logFile, `${log.join('\n')}\n`)
      if (!done)
        reject(
          new Error(`${name} exited with code ${code} before it was ready; its output is in ${logFile}:\n${log.slice(-15).join('\n')}`),
        )
    })
  })
}

/** Finds (installing when it can) the pinned nats-server; undefined with a reason when it cannot. */
async function natsServer(): Promise<{ path?: string; why?: string }> {
  try {
    const { stdout } = await promisify(execFile)('bash', [join(REPO, 'scripts/ensure-tools.sh')], {
      env: { ...process.env, TOOLS: 'nats-server' },
      timeout: 600_000,
    })
    return { path: join(stdout.trim().split('\n').at(-1)!, 'nats-server') }
  } catch (err: unknown) {
    return {
      why: `could not install nats-server (needs Go and the Go module proxy): ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`,
    }
  }
}

/**
 * The local stack: nats-server, a relay, gateway A (direct + relay + NATS) and gateway B (reachable only
 * through the relay), with an echo handler registered on B through Serve. Ctrl-C stops everything.
 */
export async function startDevStack(o: DevStackOptions): Promise<void> {
  const dir = resolve(o.dir)
  await mkdir(dir, { recursive: true })
  const running: Running[] = []
  const stopAll = async (): Promise<void> => {
    for (const r of [...running].reverse()) {
      if (r.child.exitCode == null) r.child.kill('SIGTERM')
      await new Promise((res) => (r.child.exitCode != null ? res(null) : r.child.once('exit', res)))
    }
  }
  let stopping = false
  const onSignal = (): void => {
    if (stopping) return
    stopping = true
    process.stdout.write('\nstopping the dev stack…\n')
    stopAll().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    let natsUrl: string | undefined
    if (o.nats) {
      const found = await natsServer()
      if (found.path != null) {
        const conf = join(dir, 'nats.conf')
        await writeFile(conf, `listen: 127.0.0.1:${DEV_PORTS.nats}\nmax_payload: 8388608\n`)
        running.push(await start('nats', found.path, ['-c', conf], /Server is ready/, join(dir, 'nats.log')))
        natsUrl = `nats://127.0.0.1:${DEV_PORTS.nats}`
      } else {
        process.stdout.write(`NATS tier is OFF: ${found.why}\n`)
      }
    }
    const node = process.execPath
    const relay = await start(
      'relay',
      node,
      [
        BIN,
        'relay',
        '--host',
        '127.0.0.1',
        '--port',
        String(DEV_PORTS.relay),
        '--admin-listen',
        `127.0.0.1:${DEV_PORTS.relayAdmin}`,
        '--identity',
        join(dir, 'relay.key'),
      ],
      /^Admin API:/,
      join(dir, 'relay.log'),
    )
    running.push(relay)
    const relayPeer = relay.lines.find((l) => l.startsWith('Relay node started: '))!.split(': ')[1]!
    const relayAddr = `/ip4/127.0.0.1/tcp/${DEV_PORTS.relay}/p2p/${relayPeer}`
    const natsFlags = natsUrl != null ? ['--nats', natsUrl] : []
    // An existing gRPC service that knows nothing about Stargate, exposed by gateway B.
    const echoAddr = `127.0.0.1:${DEV_PORTS.echoService}`
    running.push(await start('echo-service', node, [ECHO_SERVER, '--listen', echoAddr], /^LISTENING /, join(dir, 'echo-service.log')))
    const b = await start(
      'gateway-b',
      node,
      [
        BIN,
        'gateway',
        '--listen',
        `127.0.0.1:${DEV_PORTS.gatewayB}`,
        '--relay',
        relayAddr,
        ...natsFlags,
        '--expose',
        `${DEV_ECHO_SERVICE}=${echoAddr}`,
        '--identity',
        join(dir, 'gateway-b.key'),
      ],
      /^Multiaddrs:/,
      join(dir, 'gateway-b.log'),
    )
    running.push(b)
    const peerOf = (r: Running): string => r.lines.find((l) => l.startsWith('Gateway started: '))!.split(': ')[1]!
    const B = peerOf(b)
    const a = await start(
      'gateway-a',
      node,
      [
        BIN,
        'gateway',
        '--listen',
        `127.0.0.1:${DEV_PORTS.gatewayA}`,
        '--p2p-listen',
        `/ip4/127.0.0.1/tcp/${DEV_PORTS.gatewayAp2p}`,
        '--relay',
        relayAddr,
        ...natsFlags,
        // Calls for the example service go to B without any header from the client.
        '--route',
        `${DEV_ECHO_SERVICE}=${B}`,
        '--identity',
        join(dir, 'gateway-a.key'),
      ],
      /^Multiaddrs:/,
      join(dir, 'gateway-a.log'),
    )
    running.push(a)
    const echo = await start('echo', node, [ECHO_CLIENT, `127.0.0.1:${DEV_PORTS.gatewayB}`, 'echo'], /^REGISTERED /, join(dir, 'echo.log'))
    running.push(echo)
    const A = peerOf(a)
    const apiA = `127.0.0.1:${DEV_PORTS.gatewayA}`
    process.stdout.write(`
Stargate dev stack is up (logs in ${dir}):
  relay      ${relayAddr}   admin API 127.0.0.1:${DEV_PORTS.relayAdmin}
  gateway A  ${A}   API 127.0.0.1:${DEV_PORTS.gatewayA}   (direct + relay${natsUrl != null ? ' + NATS' : ''})
  gateway B  ${B}   API 127.0.0.1:${DEV_PORTS.gatewayB}   (reachable only through the relay; echo handler registered)
  NATS       ${natsUrl ?? 'off'}
  EchoService ${echoAddr}   (an ordinary gRPC server, exposed by B: --expose ${DEV_ECHO_SERVICE}=${echoAddr})

Try (grpcurl: https://github.com/fullstorydev/grpcurl, or ~/.cache/stargate/bin/grpcurl after npm test):
  export B=${B}
  grpcurl -plaintext -d "{\\"peer_id\\":\\"$B\\",\\"method\\":\\"echo\\",\\"json\\":{\\"hello\\":\\"world\\"}}" 127.0.0.1:${DEV_PORTS.gatewayA} stargate.v1.GatewayService/Call
  grpcurl -plaintext -d "{\\"peer_id\\":\\"$B\\",\\"method\\":\\"ping\\"}" 127.0.0.1:${DEV_PORTS.gatewayA} stargate.v1.GatewayService/Call
  grpcurl -plaintext 127.0.0.1:${DEV_PORTS.gatewayA} stargate.v1.GatewayService/GetStatus
  grpcurl -plaintext 127.0.0.1:${DEV_PORTS.relayAdmin} stargate.v1.RelayService/GetRelayStats
The "tier" field of each answer shows which tier served it.

Your existing gRPC services, tunnelled: call B's ${DEV_ECHO_SERVICE} through A as if it were local
(reflection and calls pass through to the service; without the header, A routes it to B by --route):
  grpcurl -plaintext -H "stargate-peer: $B" ${apiA} list
  grpcurl -plaintext -H "stargate-peer: $B" ${apiA} describe ${DEV_ECHO_SERVICE}
  grpcurl -plaintext -H "stargate-peer: $B" -d '{"payload":"aGVsbG8=","response_count":3}' ${apiA} ${DEV_ECHO_SERVICE}/ServerStream
  grpcurl -plaintext -import-path test/proto -proto stargate/test/v1/echo.proto -d '{"payload":"aGVsbG8="}' ${apiA} ${DEV_ECHO_SERVICE}/Unary
An unmodified client, every call kind (Go, or Python through test/interop/python/setup.sh):
  (cd test/interop/go && go run ./cmd/echo-client -addr ${apiA})
  "$(bash test/interop/python/setup.sh)" test/interop/python/echo_client.py --addr ${apiA}
Ctrl-C stops everything.
`)
    await Promise.race(running.map((r) => new Promise((res) => r.child.once('exit', res))))
    if (!stopping) {
      const dead = running.find((r) => r.child.exitCode != null)
      process.stderr.write(`${dead?.name ?? 'a process'} exited; stopping the dev stack\n`)
      await stopAll()
      process.exit(1)
    }
  } catch (err: unknown) {
    await stopAll()
    throw err
  }
}
