/**
 * Turns benchmark results into ratios, target checks, plain-text tables and the generated part of
 * BENCHMARKS.md. Pure functions of the results object (unit-tested in test/unit/bench.test.ts).
 */
import { formatMarkdownTable, formatTable, type LatencySummary, ratio, sum, type ThroughputSummary } from './stats.ts'

/** The parts of the results this module reads (bench/run.ts BenchResults is a superset). */
export interface ReportInput {
  startedAt: string
  mode: string
  machine: { nproc: number; cpuModel: string; memoryGiB: number; node: string; platform: string; loadavg: number[]; loadavgEnd?: number[] }
  raw: Record<string, LoadInput | undefined>
  stargate: Record<string, LoadInput | undefined>
  cold: Record<string, { coldMs: number[]; pooledP50Ms: number | null } | undefined>
  failover: Record<string, number | string | null>
  capacity: Record<string, number | string | string[] | null>
  gatewayPool: Record<string, number | null>
  /** Tunnelled gRPC (EchoService): 'backend' is the client calling the backend itself; then one entry per tier. */
  tunnel?: Record<string, TunnelInput | undefined>
  /** Idle RSS of a fresh gateway and relay (MB). */
  memory?: Record<string, number | null>
  bounds: { reservations: number; circuits: number }
  notMeasured: string[]
  errors: Record<string, string>
}

export interface LoadInput {
  seq: LatencySummary
  tput: Record<string, ThroughputSummary>
  cpuUsPerCallAt50?: Record<string, number>
}

/** One tunnel run: unary loads like the others, and bulk streams in MB/s (10^6 bytes per second). */
export interface TunnelInput extends LoadInput {
  streamMBps?: { download: number | null; upload: number | null }
}

const CPU_COLUMNS = ['bench', 'server', 'gateway-a', 'gateway-b', 'serve-client', 'relay', 'nats-server']

export interface TargetCheck {
  name: string
  goal: string
  value: number | null
  met: boolean | null
}

export interface Report {
  ratios: Record<string, number | null>
  targets: TargetCheck[]
  text: string
  markdown: string
  updateMarkdown(existing: string, resultsPath: string): string
}

const TRANSPORT: Record<string, string> = { direct: 'libp2pDirectMux', relay: 'libp2pRelayMux', nats: 'nats' }
const TIERS = ['direct', 'relay', 'nats']
/** Tiers whose CPU per call is compared with the raw libp2p stack (the NATS tier is compared with direct). */
const LIBP2P_TIERS = ['direct', 'relay']
/** Throughput at 50 in flight as a share of raw grpc-js echo: the goal per tier. */
const RPS_GOAL: Record<string, number> = { direct: 0.6, relay: 0.6, nats: 0.4 }

export const MD_START = '<!-- bench:results:start -->'
export const MD_END = '<!-- bench:results:end -->'

function median(xs: number[]): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Every ratio the bench reports, keyed by a stable name. */
export function computeRatios(r: ReportInput): Record<string, number | null> {
  const out: Record<string, number | null> = {}
  const grpcP50 = r.raw.grpc?.seq.p50Ms
  const grpcC50 = r.raw.grpc?.tput.c50?.rps
  for (const tier of TIERS) {
    const rtt = r.raw[TRANSPORT[tier]!]?.seq.p50Ms
    const ping = r.stargate[`${tier}.ping`]
    const echo = r.stargate[`${tier}.echo`]
    // ping: client → gateway A (one gRPC hop) → transport → gateway B answers.
    out[`${tier}.ping.p50_vs_transport_plus_grpc`] = ratio(ping?.seq.p50Ms, sum(rtt, grpcP50))
    // echo: the same plus gateway B → Serve client (a second gRPC hop, on a stream).
    out[`${tier}.echo.p50_vs_transport_plus_2grpc`] = ratio(echo?.seq.p50Ms, sum(rtt, grpcP50, grpcP50))
    out[`${tier}.ping.c50_rps_vs_grpc_c50`] = ratio(ping?.tput.c50?.rps, grpcC50)
    out[`${tier}.echo.c50_rps_vs_grpc_c50`] = ratio(echo?.tput.c50?.rps, grpcC50)
    const cold = r.cold[tier]
    out[`${tier}.cold_vs_pooled_p50`] = ratio(median(cold?.coldMs ?? []), cold?.pooledP50Ms)
  }
  for (const path of ['Direct', 'Relay']) {
    const mux = r.raw[`libp2p${path}Mux`]
    const per = r.raw[`libp2p${path}StreamPerCall`]
    out[`libp2p${path}.streamPerCall_vs_mux_p50`] = ratio(per?.seq.p50Ms, mux?.seq.p50Ms)
    out[`libp2p${path}.mux_vs_streamPerCall_c10_rps`] = ratio(mux?.tput.c10?.rps, per?.tput.c10?.rps)
    out[`libp2p${path}.mux_vs_streamPerCall_c50_rps`] = ratio(mux?.tput.c50?.rps, per?.tput.c50?.rps)
  }
  out['connect_vs_grpcjs.c50_rps'] = ratio(r.raw.connect?.tput.c50?.rps, grpcC50)
  out['connect_vs_grpcjs.p50'] = ratio(r.raw.connect?.seq.p50Ms, grpcP50)
  out['api_vs_grpcjs.c50_rps'] = ratio(r.raw.api?.tput.c50?.rps, grpcC50)
  out['api_vs_grpcjs.p50'] = ratio(r.raw.api?.seq.p50Ms, grpcP50)
  out['api_vs_grpcjs.server_cpu_per_call'] = ratio(r.raw.api?.cpuUsPerCallAt50?.server, r.raw.grpc?.cpuUsPerCallAt50?.server)
  // CPU per call at 50 in flight, per process, against the raw parts the gateway is made of.
  const grpcServerCpu = r.raw.grpc?.cpuUsPerCallAt50?.server
  for (const tier of LIBP2P_TIERS) {
    const mux = r.raw[TRANSPORT[tier]!]?.cpuUsPerCallAt50
    const ping = r.stargate[`${tier}.ping`]?.cpuUsPerCallAt50
    // caller: grpc-js server (the API hop) + libp2p mux client; callee: libp2p mux server.
    out[`${tier}.ping.cpu_caller_vs_grpc_server_plus_mux_client`] = ratio(ping?.['gateway-a'], sum(grpcServerCpu, mux?.bench))
    out[`${tier}.ping.cpu_callee_vs_mux_server`] = ratio(ping?.['gateway-b'], mux?.server)
  }
  for (const method of ['ping', 'echo']) {
    const nats = r.stargate[`nats.${method}`]?.cpuUsPerCallAt50
    const direct = r.stargate[`direct.${method}`]?.cpuUsPerCallAt50
    out[`nats.${method}.cpu_caller_vs_direct`] = ratio(nats?.['gateway-a'], direct?.['gateway-a'])
    out[`nats.${method}.cpu_callee_vs_direct`] = ratio(nats?.['gateway-b'], direct?.['gateway-b'])
  }
  const backend = r.tunnel?.backend
  for (const tier of TIERS) {
    const t = r.tunnel?.[tier]
    // unary p50 against raw transport RTT + 1.5 x the client calling the backend directly
    const goal = sum(r.raw[TRANSPORT[tier]!]?.seq.p50Ms, backend?.seq.p50Ms == null ? null : 1.5 * backend.seq.p50Ms)
    out[`tunnel.${tier}.unary_p50_vs_transport_plus_1.5x_backend`] = ratio(t?.seq.p50Ms, goal)
    for (const c of ['c1', 'c10', 'c50']) out[`tunnel.${tier}.unary_${c}_rps_vs_backend`] = ratio(t?.tput[c]?.rps, backend?.tput[c]?.rps)
    out[`tunnel.${tier}.download_MBps_vs_backend`] = ratio(t?.streamMBps?.download, backend?.streamMBps?.download)
    out[`tunnel.${tier}.upload_MBps_vs_backend`] = ratio(t?.streamMBps?.upload, backend?.streamMBps?.upload)
  }
  return out
}

/** The goals of the issue, checked against the measured figures (goals, not assertions). */
export function checkTargets(r: ReportInput, ratios: Record<string, number | null>): TargetCheck[] {
  const out: TargetCheck[] = []
  const le = (name: string, goal: string, value: number | null | undefined, max: number): void => {
    out.push({ name, goal, value: value ?? null, met: value == null ? null : value <= max })
  }
  const ge = (name: string, goal: string, value: number | null | undefined, min: number): void => {
    out.push({ name, goal, value: value ?? null, met: value == null ? null : value >= min })
  }
  for (const tier of TIERS) {
    le(`${tier} ping p50 / (transport + gRPC hop)`, '≤ 1.5', ratios[`${tier}.ping.p50_vs_transport_plus_grpc`], 1.5)
    le(`${tier} echo p50 / (transport + 2 gRPC hops)`, '≤ 1.5', ratios[`${tier}.echo.p50_vs_transport_plus_2grpc`], 1.5)
  }
  for (const tier of TIERS) {
    const g = RPS_GOAL[tier]!
    ge(`${tier} ping req/s @50 / grpc-js echo @50`, `≥ ${g}`, ratios[`${tier}.ping.c50_rps_vs_grpc_c50`], g)
    ge(`${tier} echo req/s @50 / grpc-js echo @50`, `≥ ${g}`, ratios[`${tier}.echo.c50_rps_vs_grpc_c50`], g)
  }
  for (const tier of LIBP2P_TIERS) {
    le(
      `${tier} caller CPU/call / (grpc-js server + mux client)`,
      '≤ 1.3',
      ratios[`${tier}.ping.cpu_caller_vs_grpc_server_plus_mux_client`],
      1.3,
    )
    le(`${tier} callee CPU/call / mux server`, '≤ 1.3', ratios[`${tier}.ping.cpu_callee_vs_mux_server`], 1.3)
  }
  for (const method of ['ping', 'echo']) {
    le(`nats ${method} caller CPU/call / direct's`, '≤ 1.5', ratios[`nats.${method}.cpu_caller_vs_direct`], 1.5)
    le(`nats ${method} callee CPU/call / direct's`, '≤ 1.5', ratios[`nats.${method}.cpu_callee_vs_direct`], 1.5)
  }
  for (const tier of TIERS) {
    le(
      `tunnel ${tier} unary p50 / (transport + 1.5 × backend)`,
      '≤ 1',
      ratios[`tunnel.${tier}.unary_p50_vs_transport_plus_1.5x_backend`],
      1,
    )
    ge(`tunnel ${tier} unary req/s @50 / backend @50`, '≥ 0.6', ratios[`tunnel.${tier}.unary_c50_rps_vs_backend`], 0.6)
  }
  for (const tier of LIBP2P_TIERS) {
    ge(`tunnel ${tier} download MB/s / backend`, '≥ 0.5', ratios[`tunnel.${tier}.download_MBps_vs_backend`], 0.5)
    ge(`tunnel ${tier} upload MB/s / backend`, '≥ 0.5', ratios[`tunnel.${tier}.upload_MBps_vs_backend`], 0.5)
  }
  le('gateway RSS idle (MB)', '≤ 100', r.memory?.gatewayIdleRssMB, 100)
  le('relay RSS idle (MB)', '≤ 80', r.memory?.relayIdleRssMB, 80)
  le('gateway RSS per idle pooled peer (KB)', '≤ 150', r.gatewayPool.rssPerPooledPeerKB, 150)
  const perReservation = typeof r.capacity.relayRssPerReservationKB === 'number' ? r.capacity.relayRssPerReservationKB : null
  le(`relay RSS per reservation (KB, ${r.bounds.reservations} held)`, '≤ 100', perReservation, 100)
  const silent = r.failover.silentDirectDropAnswerP50Ms
  le('silently dropped direct path answered, p50 (ms)', '< 400', typeof silent === 'number' ? silent : null, 399)
  const res = typeof r.capacity.reservations === 'number' ? r.capacity.reservations : null
  const circ = typeof r.capacity.activeCircuits === 'number' ? r.capacity.activeCircuits : null
  ge(`relay reservations held (attempted ${r.bounds.reservations})`, '≥ 1000', res, 1000)
  ge(`relay active circuits (attempted ${r.bounds.circuits})`, '≥ 500', circ, 500)
  return out
}

type Row = Array<string | number | null | undefined>

function tables(
  r: ReportInput,
  ratios: Record<string, number | null>,
  targets: TargetCheck[],
): Array<{ title: string; headers: string[]; rows: Row[] }> {
  const loads = [
    ...Object.entries(r.raw).map(([k, v]) => [`raw ${k}`, v] as const),
    ...Object.entries(r.stargate).map(([k, v]) => [`stargate ${k}`, v] as const),
    ...Object.entries(r.tunnel ?? {}).map(([k, v]) => [`tunnel ${k}`, v] as const),
  ]
  const latency: Row[] = loads.map(([k, v]) => [k, v?.seq.p50Ms, v?.seq.p90Ms, v?.seq.p99Ms, v?.seq.count, v?.seq.errors])
  const tput: Row[] = loads.map(([k, v]) => [
    k,
    v?.tput.c1?.rps,
    v?.tput.c10?.rps,
    v?.tput.c50?.rps,
    v?.tput.c50?.p99Ms,
    Object.values(v?.tput ?? {}).reduce((s, t) => s + t.errors, 0),
  ])
  const cpu: Row[] = loads
    .filter(([, v]) => v?.cpuUsPerCallAt50 != null)
    .map(([k, v]) => {
      const c = v!.cpuUsPerCallAt50!
      return [k, ...CPU_COLUMNS.map((p) => c[p]), Object.values(c).reduce((s, x) => s + x, 0)]
    })
  const cold: Row[] = TIERS.map((t) => [
    t,
    median(r.cold[t]?.coldMs ?? []),
    r.cold[t]?.pooledP50Ms,
    ratios[`${t}.cold_vs_pooled_p50`],
    r.cold[t]?.coldMs.length,
  ])
  const ratioRows: Row[] = Object.entries(ratios).map(([k, v]) => [k, v == null ? null : `${v.toFixed(2)}x`])
  const targetRows: Row[] = targets.map((t) => [t.name, t.goal, t.value, t.met == null ? 'n/a' : t.met ? 'yes' : 'NO'])
  const other: Row[] = [
    ...Object.entries(r.failover).map(([k, v]) => [`failover ${k}`, v == null ? 'not measured' : v] as Row),
    ...Object.entries(r.capacity)
      .filter(([, v]) => !Array.isArray(v))
      .map(([k, v]) => [`relay capacity ${k}`, v as number | string | null] as Row),
    ...Object.entries(r.gatewayPool).map(([k, v]) => [`gateway pool ${k}`, v] as Row),
    ...Object.entries(r.memory ?? {}).map(([k, v]) => [`memory ${k}`, v] as Row),
  ]
  const streams: Row[] = Object.entries(r.tunnel ?? {}).map(([k, v]) => [
    `tunnel ${k}`,
    v?.streamMBps?.download,
    v?.streamMBps?.upload,
    ratios[`tunnel.${k}.download_MBps_vs_backend`],
    ratios[`tunnel.${k}.upload_MBps_vs_backend`],
  ])
  return [
    { title: 'Sequential latency (ms, HdrHistogram)', headers: ['measurement', 'p50', 'p90', 'p99', 'n', 'errors'], rows: latency },
    { title: 'Throughput (calls/s by calls in flight)', headers: ['measurement', '@1', '@10', '@50', 'p99@50 ms', 'errors'], rows: tput },
    {
      title: 'CPU per call at 50 in flight (µs, from /proc; bench = the client process)',
      headers: ['measurement', ...CPU_COLUMNS, 'total'],
      rows: cpu,
    },
    {
      title: 'Tunnelled gRPC streams (MB/s, 64 KiB messages; backend = the client calling the backend itself)',
      headers: ['path', 'download', 'upload', 'download / backend', 'upload / backend'],
      rows: streams,
    },
    {
      title: 'First call on a cold connection vs pooled (ms)',
      headers: ['tier', 'cold (median)', 'pooled p50', 'ratio', 'samples'],
      rows: cold,
    },
    { title: 'Ratios', headers: ['ratio', 'value'], rows: ratioRows },
    { title: 'Targets (goals, not assertions)', headers: ['target', 'goal', 'measured', 'met'], rows: targetRows },
    { title: 'Failover, relay capacity, memory', headers: ['figure', 'value'], rows: other },
  ]
}

function machineLine(r: ReportInput): string {
  const m = r.machine
  const end = m.loadavgEnd != null ? `, at end ${m.loadavgEnd.join(' / ')}` : ''
  return `${m.nproc} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB RAM, Node ${m.node}, ${m.platform}; load average (1/5/15 min) at start ${m.loadavg.join(' / ')}${end} (shared machine)`
}

export function renderReport(r: ReportInput): Report {
  const ratios = computeRatios(r)
  const targets = checkTargets(r, ratios)
  const ts = tables(r, ratios, targets)
  const notes = [...r.notMeasured.map((n) => `- ${n}`), ...Object.entries(r.errors).map(([k, v]) => `- section ${k} failed: ${v}`)]
  const text = [
    `Stargate benchmarks (${r.mode}) — ${r.startedAt}`,
    machineLine(r),
    ...ts.flatMap((t) => ['', `## ${t.title}`, formatTable(t.headers, t.rows)]),
    ...(notes.length > 0 ? ['', '## Not measured / failed', ...notes] : []),
  ].join('\n')
  const markdown = [
    `- Run: ${r.startedAt} (${r.mode} mode)`,
    `- Machine: ${machineLine(r)}`,
    ...ts.flatMap((t) => ['', `### ${t.title}`, '', formatMarkdownTable(t.headers, t.rows)]),
    ...(notes.length > 0 ? ['', '### Not measured / failed', '', ...notes] : []),
  ].join('\n')
  return {
    ratios,
    targets,
    text,
    markdown,
    updateMarkdown: (existing, resultsPath) =>
      replaceGenerated(existing, `${markdown}\n\nAll figures: \`${resultsPath}\` (written by the run; bench/results/ is not committed)`),
  }
}

/** Replaces the generated block of BENCHMARKS.md (between the markers), keeping the hand-written parts. */
export function replaceGenerated(existing: string, generated: string): string {
  const block = `${MD_START}\n${generated}\n${MD_END}`
  const start = existing.indexOf(MD_START)
  const end = existing.indexOf(MD_END)
  if (start >= 0 && end > start) return existing.slice(0, start) + block + existing.slice(end + MD_END.length)
  const header = existing.trim() === '' ? '# Benchmarks\n\n' : `${existing.trimEnd()}\n\n`
  return `${header}## Latest results\n\n${block}\n`
}
