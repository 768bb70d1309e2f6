/**
 * Stargate benchmarks: `npm run bench` (full) or `npm run bench -- --quick` (< 3 min).
 * Measures raw baselines (grpc-js, connect-node, libp2p direct/relay, NATS) and Stargate Call per tier
 * in one run, then the ratios between them, failover detection, relay capacity and gateway memory.
 * Every loop is bounded in count and time (see PROFILES). Prints tables, writes
 * bench/results/<timestamp>.json (path printed last) and updates BENCHMARKS.md.
 * `--only raw,api,stargate,tunnel,cold,failover,capacity,pool,idle` runs a subset (for development).
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { cpus, loadavg, totalmem } from 'node:os'
import { join } from 'node:path'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { multiaddr } from '@multiformats/multiaddr'
import { Tier } from '@stargate/shared/gen/gateway'
import { connect as natsConnect } from 'nats'
import { CALL_PROTOCOL } from '../services/gateway/src/peer/frames.ts'
import { type GatewayHandle, Harness, Proc, type RelayHandle } from '../test/lib/harness.ts'
import { netnsUnsupported, Testbed } from '../test/netns/testbed.ts'
import { CallClientJs } from './lib/grpc.ts'
import { cpuMsOf, createBenchNode, ECHO_PROTOCOL, MuxEchoClient, rssAnonOf, rssOf, streamPerCallEcho } from './lib/p2p.ts'
import { renderReport, type TunnelInput } from './lib/report.ts'
import {
  LatencyRecorder,
  type LatencySummary,
  type LoopBounds,
  measureSequential,
  measureThroughput,
  parseBenchArgs,
  type ThroughputSummary,
  warmup,
  withTimeout,
} from './lib/stats.ts'
import { EchoCaller } from './lib/tunnel.ts'
import type { HostRequest, StartedNode } from './workers/p2p-host.ts'

const ROOT = join(import.meta.dirname, '..')
process.env.STARGATE_LOG_LEVEL ??= 'warn'

interface Profile {
  warm: LoopBounds
  seq: LoopBounds
  tput: LoopBounds
  concurrency: number[]
  coldSamples: number
  reservations: number
  circuits: number
  capacityHosts: number
  poolPeers: number
  failoverTimeoutMs: number
  /** Tunnel streams: 64 KiB messages per stream, and streams per direction (the median MB/s is reported). */
  streamMessages: number
  streamRuns: number
}

const PROFILES: Record<'quick' | 'full', Profile> = {
  quick: {
    warm: { maxCalls: 400, maxMs: 1_200 },
    seq: { maxCalls: 300, maxMs: 1_000 },
    tput: { maxCalls: 20_000, maxMs: 600 },
    concurrency: [1, 10, 50],
    coldSamples: 1,
    reservations: 200,
    circuits: 100,
    capacityHosts: 2,
    poolPeers: 50,
    failoverTimeoutMs: 30_000,
    streamMessages: 128,
    streamRuns: 1,
  },
  full: {
    warm: { maxCalls: 500, maxMs: 1_500 },
    seq: { maxCalls: 3_000, maxMs: 5_000 },
    tput: { maxCalls: 200_000, maxMs: 4_000 },
    concurrency: [1, 10, 50],
    coldSamples: 3,
    reservations: 1000,
    circuits: 500,
    capacityHosts: 4,
    poolPeers: 100,
    failoverTimeoutMs: 40_000,
    streamMessages: 1024,
    streamRuns: 3,
  },
}

/** Sequential latency plus throughput at each concurrency. */
export interface LoadFigures {
  seq: LatencySummary
  tput: Record<string, ThroughputSummary>
  /** CPU time per call (µs) of each process involved, during the run at 50 in flight ('bench' = this process, the client). */
  cpuUsPerCallAt50?: Record<string, number>
}

export interface BenchResults {
  startedAt: string
  finishedAt?: string
  mode: 'quick' | 'full'
  machine: { nproc: number; cpuModel: string; memoryGiB: number; node: string; platform: string; loadavg: number[]; loadavgEnd?: number[] }
  bounds: Profile
  raw: Record<string, LoadFigures | undefined>
  stargate: Record<string, LoadFigures | undefined>
  cold: Record<string, { coldMs: number[]; pooledP50Ms: number | null } | undefined>
  failover: Record<string, number | string | null>
  capacity: Record<string, number | string | string[] | null>
  gatewayPool: Record<string, number | null>
  /** Tunnelled EchoService: 'backend' (the client calling the backend itself), then per tier. */
  tunnel: Record<string, TunnelInput | undefined>
  /** Idle RSS (MB) of a fresh gateway and relay. */
  memory: Record<string, number | null>
  notMeasured: string[]
  errors: Record<string, string>
}

const args = parseBenchArgs(process.argv.slice(2))
const P = PROFILES[args.quick ? 'quick' : 'full']
const wants = (s: string): boolean => args.only.length === 0 || args.only.includes(s)
const t0 = Date.now()
const log = (msg: string): void => {
  process.stderr.write(`[bench +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`)
}

const results: BenchResults = {
  startedAt: new Date().toISOString(),
  mode: args.quick ? 'quick' : 'full',
  machine: {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
  },
  bounds: P,
  raw: {},
  stargate: {},
  cold: {},
  failover: {},
  capacity: {},
  gatewayPool: {},
  tunnel: {},
  memory: {},
  notMeasured: [],
  errors: {},
}

const h = new Harness()
const children: ChildProcess[] = []

/** A quick run stops starting work after this long, so that it ends within 3 minutes even on a loaded machine. */
const QUICK_TOTAL_MS = 170_000

async function section(name: string, sectionBudgetMs: number, fn: () => Promise<void>): Promise<void> {
  if (!wants(name)) return
  const left = args.quick ? QUICK_TOTAL_MS - (Date.now() - t0) : Number.POSITIVE_INFINITY
  if (left < 5_000) {
    results.errors[name] = `skipped: the quick run's ${QUICK_TOTAL_MS / 1000} s budget is used up (machine loaded?)`
    log(`${name}: skipped`)
    return
  }
  const budgetMs = Math.min(sectionBudgetMs, left)
  log(`${name}: start (budget ${Math.round(budgetMs / 1000)} s)`)
  try {
    await withTimeout(fn(), budgetMs, name)
  } catch (err: unknown) {
    results.errors[name] = err instanceof Error ? err.message.split('\n')[0]! : String(err)
    log(`${name}: FAILED ${results.errors[name]}`)
  }
  log(`${name}: done`)
}

async function load(fn: () => Promise<unknown>, pids: Record<string, number | undefined> = {}): Promise<LoadFigures> {
  await warmup(fn, P.warm, 10)
  const seq = await measureSequential(fn, P.seq)
  const tput: Record<string, ThroughputSummary> = {}
  let cpu: Record<string, number> | undefined
  for (const c of P.concurrency) {
    const before = await cpuSnapshot(pids)
    tput[`c${c}`] = await measureThroughput(fn, c, P.tput)
    if (c === 50) cpu = await cpuPerCall(before, pids, tput[`c${c}`]!.count)
  }
  return { seq, tput, ...(cpu != null ? { cpuUsPerCallAt50: cpu } : {}) }
}

async function cpuSnapshot(pids: Record<string, number | undefined>): Promise<Record<string, number>> {
  const out: Record<string, number> = { bench: (process.cpuUsage().user + process.cpuUsage().system) / 1000 }
  for (const [k, pid] of Object.entries(pids)) if (pid != null) out[k] = await cpuMsOf(pid)
  return out
}

async function cpuPerCall(
  before: Record<string, number>,
  pids: Record<string, number | undefined>,
  calls: number,
): Promise<Record<string, number>> {
  const after = await cpuSnapshot(pids)
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(after)) out[k] = calls > 0 ? Math.round(((v - (before[k] ?? v)) * 1000) / calls) : 0
  return out
}

/** Calls fn until it succeeds (undefined), fails for good or timeoutMs passed (the last error's message). */
async function firstCall(fn: () => Promise<unknown>, timeoutMs: number, fatal: RegExp): Promise<string | undefined> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      await fn()
      return undefined
    } catch (err: unknown) {
      const why = err instanceof Error ? err.message : String(err)
      if (Date.now() > end || fatal.test(why)) return why
    }
    await sleep(200)
  }
}

/** Starts bench/workers/servers.ts in one mode; resolves with its port once serving. */
async function startServer(mode: string, extra: string[] = []): Promise<{ port: number; pid: number }> {
  const child = spawn(process.execPath, [join(import.meta.dirname, 'workers/servers.ts'), mode, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const proc = new Proc(`bench-${mode}`, child)
  h.procs.push(proc)
  const [, port] = await proc.waitFor(/^READY (\d+)/)
  return { port: Number(port), pid: child.pid! }
}

/** Unary echo calls (grpc-js client) against one of the raw echo servers, with the server's CPU per call. */
async function loadEchoServer(mode: 'grpc' | 'connect' | 'api'): Promise<LoadFigures> {
  const server = await startServer(mode)
  const client = new CallClientJs(`127.0.0.1:${server.port}`)
  try {
    return await load(() => client.call({ peerId: 'x', method: 'echo', payload: json({ n: 1 }) }), { server: server.pid })
  } finally {
    client.close()
  }
}

/** A forked p2p-host worker with a request/reply helper over IPC. */
interface Host {
  child: ChildProcess
  request<T>(req: HostRequest, timeoutMs: number): Promise<T>
  stop(): Promise<void>
}

async function forkHost(name: string): Promise<Host> {
  const child = fork(join(import.meta.dirname, 'workers/p2p-host.ts'), [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] })
  children.push(child)
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000)
  })
  const waiters = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  child.on('message', (m: { seq: number; value?: unknown; error?: string }) => {
    const w = waiters.get(m.seq)
    waiters.delete(m.seq)
    if (m.error != null) w?.reject(new Error(`${name}: ${m.error}`))
    else w?.resolve(m.value)
  })
  child.on('exit', (code) => {
    for (const w of waiters.values()) w.reject(new Error(`${name} exited with ${code}: ${stderr}`))
    waiters.clear()
  })
  let seq = 0
  const request = <T>(req: HostRequest, timeoutMs: number): Promise<T> => {
    const s = seq++
    const p = new Promise<T>((resolve, reject) => waiters.set(s, { resolve: resolve as (v: unknown) => void, reject }))
    child.send({ seq: s, req })
    return withTimeout(p, timeoutMs, `${name} ${req.op}`)
  }
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      waiters.set(0, { resolve: () => resolve(), reject })
    }),
    20_000,
    `${name} start`,
  )
  seq = 1
  return {
    child,
    request,
    stop: async () => {
      if (child.exitCode != null) return
      await request({ op: 'stop' }, 10_000).catch(() => child.kill('SIGKILL'))
    },
  }
}

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })
const PAYLOAD = new Uint8Array(64).fill(7)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function pollUntil<T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(everyMs)
  }
}

let relay: RelayHandle | undefined
let nats: { url: string; proc: Proc } | undefined

try {
  // ---------------------------------------------------------------- raw baselines
  await section('raw', args.quick ? 60_000 : 240_000, async () => {
    relay ??= await h.relay()
    nats ??= await h.nats()

    results.raw.grpc = await loadEchoServer('grpc')
    log('raw grpc-js done')
    results.raw.connect = await loadEchoServer('connect')
    log('raw connect-node done')

    const host = await forkHost('echo-host')
    const [target] = (
      await host.request<{ nodes: StartedNode[]; errors: string[] }>(
        { op: 'start', count: 1, listenTcp: true, relay: relay.multiaddr, protocol: 'echo' },
        30_000,
      )
    ).nodes
    if (target == null) throw new Error('echo host did not start')
    const node = await createBenchNode({ listen: [] })
    try {
      const tcpAddr = target.addrs.find((a) => !a.includes('/p2p-circuit'))!
      const direct = await node.dial(multiaddr(tcpAddr))
      const mux = new MuxEchoClient(await direct.newStream(ECHO_PROTOCOL))
      const echoPids = { server: host.child.pid }
      results.raw.libp2pDirectMux = await load(() => mux.call(PAYLOAD), echoPids)
      results.raw.libp2pDirectStreamPerCall = await load(() => streamPerCallEcho(() => direct.newStream(ECHO_PROTOCOL), PAYLOAD), echoPids)
      log('raw libp2p direct done')
      const circuit = await node.dial(multiaddr(`${relay.multiaddr}/p2p-circuit/p2p/${target.peerId}`), { force: true })
      if (!circuit.remoteAddr.toString().includes('/p2p-circuit')) throw new Error('relayed dial did not use a circuit')
      const rmux = new MuxEchoClient(await circuit.newStream(ECHO_PROTOCOL, { runOnLimitedConnection: true }))
      const relayPids = { server: host.child.pid, relay: relay.proc.child.pid }
      results.raw.libp2pRelayMux = await load(() => rmux.call(PAYLOAD), relayPids)
      results.raw.libp2pRelayStreamPerCall = await load(
        () => streamPerCallEcho(() => circuit.newStream(ECHO_PROTOCOL, { runOnLimitedConnection: true }), PAYLOAD),
        relayPids,
      )
      log('raw libp2p relay done')
    } finally {
      await node.stop()
      await host.stop()
    }

    const responder = await startServer('nats', [nats.url])
    const nc = await natsConnect({ servers: nats.url })
    try {
      results.raw.nats = await load(() => nc.request('bench.echo', PAYLOAD, { timeout: 5_000 }), {
        server: responder.pid,
        'nats-server': nats.proc.child.pid,
      })
    } finally {
      await nc.close()
    }
    log('raw nats done')
  })

  // ---------------------------------------------------------------- the API server vs raw grpc-js
  await section('api', args.quick ? 40_000 : 120_000, async () => {
    // Same client, same messages: grpc-js's own server (measured in 'raw', or here when raw is skipped)
    // against Stargate's API server answering the same echo.
    results.raw.grpc ??= await loadEchoServer('grpc')
    results.raw.api = await loadEchoServer('api')
    log('raw api server done')
  })

  // ---------------------------------------------------------------- Stargate Call per tier
  let a: GatewayHandle | undefined
  let b: GatewayHandle | undefined
  let serve: Proc | undefined
  const gwFlags = (): string[] => ['--relay', relay!.multiaddr, '--nats', nats!.url, '--relay-health-interval-ms', '1000']
  const waitRelayReady = async (g: GatewayHandle): Promise<void> => {
    await pollUntil(
      async () => {
        const r = await g.client.getRelayHealth({})
        return r.relays.some((x) => x.isHealthy && x.reserved) ? true : undefined
      },
      20_000,
      'relay reservation',
    )
  }
  const TIERS: Array<[string, Tier]> = [
    ['direct', Tier.DIRECT],
    ['relay', Tier.RELAY],
    ['nats', Tier.NATS],
  ]
  const callVia = (client: CallClientJs, peerId: string, method: string, tier: Tier) => async () => {
    const res = await client.call({ peerId, method, payload: json({ n: 1 }), options: { allowedTiers: [tier], maxRetries: 0 } })
    if (res.tier !== tier) throw new Error(`answered on tier ${Tier[res.tier]}, wanted ${Tier[tier]}`)
    return res
  }
  const startPair = async (): Promise<void> => {
    relay ??= await h.relay()
    nats ??= await h.nats()
    b = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...gwFlags()], { name: 'gateway-b' })
    serve = await h.serveClient(b.api)
    a = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...gwFlags(), '--peer', `${b.peerId}=${b.multiaddrs[0]}`], {
      name: 'gateway-a',
    })
    await waitRelayReady(b)
    await waitRelayReady(a)
  }

  await section('cold', args.quick ? 45_000 : 120_000, async () => {
    if (a == null) await startPair()
    // A fresh caller per sample: its first call on each tier opens the connection/stream; then pooled.
    for (let s = 0; s < P.coldSamples; s++) {
      const caller = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...gwFlags(), '--peer', `${b!.peerId}=${b!.multiaddrs[0]}`], {
        name: `cold-caller-${s}`,
      })
      await waitRelayReady(caller)
      const client = new CallClientJs(caller.api)
      await client.call({ peerId: caller.peerId, method: 'ping', payload: json(0) }).catch(() => undefined) // warm the API hop only
      for (const [name, tier] of TIERS) {
        const fn = callVia(client, b!.peerId, 'ping', tier)
        const c0 = performance.now()
        await fn()
        const coldMs = Math.round((performance.now() - c0) * 1000) / 1000
        const pooled = await measureSequential(fn, { maxCalls: 50, maxMs: 1_000 })
        results.cold[name] ??= { coldMs: [], pooledP50Ms: null }
        const entry = results.cold[name]
        entry.coldMs.push(coldMs)
        entry.pooledP50Ms = pooled.p50Ms
      }
      client.close()
      await caller.proc.stop()
    }
  })

  await section('stargate', args.quick ? 75_000 : 400_000, async () => {
    if (a == null) await startPair()
    const client = new CallClientJs(a!.api)
    try {
      for (const [name, tier] of TIERS) {
        for (const method of ['ping', 'echo']) {
          const pids: Record<string, number | undefined> = { 'gateway-a': a!.proc.child.pid, 'gateway-b': b!.proc.child.pid }
          if (method === 'echo') pids['serve-client'] = serve?.child.pid
          if (tier === Tier.RELAY) pids.relay = relay?.proc.child.pid
          if (tier === Tier.NATS) pids['nats-server'] = nats?.proc.child.pid
          results.stargate[`${name}.${method}`] = await load(callVia(client, b!.peerId, method, tier), pids)
          log(`stargate ${name} ${method} done`)
        }
      }
    } finally {
      client.close()
    }
  })

  // ---------------------------------------------------------------- tunnelled gRPC per tier
  // What the router says while the NATS tier cannot carry tunnelled streams (tiers/nats.ts).
  const NATS_NO_STREAMS = /not supported on the NATS tier/
  await section('tunnel', args.quick ? 75_000 : 400_000, async () => {
    relay ??= await h.relay()
    nats ??= await h.nats()
    const backend = await startServer('echo')
    const expose = ['--expose', `stargate.test.v1.EchoService=127.0.0.1:${backend.port}`]
    // One callee per tier, each reachable only that way: B-direct listens (and A is told its address),
    // B-relay holds a reservation on the relay, B-nats is only on NATS.
    const bd = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...expose], { name: 'tunnel-b-direct' })
    const br = await h.gateway(['--relay', relay.multiaddr, ...expose], { name: 'tunnel-b-relay' })
    const bn = await h.gateway(['--nats', nats.url, ...expose], { name: 'tunnel-b-nats' })
    const ta = await h.gateway(['--relay', relay.multiaddr, '--nats', nats.url, '--peer', `${bd.peerId}=${bd.multiaddrs[0]}`], {
      name: 'tunnel-a',
    })
    await waitRelayReady(br)
    await waitRelayReady(ta)
    const runs: Array<[string, EchoCaller, Record<string, number | undefined>]> = [
      ['backend', new EchoCaller(`127.0.0.1:${backend.port}`), { server: backend.pid }],
      [
        'direct',
        new EchoCaller(ta.api, bd.peerId),
        { 'gateway-a': ta.proc.child.pid, 'gateway-b': bd.proc.child.pid, server: backend.pid },
      ],
      [
        'relay',
        new EchoCaller(ta.api, br.peerId),
        { 'gateway-a': ta.proc.child.pid, 'gateway-b': br.proc.child.pid, server: backend.pid, relay: relay.proc.child.pid },
      ],
      [
        'nats',
        new EchoCaller(ta.api, bn.peerId),
        { 'gateway-a': ta.proc.child.pid, 'gateway-b': bn.proc.child.pid, server: backend.pid, 'nats-server': nats.proc.child.pid },
      ],
    ]
    try {
      for (const [name, caller, pids] of runs) {
        // The first call alone: it establishes the link (concurrent first calls would each open one).
        const why = await firstCall(() => caller.unary(), 20_000, NATS_NO_STREAMS)
        if (why != null) {
          if (NATS_NO_STREAMS.test(why)) {
            results.notMeasured.push('tunnel over NATS: the NATS tier does not carry tunnelled streams yet')
          } else {
            results.errors[`tunnel.${name}`] = why.split('\n')[0]!
          }
          continue
        }
        const figures: TunnelInput = await load(() => caller.unary(), pids)
        const mbps = async (fn: () => Promise<number>): Promise<number | null> => {
          const rates: number[] = []
          for (let i = 0; i < P.streamRuns; i++) {
            const t0 = performance.now()
            const bytes = await fn()
            rates.push(Math.round((bytes / ((performance.now() - t0) / 1000) / 1e6) * 10) / 10)
          }
          return rates.sort((x, y) => x - y)[Math.floor(rates.length / 2)] ?? null
        }
        figures.streamMBps = {
          download: await mbps(() => caller.download(P.streamMessages)),
          upload: await mbps(() => caller.upload(P.streamMessages)),
        }
        results.tunnel[name] = figures
        log(`tunnel ${name} done`)
      }
    } finally {
      for (const [, caller] of runs) caller.close()
      await Promise.all([ta, bd, br, bn].map((g) => g.proc.stop()))
    }
  })

  // ---------------------------------------------------------------- failover
  await section('failover', args.quick ? 45_000 : 60_000, async () => {
    const r = await h.relay([], { name: 'relay-failover' })
    const g = await h.gateway(['--relay', r.multiaddr], { name: 'gateway-failover' }) // default health interval
    await pollUntil(
      async () => ((await g.client.getRelayHealth({})).relays.some((x) => x.isHealthy && x.reserved) ? true : undefined),
      20_000,
      'failover gateway reservation',
    )
    // What an event-driven check could achieve: a libp2p node connected to the same relay sees the
    // connection close ('peer:disconnect') as soon as the kernel resets the socket.
    const watcher = await createBenchNode()
    await watcher.dial(multiaddr(r.multiaddr))
    let disconnectedAt: number | undefined
    watcher.addEventListener('peer:disconnect', (evt) => {
      if (evt.detail.toString() === r.peerId) disconnectedAt ??= performance.now()
    })
    const killedAt = performance.now()
    await r.proc.stop('SIGKILL')
    const detected = await pollUntil(
      async () => ((await g.client.getRelayHealth({})).relays.some((x) => !x.isHealthy) ? performance.now() : undefined),
      P.failoverTimeoutMs,
      'relay failure detection',
      25,
    )
    results.failover.relayDetectionMs = Math.round(detected - killedAt)
    results.failover.relayConnectionCloseSeenMs = disconnectedAt == null ? null : Math.round(disconnectedAt - killedAt)
    await watcher.stop()
    results.failover.relayHealthIntervalMs = 5_000
    await g.proc.stop()
  })
  // ---------------------------------------------------------------- silently dropped direct path (netns)
  const netnsSkip = netnsUnsupported()
  results.failover.silentDirectDropAnswerP50Ms = null
  if (netnsSkip != null) {
    results.notMeasured.push(`silently dropped direct path: not measured here (${netnsSkip})`)
  } else {
    await section('netns', args.quick ? 60_000 : 120_000, async () => {
      const tb = await Testbed.create()
      try {
        const relayHost = await tb.host('relay', 'public')
        const natsHost = await tb.host('nats', 'public')
        const pubHost = await tb.host('pub', 'public')
        const fwHost = await tb.host('fw', { kind: 'firewall', allow: [relayHost, natsHost] })
        const relay = await tb.relay(relayHost)
        const nats = await tb.nats(natsHost)
        // cool-down 1 ms: every call tries the (dropped) direct path first, so every call measures the failover
        const common = ['--relay', relay.multiaddr, '--nats', nats.url, '--tier-cooldown-ms', '1']
        const pub = await tb.gateway(pubHost, ['--p2p-listen', `/ip4/${pubHost.ip}/tcp/4011`, ...common])
        const fw = await tb.gateway(fwHost, ['--p2p-listen', `/ip4/${fwHost.ip}/tcp/4013`, ...common])
        const serve = tb.spawn(pubHost, [process.execPath, join(ROOT, 'examples/node/serve-client.ts'), pub.api, 'echo'])
        await serve.waitFor(/^REGISTERED /)
        await pollUntil(
          async () => {
            const peers = (await tb.grpcurl(fwHost, fw.api, 'stargate.v1.GatewayService/ListPeers')) as {
              peers?: Array<{ peerId: string }>
            }
            return peers.peers?.some((p) => p.peerId === pub.peerId) === true ? true : undefined
          },
          30_000,
          'presence of the public peer',
        )
        const overhead = new LatencyRecorder()
        const answer = new LatencyRecorder()
        const n = args.quick ? 8 : 20
        for (let i = 0; i < n; i++) {
          const t0 = performance.now()
          await tb.grpcurl(fwHost, fw.api, 'stargate.v1.GatewayService/GetStatus')
          overhead.record(performance.now() - t0)
          const t1 = performance.now()
          const res = (await tb.grpcurl(fwHost, fw.api, 'stargate.v1.GatewayService/Call', {
            peer_id: pub.peerId,
            method: 'echo',
            json: { i },
          })) as { tier?: string }
          if (res.tier !== 'TIER_RELAY') throw new Error(`expected the relay to answer, got ${res.tier}`)
          answer.record(performance.now() - t1)
        }
        // grpcurl's own start-up is measured with GetStatus on the same local API and subtracted
        results.failover.silentDirectDropAnswerP50Ms = Math.max(0, Math.round(answer.percentileMs(50) - overhead.percentileMs(50)))
        results.failover.silentDirectDropAnswerP90Ms = Math.max(0, Math.round(answer.percentileMs(90) - overhead.percentileMs(50)))
        results.failover.silentDirectDropCalls = n
      } finally {
        await tb.close()
      }
    })
  }

  // ---------------------------------------------------------------- relay capacity
  await section('capacity', args.quick ? 60_000 : 400_000, async () => {
    const rc = await h.relay(
      [
        '--max-connections',
        String(P.reservations * 3),
        '--max-reservations',
        String(P.reservations * 2),
        '--max-connections-per-ip-per-second',
        '100000',
        '--max-reservations-per-ip-per-second',
        '100000',
        '--max-reservations-per-ip',
        String(P.reservations * 2),
        // every circuit comes from 127.0.0.1 too
        '--max-circuits-per-ip',
        String(P.circuits * 2),
        '--max-circuits-per-ip-per-second',
        '100000',
      ],
      { name: 'relay-capacity' },
    )
    const pid = rc.proc.child.pid!
    await sleep(500)
    const rss0 = await rssOf(pid)
    const hosts: Host[] = []
    for (let i = 0; i < P.capacityHosts; i++) hosts.push(await forkHost(`capacity-host-${i}`))
    try {
      const per = Math.ceil(P.reservations / P.capacityHosts)
      const reserveMs = args.quick ? 25_000 : 200_000
      const circuitMs = args.quick ? 15_000 : 90_000
      const started = await Promise.all(
        hosts.map((x) =>
          x.request<{ nodes: StartedNode[]; errors: string[]; ms: number }>(
            // fewer handshakes at once per host: on 2 shared cores, 100 concurrent ones starve each other past the per-node wait
            {
              op: 'start',
              count: per,
              listenTcp: false,
              relay: rc.multiaddr,
              protocol: 'echo',
              parallel: args.quick ? 25 : 12,
              deadlineMs: reserveMs,
            },
            reserveMs + 40_000,
          ),
        ),
      )
      const stats1 = await rc.client.getRelayStats({})
      const rss1 = await rssOf(pid)
      results.capacity.reservationsAttempted = per * P.capacityHosts
      results.capacity.reservations = stats1.reservations
      results.capacity.reservationErrors = started.flatMap((s) => s.errors)
      results.capacity.reservationsPerSecond = Math.round((stats1.reservations / Math.max(...started.map((s) => s.ms))) * 1000)
      results.capacity.connectionsAfterReservations = stats1.connections
      results.capacity.relayRssBaseMB = Math.round(rss0 / 1024 / 102.4) / 10
      results.capacity.relayRssPerReservationKB = stats1.reservations > 0 ? Math.round((rss1 - rss0) / stats1.reservations / 1024) : null
      log(`capacity: ${stats1.reservations} reservations`)
      const perHost = Math.ceil(P.circuits / P.capacityHosts)
      const opened = await Promise.all(
        hosts.map((x, i) =>
          x.request<{ opened: number; errors: string[]; ms: number }>(
            {
              op: 'circuits',
              relay: rc.multiaddr,
              // dialers are a host's first ready nodes; targets the other host's last ones (disjoint pairs)
              targets: started[(i + 1) % started.length]!.nodes.slice(-perHost).map((n) => n.peerId),
              parallel: args.quick ? 25 : 12,
              deadlineMs: circuitMs,
            },
            circuitMs + 40_000,
          ),
        ),
      )
      await sleep(1_000)
      const stats2 = await rc.client.getRelayStats({})
      const held = await Promise.all(
        hosts.map((x) => x.request<{ held: number; open: number; statuses: string[] }>({ op: 'held' }, 10_000)),
      )
      results.capacity.circuitStreamsStillOpenAtDialers = held.reduce((s, x) => s + x.open, 0)
      const rss2 = await rssOf(pid)
      results.capacity.circuitsAttempted = perHost * P.capacityHosts
      results.capacity.circuitsOpened = opened.reduce((s, o) => s + o.opened, 0)
      results.capacity.activeCircuits = stats2.activeCircuits
      results.capacity.circuitErrors = opened.flatMap((o) => o.errors)
      results.capacity.circuitsPerSecond = Math.round((results.capacity.circuitsOpened / Math.max(...opened.map((o) => o.ms))) * 1000)
      results.capacity.relayRssPerCircuitKB = stats2.activeCircuits > 0 ? Math.round((rss2 - rss1) / stats2.activeCircuits / 1024) : null
      results.capacity.relayRssTotalMB = Math.round(rss2 / 1024 / 102.4) / 10
      const stillReserved = (await rc.client.getRelayStats({})).reservations
      results.capacity.reservationsHeldWithCircuits = stillReserved
    } finally {
      await Promise.all(hosts.map((x) => x.stop()))
      await rc.proc.stop()
    }
  })

  // ---------------------------------------------------------------- gateway RSS per pooled peer
  await section('pool', args.quick ? 45_000 : 90_000, async () => {
    const host = await forkHost('pool-peers')
    try {
      const { nodes } = await host.request<{ nodes: StartedNode[]; errors: string[] }>(
        { op: 'start', count: P.poolPeers + 1, listenTcp: true, protocol: 'call', parallel: 20 },
        30_000,
      )
      // Raw baseline: a fresh process holds one idle libp2p connection + one open call stream per peer.
      const dialer = await forkHost('pool-raw-dialer')
      try {
        const r = await dialer.request<{ connected: number; rssBefore: number; rssAfter: number }>(
          { op: 'connect', addrs: nodes.slice(1).map((n) => n.addrs[0]!), protocol: CALL_PROTOCOL },
          60_000,
        )
        results.gatewayPool.rawLibp2pRssPerConnectionKB = Math.round((r.rssAfter - r.rssBefore) / r.connected / 1024)
      } finally {
        await dialer.stop()
      }
      const peerFlags = nodes.flatMap((n) => ['--peer', `${n.peerId}=${n.addrs[0]}`])
      const g = await h.gateway(['--pool-max-peers', String(P.poolPeers + 10), ...peerFlags], { name: 'gateway-pool' })
      const client = new CallClientJs(g.api)
      const pid = g.proc.child.pid!
      const call = (peerId: string) => async () => {
        const res = await client.call({ peerId, method: 'ping', payload: json(1), options: { allowedTiers: [Tier.DIRECT], maxRetries: 0 } })
        if (res.tier !== Tier.DIRECT) throw new Error('not direct')
      }
      // Warm every code path on one peer, then settle, then pool the others.
      await measureSequential(call(nodes[0]!.peerId), { maxCalls: 200, maxMs: 2_000 })
      await sleep(1_500)
      const rss0 = await rssOf(pid)
      let next = 1
      const worker = async (): Promise<void> => {
        while (next < nodes.length) await call(nodes[next++]!.peerId)()
      }
      await Promise.all(Array.from({ length: 10 }, () => worker()))
      await sleep(1_500)
      const rss1 = await rssOf(pid)
      const pool = await g.client.getPoolStats({})
      results.gatewayPool.pooledPeers = pool.size
      results.gatewayPool.gatewayRssBaseMB = Math.round(rss0 / 1024 / 102.4) / 10
      results.gatewayPool.gatewayRssPooledMB = Math.round(rss1 / 1024 / 102.4) / 10
      results.gatewayPool.rssPerPooledPeerKB = pool.size > 1 ? Math.round((rss1 - rss0) / (pool.size - 1) / 1024) : null
      client.close()
      await g.proc.stop()
    } finally {
      await host.stop()
    }
  })
  // ---------------------------------------------------------------- idle memory
  await section('idle', 40_000, async () => {
    nats ??= await h.nats()
    const r = await h.relay([], { name: 'relay-idle' })
    const g = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--relay', r.multiaddr, '--nats', nats.url], {
      name: 'gateway-idle',
    })
    try {
      await waitRelayReady(g)
      // Started, reservation held, connected to NATS, no call made: settled for a few seconds.
      await sleep(3_000)
      const mb = (bytes: number): number => Math.round(bytes / 1024 / 102.4) / 10
      results.memory.gatewayIdleRssMB = mb(await rssOf(g.proc.child.pid!))
      results.memory.relayIdleRssMB = mb(await rssOf(r.proc.child.pid!))
      results.memory.gatewayIdleAnonMB = mb(await rssAnonOf(g.proc.child.pid!))
      results.memory.relayIdleAnonMB = mb(await rssAnonOf(r.proc.child.pid!))
      // The raw baseline: the same node binary with the launcher's V8 flags, running nothing.
      const bare = spawn(process.execPath, ['--max-semi-space-size=8', '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
      try {
        await sleep(1_000)
        results.memory.bareNodeRssMB = mb(await rssOf(bare.pid!))
        results.memory.bareNodeAnonMB = mb(await rssAnonOf(bare.pid!))
      } finally {
        bare.kill('SIGKILL')
      }
    } finally {
      await g.proc.stop()
      await r.proc.stop()
    }
  })
} finally {
  await h.close().catch(() => {})
  for (const c of children) if (c.exitCode == null) c.kill('SIGKILL')
}

results.finishedAt = new Date().toISOString()
results.machine.loadavgEnd = loadavg().map((x) => Math.round(x * 100) / 100)
const report = renderReport(results)
process.stdout.write(`${report.text}\n`)
const outDir = join(import.meta.dirname, 'results')
await mkdir(outDir, { recursive: true })
const outPath = join(outDir, `${results.startedAt.replaceAll(':', '-').replace(/\.\d+Z$/, 'Z')}.json`)
await writeFile(outPath, `${JSON.stringify({ ...results, ratios: report.ratios, targets: report.targets }, null, 2)}\n`)
// Keep `biome check .` clean (it does not read .gitignore): print the file the way the formatter does.
spawnSync(join(ROOT, 'node_modules/.bin/biome'), ['format', '--write', outPath], { stdio: 'ignore' })

const mdPath = join(ROOT, 'BENCHMARKS.md')
const md = existsSync(mdPath) ? await readFile(mdPath, 'utf8') : ''
const hasResults = md.includes('<!-- bench:results:start -->')
// A full run of every section rewrites the results; quick or partial runs only fill an empty file.
if ((!args.quick && args.only.length === 0) || !hasResults || process.env.BENCH_WRITE_MD === '1') {
  await writeFile(mdPath, report.updateMarkdown(md, outPath.slice(ROOT.length + 1)))
  log(`updated ${mdPath}`)
}
log(`total ${((Date.now() - t0) / 1000).toFixed(0)} s`)
process.stdout.write(`${outPath}\n`)
process.exit(0)
