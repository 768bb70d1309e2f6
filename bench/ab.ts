/**
 * Interleaved A/B of two checkouts of Stargate on one machine, for decisions on a shared, loaded machine:
 * each side runs its own relay, nats-server, gateway B (with a Serve client and, for tunnel workloads, an
 * exposed EchoService backend) and gateway A, all from its own checkout; rounds alternate between the
 * sides (A B, B A, A B, ...), so the machine's load falls on both alike, and every round records the CPU
 * time per operation of each process (from /proc): the steady figure when wall-clock latency moves with
 * other people's work.
 *
 *   node bench/ab.ts --a CHECKOUT --b CHECKOUT [--workload call|tunnel|download|upload]
 *                    [--tier direct|relay|nats] [--method ping|echo] [--rounds 8] [--calls 3000]
 *                    [--concurrency 50] [--env-a K=V] [--env-b K=V] [--prof DIR]
 *
 * call: GatewayService/Call to B's `--method`, forced onto `--tier`; tunnel: unary EchoService calls
 * tunnelled to B (direct when --tier direct, through the relay to a B that only holds a reservation when
 * --tier relay); download/upload: `--calls` 64 KiB messages streamed per round through the tunnel, CPU per
 * MiB. A checkout is a directory with services/ and test/ (a git worktree, or `git archive` of a commit
 * with node_modules linked in). --prof DIR writes V8 CPU profiles of both sides' gateways into DIR/{a,b}.
 */
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Tier } from '@stargate/shared/gen/gateway'
import type { GatewayHandle, Harness as HarnessType, Proc } from '../test/lib/harness.ts'
import { CallClientJs } from './lib/grpc.ts'
import { cpuMsOf, rssOf } from './lib/p2p.ts'
import { measureThroughput } from './lib/stats.ts'
import { EchoCaller, STREAM_MESSAGE_BYTES } from './lib/tunnel.ts'

const { values } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string', default: '.' },
    workload: { type: 'string', default: 'call' },
    tier: { type: 'string', default: 'direct' },
    method: { type: 'string', default: 'ping' },
    rounds: { type: 'string', default: '8' },
    calls: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '50' },
    'env-a': { type: 'string', multiple: true, default: [] },
    'env-b': { type: 'string', multiple: true, default: [] },
    prof: { type: 'string' },
  },
})
if (values.a == null) throw new Error('--a CHECKOUT is required')
process.env.STARGATE_LOG_LEVEL ??= 'warn'
const TIERS: Record<string, Tier> = { direct: Tier.DIRECT, relay: Tier.RELAY, nats: Tier.NATS }
const tier = TIERS[values.tier]
if (tier == null) throw new Error(`--tier must be direct, relay or nats, got ${values.tier}`)
const workload = values.workload
if (!['call', 'tunnel', 'download', 'upload'].includes(workload)) throw new Error(`unknown --workload ${workload}`)
const streaming = workload === 'download' || workload === 'upload'
const rounds = Number(values.rounds)
const calls = Number(values.calls)
const concurrency = Number(values.concurrency)

const envOf = (pairs: string[], prof?: string): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const p of pairs) {
    const eq = p.indexOf('=')
    env[p.slice(0, eq)] = p.slice(eq + 1)
  }
  if (prof != null) env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-interval=250 --cpu-prof-dir=${prof}`.trim()
  return env
}

interface Side {
  name: string
  h: HarnessType
  b: GatewayHandle
  pids: Record<string, number>
  op: () => Promise<unknown>
  close: () => void
  samples: Array<Record<string, number>>
  rates: number[]
}

async function relayReady(g: GatewayHandle): Promise<void> {
  for (let i = 0; ; i++) {
    const r = await g.client.getRelayHealth({})
    if (r.relays.some((x) => x.isHealthy && x.reserved)) return
    if (i > 400) throw new Error('no relay reservation')
    await new Promise((r) => setTimeout(r, 50))
  }
}

let shown = 0
const reported =
  (name: string, fn: () => Promise<unknown>): (() => Promise<unknown>) =>
  () =>
    fn().catch((err: unknown) => {
      if (shown++ < 3) process.stderr.write(`${name}: ${String(err)}\n`)
      throw err
    })

async function startSide(name: string, checkout: string, env: NodeJS.ProcessEnv): Promise<Side> {
  const { Harness } = (await import(join(resolve(checkout), 'test/lib/harness.ts'))) as { Harness: new () => HarnessType }
  const h = new Harness()
  const relay = await h.relay()
  const nats = await h.nats()
  const pids: Record<string, number> = { relay: relay.proc.child.pid!, 'nats-server': nats.proc.child.pid! }
  const common = ['--relay', relay.multiaddr, '--nats', nats.url, '--relay-health-interval-ms', '1000']
  if (workload === 'call') {
    const flags = ['--p2p-listen', '/ip4/127.0.0.1/tcp/0', ...common]
    const b = await h.gateway(flags, { name: `${name}-gateway-b`, env })
    const serve: Proc = await h.serveClient(b.api)
    const a = await h.gateway([...flags, '--peer', `${b.peerId}=${b.multiaddrs[0]}`], { name: `${name}-gateway-a`, env })
    await Promise.all([relayReady(a), relayReady(b)])
    const client = new CallClientJs(a.api)
    const payload = { case: 'json' as const, value: fromJson(ValueSchema, { n: 1 }) }
    const op = reported(name, async () => {
      const res = await client.call({ peerId: b.peerId, method: values.method, payload, options: { allowedTiers: [tier], maxRetries: 0 } })
      if (res.tier !== tier) throw new Error(`answered on ${Tier[res.tier]}`)
    })
    Object.assign(pids, { 'gateway-a': a.proc.child.pid!, 'gateway-b': b.proc.child.pid!, 'serve-client': serve.child.pid! })
    return { name, h, b, pids, op, close: () => client.close(), samples: [], rates: [] }
  }
  // Tunnel workloads: B exposes an EchoService backend (this checkout's bench worker, in its own process).
  const { spawn } = await import('node:child_process')
  const { Proc: ProcClass } = (await import(join(resolve(checkout), 'test/lib/harness.ts'))) as { Proc: typeof Proc }
  const child = spawn(process.execPath, [join(import.meta.dirname, 'workers/servers.ts'), 'echo'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const backend = new ProcClass(`${name}-backend`, child)
  h.procs.push(backend)
  const [, port] = await backend.waitFor(/^READY (\d+)/)
  const expose = ['--expose', `stargate.test.v1.EchoService=127.0.0.1:${port}`]
  const direct = values.tier === 'direct'
  const b = await h.gateway([...(direct ? ['--p2p-listen', '/ip4/127.0.0.1/tcp/0'] : []), ...common, ...expose], {
    name: `${name}-gateway-b`,
    env,
  })
  const a = await h.gateway([...common, ...(direct ? ['--peer', `${b.peerId}=${b.multiaddrs[0]}`] : [])], {
    name: `${name}-gateway-a`,
    env,
  })
  await Promise.all([relayReady(a), relayReady(b)])
  const caller = new EchoCaller(a.api, b.peerId)
  const op =
    workload === 'tunnel'
      ? reported(name, () => caller.unary())
      : reported(name, () => (workload === 'download' ? caller.download(calls) : caller.upload(calls)))
  Object.assign(pids, { 'gateway-a': a.proc.child.pid!, 'gateway-b': b.proc.child.pid!, backend: child.pid! })
  return { name, h, b, pids, op, close: () => caller.close(), samples: [], rates: [] }
}

async function round(s: Side): Promise<void> {
  const cpu = async (): Promise<Record<string, number>> => {
    const u = process.cpuUsage()
    const out: Record<string, number> = { bench: (u.user + u.system) / 1000 }
    for (const [k, pid] of Object.entries(s.pids)) out[k] = await cpuMsOf(pid)
    return out
  }
  const before = await cpu()
  let units: number
  if (streaming) {
    const t0 = performance.now()
    await s.op()
    const seconds = (performance.now() - t0) / 1000
    units = (calls * STREAM_MESSAGE_BYTES) / 2 ** 20 // MiB
    s.rates.push(units / seconds)
  } else {
    const t = await measureThroughput(s.op, concurrency, { maxCalls: calls, maxMs: 120_000 })
    units = t.count
    s.rates.push(t.rps)
    if (t.errors > 0) process.stderr.write(`${s.name}: ${t.errors} errors\n`)
  }
  const after = await cpu()
  const sample: Record<string, number> = {}
  for (const k of Object.keys(after)) sample[k] = ((after[k]! - before[k]!) * 1000) / units
  s.samples.push(sample)
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

const sides: Side[] = []
try {
  sides.push(await startSide('a', values.a, envOf(values['env-a'], values.prof != null ? join(values.prof, 'a') : undefined)))
  sides.push(await startSide('b', values.b, envOf(values['env-b'], values.prof != null ? join(values.prof, 'b') : undefined)))
  process.stderr.write('warming up\n')
  // One operation first: concurrent first calls to a peer would each open a channel.
  for (const s of sides) await measureThroughput(s.op, 1, { maxCalls: streaming ? 2 : 200, maxMs: 30_000 })
  if (!streaming) for (const s of sides) await measureThroughput(s.op, concurrency, { maxCalls: Math.max(1000, calls / 2), maxMs: 60_000 })
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? sides : [...sides].reverse()
    for (const s of order) await round(s)
    process.stderr.write(`round ${r + 1}/${rounds}\n`)
  }
  const unit = streaming ? 'MiB' : 'call'
  const what = workload === 'call' ? `${values.tier} ${values.method}` : `tunnel ${workload} (${values.tier})`
  const procs = Object.keys(sides[0]!.samples[0]!)
  const row = (label: string, x: number, y: number, digits = 0): string =>
    `${label.padEnd(14)} ${x.toFixed(digits).padStart(7)} ${y.toFixed(digits).padStart(7)} ${(x > 0 ? (y / x).toFixed(2) : '-').padStart(6)}`
  const total = (m: Record<string, number>): number => Object.values(m).reduce((t, v) => t + v, 0)
  const rss = await Promise.all(sides.map(async (s) => [await rssOf(s.pids['gateway-a']!), await rssOf(s.pids['gateway-b']!)]))
  process.stdout.write(
    [
      `${what}, ${rounds} rounds x ${calls} ${streaming ? '64 KiB messages' : `calls at ${concurrency} in flight`}; CPU µs per ${unit} (median of rounds)`,
      `${'process'.padEnd(14)} ${'a'.padStart(7)} ${'b'.padStart(7)} ${'b/a'.padStart(6)}`,
      ...procs.map((p) => row(p, median(sides[0]!.samples.map((m) => m[p]!)), median(sides[1]!.samples.map((m) => m[p]!)))),
      row('total', median(sides[0]!.samples.map(total)), median(sides[1]!.samples.map(total))),
      row(streaming ? 'MiB/s' : 'calls/s', median(sides[0]!.rates), median(sides[1]!.rates), streaming ? 1 : 0),
      `${'rss A/B MB'.padEnd(14)} ${rss.map((r) => r.map((x) => (x / 2 ** 20).toFixed(0)).join('/')).join('  ')}`,
      `per round (total µs): a ${sides[0]!.samples.map((m) => total(m).toFixed(0)).join(' ')}`,
      `                      b ${sides[1]!.samples.map((m) => total(m).toFixed(0)).join(' ')}`,
      '',
    ].join('\n'),
  )
} finally {
  for (const s of sides) s.close()
  await Promise.all(sides.map((s) => s.h.close()))
}
