import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { RELAY_DEFAULTS } from '@stargate/relay/defaults'

export interface DevStackOptions {
  dir: string
  nats: boolean
  /** 'fixed': DEV_PORTS; 'free': every listener on a port the system chooses (tests, next to a running stack). */
  ports: 'fixed' | 'free'
}

/** Fixed local ports of the dev stack (the README's grpcurl examples use them). */
export const DEV_PORTS = {
  nats: 4222,
  relay: 4001,
  relayAdmin: 4002,
  /** The relay's STUN responder (UDP), at the relay's default. */
  stun: RELAY_DEFAULTS.stunPort,
  gatewayA: 50051,
  gatewayB: 50052,
  gatewayAp2p: 4011,
  /** The example gRPC service (EchoService) that gateway B exposes. */
  echoService: 50061,
} as const

/** DEV_PORTS with every port 0: each process listens on a port the system chooses and prints it. */
const FREE_PORTS: Record<keyof typeof DEV_PORTS, number> = {
  nats: 0,
  relay: 0,
  relayAdmin: 0,
  stun: 0,
  gatewayA: 0,
  gatewayB: 0,
  gatewayAp2p: 0,
  echoService: 0,
}

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

/** The first capture of the first line of a started process matching re (its printed address). */
function printed(r: Running, re: RegExp): string {
  for (const line of r.lines) {
    const m = re.exec(line)
    if (m?.[1] != null) return m[1]
  }
  throw new Error(`${r.name} did not print a line matching ${re}`)
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
  const ports = o.ports === 'fixed' ? DEV_PORTS : FREE_PORTS
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
        // nats-server takes -1 for a port of the system's choosing.
        await writeFile(conf, `listen: 127.0.0.1:${ports.nats || -1}\nmax_payload: 8388608\n`)
        const nats = await start('nats', found.path, ['-c', conf], /Server is ready/, join(dir, 'nats.log'))
        running.push(nats)
        natsUrl = `nats://${printed(nats, /Listening for client connections on (\S+)/)}`
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
        String(ports.relay),
        '--admin-listen',
        `127.0.0.1:${ports.relayAdmin}`,
        '--stun-port',
        String(ports.stun),
        '--identity',
        join(dir, 'relay.key'),
      ],
      /^STUN: /,
      join(dir, 'relay.log'),
    )
    running.push(relay)
    const relayAddr = printed(relay, /^Multiaddrs: .*"(\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/[^"]+)"/)
    const relayAdmin = printed(relay, /^Admin API: (\S+)/)
    const stun = printed(relay, /^STUN: (\S+)/)
    const natsFlags = natsUrl != null ? ['--nats', natsUrl] : []
    // An existing gRPC service that knows nothing about Stargate, exposed by gateway B.
    const echoService = await start(
      'echo-service',
      node,
      [ECHO_SERVER, '--listen', `127.0.0.1:${ports.echoService}`],
      /^LISTENING /,
      join(dir, 'echo-service.log'),
    )
    running.push(echoService)
    const echoAddr = printed(echoService, /^LISTENING (\S+)/)
    const b = await start(
      'gateway-b',
      node,
      [
        BIN,
        'gateway',
        '--listen',
        `127.0.0.1:${ports.gatewayB}`,
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
        `127.0.0.1:${ports.gatewayA}`,
        '--p2p-listen',
        `/ip4/127.0.0.1/tcp/${ports.gatewayAp2p}`,
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
    const apiA = printed(a, /^API: (\S+)/)
    const apiB = printed(b, /^API: (\S+)/)
    const p2pA = printed(a, /^Multiaddrs: .*"(\/ip4\/127\.0\.0\.1\/tcp\/\d+)\/p2p\//)
    const echo = await start('echo', node, [ECHO_CLIENT, apiB, 'echo'], /^REGISTERED /, join(dir, 'echo.log'))
    running.push(echo)
    const A = peerOf(a)
    process.stdout.write(`
Stargate dev stack is up (logs in ${dir}):
  relay      ${relayAddr}   admin API ${relayAdmin}   STUN udp ${stun}
  gateway A  ${A}   API ${apiA}   libp2p ${p2pA}   (direct + relay${natsUrl != null ? ' + NATS' : ''})
  gateway B  ${B}   API ${apiB}   (reachable only through the relay; echo handler registered)
  NATS       ${natsUrl ?? 'off'}
  EchoService ${echoAddr}   (an ordinary gRPC server, exposed by B: --expose ${DEV_ECHO_SERVICE}=${echoAddr})

Try (grpcurl: https://github.com/fullstorydev/grpcurl, or ~/.cache/stargate/bin/grpcurl after npm test):
  export B=${B}
  grpcurl -plaintext -d "{\\"peer_id\\":\\"$B\\",\\"method\\":\\"echo\\",\\"json\\":{\\"hello\\":\\"world\\"}}" ${apiA} stargate.v1.GatewayService/Call
  grpcurl -plaintext -d "{\\"peer_id\\":\\"$B\\",\\"method\\":\\"ping\\"}" ${apiA} stargate.v1.GatewayService/Call
  grpcurl -plaintext ${apiA} stargate.v1.GatewayService/GetStatus
  grpcurl -plaintext ${relayAdmin} stargate.v1.RelayService/GetRelayStats
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
