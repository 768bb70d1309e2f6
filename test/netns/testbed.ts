import { execFile, execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { isIPv4 } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Proc, STARGATE_BIN } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

/**
 * A network-namespace testbed: an "internet" (a bridge in its own namespace) with public hosts and
 * NAT routers on it, each NATed host behind its own router namespace. Real kernel NAT (iptables
 * MASQUERADE), real firewalls (silent DROP), real processes run with `ip netns exec`.
 *
 *   public host  ── eth0 198.18.0.N ──┐
 *                                     ├── br0 (namespace <prefix>-inet)
 *   router  ── wan0 198.18.1.N ───────┘
 *     └─ lan0 100.64.N.1 ── eth0 100.64.N.2  NATed host
 *
 * Only 198.18.0.0/15 (public side) and 100.64.0.0/10 (private side) are ever used; every address is
 * checked before it is configured. Namespaces are named `sgnt-<pid>-<run>-<name>`: close() removes
 * them, so do process exit and SIGINT/SIGTERM, and create() sweeps those left by dead runs.
 */

/**
 * What stands between a host and the internet:
 * - public: an address on the internet segment, no NAT;
 * - nat: a port-preserving NAT (MASQUERADE): one mapping for every destination;
 * - symmetric: MASQUERADE --random-fully: a new random port per destination;
 * - firewall: a port-preserving NAT whose FORWARD chain silently DROPs (no REJECT) everything
 *   outbound except to the allowed hosts.
 */
export type HostKind = 'public' | 'nat' | 'symmetric' | 'firewall'

export interface HostSpec {
  kind: HostKind
  /** firewall only: hosts (or public IPs) outbound traffic may reach. */
  allow?: Array<TestbedHost | string>
}

/** A host of the testbed. */
export interface TestbedHost {
  name: string
  kind: HostKind
  /** Namespace the host's processes run in. */
  ns: string
  /** The host's own interface address (198.18.0.N for public hosts, 100.64.N.2 behind a router). */
  ip: string
  /** The address the internet sees: ip for public hosts, the router's public leg otherwise. */
  publicIp: string
  router?: { ns: string; publicIp: string; privateIp: string }
}

/** A relay started inside the testbed. */
export interface NetnsRelay {
  proc: Proc
  host: TestbedHost
  peerId: string
  /** /ip4/<public ip>/tcp/<port>/p2p/<id>, dialable from every host. */
  multiaddr: string
  /** HOST:PORT of its STUN responder. */
  stun: string
  /** HOST:PORT of its admin API (inside its namespace). */
  admin: string
}

/** A gateway started inside the testbed. */
export interface NetnsGateway {
  proc: Proc
  host: TestbedHost
  peerId: string
  /** HOST:PORT of its API, reachable inside its namespace (see Testbed.grpcurl). */
  api: string
  multiaddrs: string[]
}

export interface ExecResult {
  code: number | null
  stdout: string
  stderr: string
}

export const NETNS_PREFIX = 'sgnt'
const PUBLIC_NET: [string, number] = ['198.18.0.0', 15]
const PRIVATE_NET: [string, number] = ['100.64.0.0', 10]

function v4ToInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0) >>> 0
}

function inPrefix(ip: string, [base, bits]: [string, number]): boolean {
  const mask = (0xffffffff << (32 - bits)) >>> 0
  return isIPv4(ip) && (v4ToInt(ip) & mask) >>> 0 === (v4ToInt(base) & mask) >>> 0
}

/** Throws unless ip is in 198.18.0.0/15 or 100.64.0.0/10: the testbed never touches any other address. */
export function assertTestbedAddress(ip: string): void {
  if (!inPrefix(ip, PUBLIC_NET) && !inPrefix(ip, PRIVATE_NET)) {
    throw new Error(`testbed address ${ip} is outside 198.18.0.0/15 and 100.64.0.0/10`)
  }
}

function which(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin'])) {
    if (dir !== '' && existsSync(join(dir, bin))) return join(dir, bin)
  }
  return undefined
}

/** Why the testbed cannot run here (for `{ skip }`), or undefined when it can: root, `ip netns`, iptables. */
export function netnsUnsupported(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux'
  if (process.getuid?.() !== 0) return 'network namespaces need root'
  if (which('ip') == null || which('iptables') == null) {
    // Installs iproute2/iptables with apt when missing (idempotent; a no-op when present).
    try {
      execFileSync('bash', [join(import.meta.dirname, '../../scripts/ensure-tools.sh')], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, TOOLS: 'netns' },
      })
    } catch {
      // reported below
    }
  }
  if (which('ip') == null) return 'iproute2 (ip) is not installed'
  if (which('iptables') == null) return 'iptables is not installed (scripts/ensure-tools.sh installs it with apt)'
  const probe = `${NETNS_PREFIX}-${process.pid}-probe${randomBytes(2).toString('hex')}`
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' })
    execFileSync('ip', ['netns', 'exec', probe, 'iptables', '-t', 'nat', '-L', '-n'], { stdio: 'pipe' })
  } catch (err: unknown) {
    return `cannot create a network namespace with iptables NAT: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' })
    } catch {
      // not created
    }
  }
  return undefined
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err: unknown) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Kills what still runs in a namespace and deletes it (synchronous: also used on process exit). */
function destroyNamespaceSync(ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    for (const p of pids.split('\n').filter((x) => x !== '')) {
      try {
        process.kill(Number(p), 'SIGKILL')
      } catch {
        // already gone
      }
    }
  } catch {
    // namespace already gone
  }
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
  } catch {
    // already gone
  }
}

/** Removes namespaces with our prefix whose creating process is dead and that are older than `before`. */
export function sweepStaleNamespaces(before: Date): string[] {
  const dir = '/run/netns'
  if (!existsSync(dir)) return []
  const swept: string[] = []
  for (const name of readdirSync(dir)) {
    const m = new RegExp(`^${NETNS_PREFIX}-(\\d+)-`).exec(name)
    if (m == null) continue
    const pid = Number(m[1])
    if (pid === process.pid || pidAlive(pid)) continue
    let mtime: Date
    try {
      mtime = statSync(join(dir, name)).mtime
    } catch {
      continue
    }
    if (mtime >= before) continue
    destroyNamespaceSync(name)
    swept.push(name)
  }
  return swept
}

const live = new Set<Testbed>()
let hooksInstalled = false

function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', () => {
    for (const tb of live) tb.destroySync()
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const tb of live) tb.destroySync()
      process.exit(signal === 'SIGINT' ? 130 : 143)
    })
  }
}

/** Runs a command, resolving with its exit code and output (never rejects on a non-zero exit). */
function run(file: string, args: string[], timeoutMs = 30_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code =
        err == null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code as number) : null
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

/** See the file comment. Create with Testbed.create(); always close(). */
export class Testbed {
  /** Unique per run: `<prefix>-<pid>-<random>`. */
  readonly id: string
  readonly startedAt = new Date()
  readonly procs: Proc[] = []
  private readonly namespaces: string[] = []
  private readonly hosts = new Map<string, TestbedHost>()
  private readonly inet: string
  private dir?: string
  private nextPublic = 10
  private nextRouter = 10
  private nextPrivate = 1
  private closed = false

  private constructor() {
    this.id = `${NETNS_PREFIX}-${process.pid}-${randomBytes(3).toString('hex')}`
    this.inet = `${this.id}-inet`
  }

  /** Sweeps stale namespaces, then creates the internet segment. Throws if netnsUnsupported(). */
  static async create(): Promise<Testbed> {
    const reason = netnsUnsupported()
    if (reason != null) throw new Error(reason)
    const tb = new Testbed()
    sweepStaleNamespaces(tb.startedAt)
    installExitHooks()
    live.add(tb)
    try {
      await tb.addNamespace(tb.inet)
      await tb.ip(['-n', tb.inet, 'link', 'add', 'br0', 'type', 'bridge'])
      await tb.ip(['-n', tb.inet, 'link', 'set', 'br0', 'up'])
    } catch (err: unknown) {
      await tb.close()
      throw err
    }
    return tb
  }

  /** Namespaces of this run (for diagnostics and tests of the cleanup). */
  get namespaceNames(): string[] {
    return [...this.namespaces]
  }

  /** A host by name. */
  get(name: string): TestbedHost {
    const h = this.hosts.get(name)
    if (h == null) throw new Error(`no testbed host ${name}`)
    return h
  }

  private async ip(args: string[]): Promise<void> {
    const r = await run('ip', args)
    if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`)
  }

  private async nsRun(ns: string, argv: string[]): Promise<void> {
    const r = await run('ip', ['netns', 'exec', ns, ...argv])
    if (r.code !== 0) throw new Error(`[${ns}] ${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`)
  }

  private async addNamespace(ns: string): Promise<void> {
    await this.ip(['netns', 'add', ns])
    this.namespaces.push(ns)
    await this.ip(['-n', ns, 'link', 'set', 'lo', 'up'])
  }

  private async addAddress(ns: string, dev: string, ip: string, bits: number): Promise<void> {
    assertTestbedAddress(ip)
    await this.ip(['-n', ns, 'addr', 'add', `${ip}/${bits}`, 'dev', dev])
    await this.ip(['-n', ns, 'link', 'set', dev, 'up'])
  }

  /** A veth from `ns` (named dev) to the internet bridge. */
  private async plugIntoInternet(ns: string, dev: string, ip: string): Promise<void> {
    const port = `p${this.namespaces.length}`
    await this.ip(['-n', ns, 'link', 'add', dev, 'type', 'veth', 'peer', 'name', port, 'netns', this.inet])
    await this.ip(['-n', this.inet, 'link', 'set', port, 'master', 'br0'])
    await this.ip(['-n', this.inet, 'link', 'set', port, 'up'])
    await this.addAddress(ns, dev, ip, PUBLIC_NET[1])
  }

  /** Adds a host; names are short [a-z0-9] words, unique per testbed. */
  async host(name: string, spec: HostKind | HostSpec): Promise<TestbedHost> {
    const { kind, allow = [] } = typeof spec === 'string' ? { kind: spec } : spec
    if (!/^[a-z0-9]{1,12}$/.test(name)) throw new Error(`host name "${name}" must be 1-12 of [a-z0-9]`)
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`)
    const ns = `${this.id}-${name}`
    await this.addNamespace(ns)
    if (kind === 'public') {
      const ip = `198.18.0.${this.nextPublic++}`
      await this.plugIntoInternet(ns, 'eth0', ip)
      const h: TestbedHost = { name, kind, ns, ip, publicIp: ip }
      this.hosts.set(name, h)
      return h
    }
    const router = `${ns}-gw`
    await this.addNamespace(router)
    const publicIp = `198.18.1.${this.nextRouter++}`
    const n = this.nextPrivate++
    const privateIp = `100.64.${n}.1`
    const ip = `100.64.${n}.2`
    await this.plugIntoInternet(router, 'wan0', publicIp)
    await this.ip(['-n', router, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
    await this.addAddress(router, 'lan0', privateIp, 24)
    await this.addAddress(ns, 'eth0', ip, 24)
    await this.ip(['-n', ns, 'route', 'add', 'default', 'via', privateIp])
    await this.nsRun(router, ['sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    const masquerade = ['iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan0', '-j', 'MASQUERADE']
    await this.nsRun(router, kind === 'symmetric' ? [...masquerade, '--random-fully'] : masquerade)
    if (kind === 'firewall') {
      const ipt = (...args: string[]): Promise<void> => this.nsRun(router, ['iptables', ...args])
      await ipt('-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT')
      for (const a of allow) {
        const dst = typeof a === 'string' ? a : a.publicIp
        assertTestbedAddress(dst)
        await ipt('-A', 'FORWARD', '-i', 'lan0', '-d', dst, '-j', 'ACCEPT')
      }
      // Silently: no REJECT, no ICMP; the sender only sees its packets vanish.
      await ipt('-A', 'FORWARD', '-i', 'lan0', '-j', 'DROP')
    }
    const h: TestbedHost = { name, kind, ns, ip, publicIp, router: { ns: router, publicIp, privateIp } }
    this.hosts.set(name, h)
    return h
  }

  /** Runs argv inside the host's namespace to completion. */
  exec(host: TestbedHost, argv: string[], timeoutMs = 30_000): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', host.ns, ...argv], timeoutMs)
  }

  /** Starts argv inside the host's namespace (`ip netns exec` execs, so the pid is the process itself). */
  spawn(host: TestbedHost, argv: string[], opts: { name?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Proc {
    if (this.closed) throw new Error('testbed closed')
    const child = spawn('ip', ['netns', 'exec', host.ns, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, STARGATE_LOG_LEVEL: process.env.STARGATE_LOG_LEVEL ?? 'info', ...opts.env },
      cwd: opts.cwd ?? this.dir,
    })
    const proc = new Proc(opts.name ?? `${host.name}:${argv[0]}`, child)
    this.procs.push(proc)
    return proc
  }

  /** A scratch directory for identity files, removed by close(). */
  async tmp(): Promise<string> {
    this.dir ??= await mkdtemp(join(tmpdir(), 'stargate-netns-'))
    return this.dir
  }

  /** Runs the Stargate CLI (`stargate <args>`) with this Node inside the host's namespace. */
  async stargate(host: TestbedHost, args: string[], opts: { name?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Proc> {
    const cwd = await this.tmp()
    return this.spawn(host, [process.execPath, STARGATE_BIN, ...args], { name: opts.name ?? `${host.name}:${args[0]}`, env: opts.env, cwd })
  }

  /** Starts a relay on a public host: libp2p on ip:port, STUN on ip:stunPort (3478 unless given). */
  async relay(host: TestbedHost, opts: { port?: number; stunPort?: number; args?: string[] } = {}): Promise<NetnsRelay> {
    const dir = await this.tmp()
    const proc = await this.stargate(host, [
      'relay',
      '--host',
      host.ip,
      '--port',
      String(opts.port ?? 4001),
      '--admin-listen',
      '127.0.0.1:0',
      '--stun-port',
      String(opts.stunPort ?? 3478),
      '--identity',
      join(dir, `relay-${host.name}.key`),
      ...(opts.args ?? []),
    ])
    const [, peerId] = await proc.waitFor(/^Relay node started: (\S+)/)
    const [, addrs] = await proc.waitFor(/^Multiaddrs: (.*)$/)
    const [, admin] = await proc.waitFor(/^Admin API: (\S+)/)
    const [, stun] = await proc.waitFor(/^STUN: (\S+)/)
    const multiaddr = (JSON.parse(addrs!) as string[]).find((a) => a.includes(`/ip4/${host.ip}/`))
    if (multiaddr == null) throw new Error(`relay on ${host.name} does not listen on ${host.ip}: ${addrs}`)
    return { proc, host, peerId: peerId!, multiaddr, stun: stun!, admin: admin! }
  }

  /** Starts a gateway on a host with its API on 127.0.0.1 inside the namespace. */
  async gateway(host: TestbedHost, args: string[] = [], opts: { name?: string; env?: NodeJS.ProcessEnv } = {}): Promise<NetnsGateway> {
    const dir = await this.tmp()
    const proc = await this.stargate(
      host,
      ['gateway', '--listen', '127.0.0.1:0', '--identity', join(dir, `gateway-${host.name}-${this.procs.length}.key`), ...args],
      { name: opts.name ?? `${host.name}:gateway`, env: opts.env },
    )
    const [, peerId] = await proc.waitFor(/^Gateway started: (\S+)/)
    const [, api] = await proc.waitFor(/^API: (\S+)/)
    const [, addrs] = await proc.waitFor(/^Multiaddrs: (.*)$/)
    return { proc, host, peerId: peerId!, api: api!, multiaddrs: JSON.parse(addrs!) as string[] }
  }

  /** Starts nats-server on host.ip:port. */
  async nats(host: TestbedHost, port = 4222): Promise<{ proc: Proc; url: string }> {
    const proc = this.spawn(host, [tool('nats-server'), '-a', host.ip, '-p', String(port)], { name: `${host.name}:nats-server` })
    await proc.waitFor(/Server is ready/)
    return { proc, url: `nats://${host.publicIp}:${port}` }
  }

  /** Calls a gRPC method with grpcurl inside the host's namespace (server reflection); returns the JSON response. */
  async grpcurl(host: TestbedHost, target: string, method: string, body: unknown = {}): Promise<Record<string, unknown>> {
    const r = await this.exec(host, [
      tool('grpcurl'),
      '-plaintext',
      '-emit-defaults',
      '-max-time',
      '10',
      '-d',
      JSON.stringify(body),
      target,
      method,
    ])
    if (r.code !== 0) throw new Error(`grpcurl ${method} on ${host.name} failed (${r.code}): ${r.stderr.trim()}`)
    return JSON.parse(r.stdout) as Record<string, unknown>
  }

  /** Opens a TCP connection from a host; says whether it connected, was refused (RST) or timed out (silent drop). */
  async tcpProbe(host: TestbedHost, ip: string, port: number, timeoutMs: number): Promise<'connected' | 'refused' | 'timeout' | string> {
    assertTestbedAddress(ip)
    const script = `const s = require('node:net').connect(${port}, ${JSON.stringify(ip)});
const t = setTimeout(() => { console.log('timeout'); process.exit(0) }, ${timeoutMs});
s.on('connect', () => { clearTimeout(t); console.log('connected'); s.destroy() });
s.on('error', (e) => { clearTimeout(t); console.log(e.code === 'ECONNREFUSED' ? 'refused' : e.code) })`
    const r = await this.exec(host, [process.execPath, '-e', script], timeoutMs + 10_000)
    return r.stdout.trim()
  }

  /**
   * Silently drops every packet between `host` and `peer` from now on, established connections
   * included (iptables DROP on the host's INPUT and OUTPUT), e.g. to kill a direct path mid-test.
   * Resolves to a function that restores the path.
   */
  async dropBetween(host: TestbedHost, peer: TestbedHost | string): Promise<() => Promise<void>> {
    const ip = typeof peer === 'string' ? peer : peer.publicIp
    assertTestbedAddress(ip)
    const rules = [
      ['OUTPUT', '-d', ip, '-j', 'DROP'],
      ['INPUT', '-s', ip, '-j', 'DROP'],
    ]
    for (const r of rules) await this.nsRun(host.ns, ['iptables', '-I', ...r])
    return async () => {
      for (const r of rules) await this.nsRun(host.ns, ['iptables', '-D', ...r])
    }
  }

  /**
   * Silently drops every packet the host sends or receives on its network interface from now on (the host is
   * "gone" as far as anyone can tell: no RST, no FIN, no ICMP); its own loopback still works. Resolves to a
   * function that restores the host.
   */
  async isolate(host: TestbedHost): Promise<() => Promise<void>> {
    const rules = [
      ['OUTPUT', '-o', 'eth0', '-j', 'DROP'],
      ['INPUT', '-i', 'eth0', '-j', 'DROP'],
    ]
    for (const r of rules) await this.nsRun(host.ns, ['iptables', '-I', ...r])
    return async () => {
      for (const r of rules) await this.nsRun(host.ns, ['iptables', '-D', ...r])
    }
  }

  /** Recent output of every process (for failing tests). */
  dump(): string {
    return this.procs.map((p) => p.dump()).join('\n')
  }

  /** Stops every process, deletes every namespace of this run and the scratch directory. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all(this.procs.map((p) => p.stop('SIGTERM', 5_000)))
    this.destroySync()
    if (this.dir != null) await rm(this.dir, { recursive: true, force: true })
  }

  /** Synchronous teardown for process exit and signals: kills what runs in our namespaces and deletes them. */
  destroySync(): void {
    for (const p of this.procs) if (p.running) p.child.kill('SIGKILL')
    for (const ns of [...this.namespaces].reverse()) destroyNamespaceSync(ns)
    this.namespaces.length = 0
    live.delete(this)
  }
}
