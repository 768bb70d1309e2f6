import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { DescService } from '@bufbuild/protobuf'
import { type Client, createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import { GatewayService } from '@stargate/shared/gen/gateway'
import { RelayService } from '@stargate/shared/gen/relay'
import { connect } from 'nats'
import { eventually } from './eventually.ts'
import { tool } from './tools.ts'

export const STARGATE_BIN = join(import.meta.dirname, '../../services/cli/bin/stargate.js')

/** A child process with its output lines, for assertions and for debugging failed tests. */
export class Proc {
  readonly stdout: string[] = []
  readonly stderr: string[] = []
  readonly exited: Promise<number | null>
  private readonly waiters: Array<{ re: RegExp; count: number; matches: RegExpMatchArray[]; resolve: (m: RegExpMatchArray[]) => void }> = []

  readonly name: string
  readonly child: ChildProcess

  constructor(name: string, child: ChildProcess) {
    this.name = name
    this.child = child
    this.exited = once(child, 'close').then(([code]) => code as number | null)
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.stdout.push(line)
      this.check(line)
    })
    createInterface({ input: child.stderr! }).on('line', (line) => {
      this.stderr.push(line)
      this.check(line)
    })
  }

  private check(line: string): void {
    for (const w of [...this.waiters]) {
      const m = line.match(w.re)
      if (m == null) continue
      w.matches.push(m)
      if (w.matches.length < w.count) continue
      this.waiters.splice(this.waiters.indexOf(w), 1)
      w.resolve(w.matches)
    }
  }

  /** Resolves with the first output line (past or future) matching re; rejects if the process exits first. */
  async waitFor(re: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const [m] = await this.waitForLines(re, 1, timeoutMs)
    return m!
  }

  /** Resolves with the first `count` output lines (past or future) matching re; rejects if the process exits first. */
  waitForLines(re: RegExp, count: number, timeoutMs = 60_000): Promise<RegExpMatchArray[]> {
    const matches: RegExpMatchArray[] = []
    for (const line of [...this.stdout, ...this.stderr]) {
      const m = line.match(re)
      if (m != null) matches.push(m)
      if (matches.length === count) return Promise.resolve(matches)
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: ${matches.length} of ${count} lines matching ${re} within ${timeoutMs} ms\n${this.dump()}`)),
        timeoutMs,
      )
      const w = {
        re,
        count,
        matches,
        resolve: (all: RegExpMatchArray[]) => {
          clearTimeout(timer)
          resolve(all)
        },
      }
      this.waiters.push(w)
      this.exited
        .then((code) => {
          if (this.waiters.includes(w)) {
            clearTimeout(timer)
            reject(new Error(`${this.name} exited with ${code} before printing ${count} lines matching ${re}\n${this.dump()}`))
          }
        })
        .catch(reject)
    })
  }

  dump(): string {
    return [`--- ${this.name} stdout`, ...this.stdout.slice(-40), `--- ${this.name} stderr`, ...this.stderr.slice(-40)].join('\n')
  }

  get running(): boolean {
    return this.child.exitCode == null && this.child.signalCode == null
  }

  /** Sends a signal and waits for exit (SIGKILL after timeoutMs). Resolves to the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<number | null> {
    if (!this.running) return this.exited
    this.child.kill(signal)
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs)
    const code = await this.exited
    clearTimeout(timer)
    return code
  }
}

/** Finds a free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const srv = createServer()
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  const port = (srv.address() as { port: number }).port
  srv.close()
  await once(srv, 'close')
  return port
}

export interface RelayHandle {
  proc: Proc
  peerId: string
  multiaddr: string
  admin: string
  identity: string
  client: Client<typeof RelayService>
}

export interface GatewayHandle {
  proc: Proc
  peerId: string
  api: string
  multiaddrs: string[]
  identity: string
  client: Client<typeof GatewayService>
}

/** How a Serve client registers: shared (others may join its methods), with an API token. */
export interface ServeClientOptions {
  shared?: boolean
  token?: string
  name?: string
  /** Added to the test's environment. */
  env?: NodeJS.ProcessEnv
}

/** Starts real Stargate processes through the CLI on free ports, and always tears them down. */
export class Harness {
  readonly procs: Proc[] = []
  private dir?: string
  private counter = 0

  async tmp(): Promise<string> {
    this.dir ??= await mkdtemp(join(tmpdir(), 'stargate-test-'))
    return this.dir
  }

  async spawnCli(name: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    const child = spawn(process.execPath, [STARGATE_BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, STARGATE_LOG_LEVEL: process.env.STARGATE_LOG_LEVEL ?? 'info', ...env },
      cwd: await this.tmp(),
    })
    const proc = new Proc(name, child)
    this.procs.push(proc)
    return proc
  }

  async relay(args: string[] = [], opts: { identity?: string; name?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RelayHandle> {
    const dir = await this.tmp()
    const identity = opts.identity ?? join(dir, `relay-${++this.counter}.key`)
    const proc = await this.spawnCli(
      opts.name ?? 'relay',
      ['relay', '--host', '127.0.0.1', '--port', '0', '--admin-listen', '127.0.0.1:0', '--stun-port', '0', '--identity', identity, ...args],
      opts.env,
    )
    const [, peerId] = await proc.waitFor(/^Relay node started: (\S+)/)
    const [, addrs] = await proc.waitFor(/^Multiaddrs: (.*)$/)
    const [, admin] = await proc.waitFor(/^Admin API: (\S+)/)
    const multiaddrs = JSON.parse(addrs!) as string[]
    return {
      proc,
      peerId: peerId!,
      multiaddr: multiaddrs.find((a) => a.includes('/127.0.0.1/')) ?? multiaddrs[0]!,
      admin: admin!,
      identity,
      client: grpcClient(RelayService, admin!),
    }
  }

  async gateway(args: string[] = [], opts: { identity?: string; name?: string; env?: NodeJS.ProcessEnv } = {}): Promise<GatewayHandle> {
    const dir = await this.tmp()
    const identity = opts.identity ?? join(dir, `gateway-${++this.counter}.key`)
    const proc = await this.spawnCli(
      opts.name ?? 'gateway',
      ['gateway', '--listen', '127.0.0.1:0', '--identity', identity, ...args],
      opts.env,
    )
    const [, peerId] = await proc.waitFor(/^Gateway started: (\S+)/)
    const [, api] = await proc.waitFor(/^API: (\S+)/)
    const [, addrs] = await proc.waitFor(/^Multiaddrs: (.*)$/)
    return {
      proc,
      peerId: peerId!,
      api: api!,
      multiaddrs: JSON.parse(addrs!) as string[],
      identity,
      client: grpcClient(GatewayService, api!),
    }
  }

  /**
   * Starts a real nats-server on a free port (or `port`); `config` adds configuration lines (TLS,
   * authorization, cluster, server_name). The URL is nats://127.0.0.1:PORT.
   */
  async nats(opts: number | { port?: number; config?: string; name?: string } = {}): Promise<{ proc: Proc; url: string; port: number }> {
    const { port, config = '', name = 'nats-server' } = typeof opts === 'number' ? { port: opts } : opts
    const p = port ?? (await freePort())
    // max_payload above the gateway's 4 MiB payload limit plus envelope overhead.
    const conf = join(await this.tmp(), `nats-${p}.conf`)
    await writeFile(conf, `listen: 127.0.0.1:${p}\nmax_payload: 8388608\n${config}\n`)
    const child = spawn(tool('nats-server'), ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] })
    const proc = new Proc(name, child)
    this.procs.push(proc)
    await proc.waitFor(/Server is ready/)
    return { proc, url: `nats://127.0.0.1:${p}`, port: p }
  }

  /**
   * Starts a cluster of real nats-servers (named n1, n2, ...) on free client and route ports, each routed
   * to all others; resolves once every member sees every other (a message crosses between each pair).
   */
  async natsCluster(size: number, config = ''): Promise<Array<{ proc: Proc; url: string; port: number; name: string }>> {
    const ports = await Promise.all(Array.from({ length: size }, async () => ({ client: await freePort(), route: await freePort() })))
    const nodes = await Promise.all(
      ports.map(async ({ client, route }, i) => {
        const routes = ports.filter((_, j) => j !== i).map((p) => `nats-route://127.0.0.1:${p.route}`)
        const name = `n${i + 1}`
        const cluster = `server_name: ${name}\ncluster {\n  name: stargate-test\n  listen: 127.0.0.1:${route}\n  routes: [${routes.join(', ')}]\n}\n`
        return { ...(await this.nats({ port: client, config: `${cluster}${config}`, name: `nats-${name}` })), name }
      }),
    )
    const clients = await Promise.all(nodes.map((n) => connect({ servers: n.url })))
    try {
      for (const [i, to] of clients.entries()) {
        to.subscribe(`cluster.check.${i}`, { callback: (_err, msg) => msg.respond(new Uint8Array()) })
        await to.flush()
      }
      // Interest crosses the routes asynchronously, and no event says when: ask until every pair answers.
      for (const [i] of clients.entries()) {
        for (const from of clients) {
          await eventually(
            `cluster member ${i + 1} is reachable from every member`,
            () => from.request(`cluster.check.${i}`, new Uint8Array(), { timeout: 500 }).then(() => true),
            { timeoutMs: 30_000, intervalMs: 100 },
          )
        }
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()))
    }
    return nodes
  }

  /** Starts examples/node/serve-client.ts against a gateway API; resolves once registered. */
  async serveClient(api: string, methods: string[] = [], opts: ServeClientOptions = {}): Promise<Proc> {
    const proc = this.spawnServeClient(api, methods, opts)
    await proc.waitFor(/^REGISTERED /)
    return proc
  }

  /** Starts examples/node/serve-client.ts without waiting (its registration may be refused). */
  spawnServeClient(api: string, methods: string[] = [], opts: ServeClientOptions = {}): Proc {
    const args = [
      join(import.meta.dirname, '../../examples/node/serve-client.ts'),
      api,
      ...(opts.shared === true ? ['--shared'] : []),
      ...methods,
    ]
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env, ...(opts.token != null ? { STARGATE_TOKEN: opts.token } : {}) },
    })
    const proc = new Proc(opts.name ?? 'serve-client', child)
    this.procs.push(proc)
    return proc
  }

  /** Prints every process's recent output (call from a failing test). */
  dump(): string {
    return this.procs.map((p) => p.dump()).join('\n')
  }

  async close(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop('SIGTERM', 15_000)))
    if (this.dir != null) await rm(this.dir, { recursive: true, force: true })
  }
}

/** A connect-es client speaking the gRPC protocol (HTTP/2) to host:port. */
export function grpcClient<S extends DescService>(service: S, hostPort: string): Client<S> {
  return createClient(service, createGrpcTransport({ baseUrl: `http://${hostPort}` }))
}
