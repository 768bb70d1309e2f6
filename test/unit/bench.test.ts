import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { checkTargets, computeRatios, MD_END, MD_START, type ReportInput, renderReport, replaceGenerated } from '../../bench/lib/report.ts'
import {
  cell,
  formatMarkdownTable,
  formatTable,
  LatencyRecorder,
  type LatencySummary,
  measureSequential,
  measureThroughput,
  parseBenchArgs,
  ratio,
  sum,
  type ThroughputSummary,
} from '../../bench/lib/stats.ts'

const lat = (p50Ms: number): LatencySummary => ({
  count: 100,
  errors: 0,
  p50Ms,
  p90Ms: p50Ms * 2,
  p99Ms: p50Ms * 3,
  maxMs: p50Ms * 4,
  meanMs: p50Ms,
})
const tp = (rps: number): ThroughputSummary => ({ ...lat(1), concurrency: 50, durationMs: 1000, rps })
const load = (p50: number, rps50: number, cpuUsPerCallAt50?: Record<string, number>) => ({
  seq: lat(p50),
  tput: { c1: tp(rps50 / 4), c10: tp(rps50 / 2), c50: tp(rps50) },
  ...(cpuUsPerCallAt50 != null ? { cpuUsPerCallAt50 } : {}),
})

function fakeResults(): ReportInput {
  return {
    startedAt: '2026-01-01T00:00:00.000Z',
    mode: 'quick',
    machine: { nproc: 2, cpuModel: 'Test CPU', memoryGiB: 4, node: 'v24.0.0', platform: 'linux x64', loadavg: [1, 1, 1] },
    raw: {
      grpc: load(1, 1000, { bench: 100, server: 50 }),
      connect: load(1.5, 500),
      libp2pDirectMux: load(0.5, 3000, { bench: 40, server: 40 }),
      libp2pDirectStreamPerCall: load(1.5, 1000),
      libp2pRelayMux: load(1, 2000),
      libp2pRelayStreamPerCall: load(4, 500),
      nats: load(0.5, 5000),
    },
    stargate: {
      'direct.ping': load(2, 700, { bench: 120, 'gateway-a': 117, 'gateway-b': 60 }),
      'direct.echo': load(4, 500),
      'relay.ping': load(3, 550),
      'nats.ping': load(2.4, 600, { bench: 120, 'gateway-a': 234, 'gateway-b': 60 }),
    },
    tunnel: {
      backend: { ...load(0.4, 2000), streamMBps: { download: 400, upload: 300 } },
      direct: { ...load(1.1, 1000), streamMBps: { download: 200, upload: 100 } },
    },
    memory: { gatewayIdleRssMB: 90, relayIdleRssMB: 120 },
    cold: { direct: { coldMs: [30, 10, 20], pooledP50Ms: 2 } },
    failover: { relayDetectionMs: 6000, silentDirectDropDetectionMs: null },
    capacity: { reservations: 1000, activeCircuits: 400, relayRssPerReservationKB: 80 },
    gatewayPool: { rssPerPooledPeerKB: 150 },
    bounds: { reservations: 1000, circuits: 500 },
    notMeasured: ['silently dropped direct path detection: not measured (testbed pending)'],
    errors: {},
  }
}

describe('bench helpers', () => {
  it('bench - percentiles come from the histogram with microsecond resolution', () => {
    const rec = new LatencyRecorder()
    for (let i = 1; i <= 1000; i++) rec.record(i / 10) // 0.1 .. 100 ms
    const s = rec.summary()
    assert.equal(s.count, 1000)
    assert.ok(Math.abs(s.p50Ms - 50) <= 0.05, `p50 ${s.p50Ms}`)
    assert.ok(Math.abs(s.p90Ms - 90) <= 0.1, `p90 ${s.p90Ms}`)
    assert.ok(Math.abs(s.p99Ms - 99) <= 0.1, `p99 ${s.p99Ms}`)
    assert.ok(Math.abs(s.maxMs - 100) <= 0.1)
    assert.ok(Math.abs(s.meanMs - 50.05) <= 0.1)
    const empty = new LatencyRecorder().summary()
    assert.equal(empty.count, 0)
    assert.ok(Number.isNaN(empty.p50Ms))
  })

  it('bench - ratio and sum treat missing figures as missing, never as zero', () => {
    assert.equal(ratio(3, 2), 1.5)
    assert.equal(ratio(1, 3), 0.33)
    assert.equal(ratio(1, 0), null)
    assert.equal(ratio(null, 1), null)
    assert.equal(ratio(1, Number.NaN), null)
    assert.equal(sum(1, 2.5), 3.5)
    assert.equal(sum(1, undefined), null)
  })

  it('bench - measurement loops stop at the call bound and at the time bound', async () => {
    let n = 0
    const seq = await measureSequential(async () => n++, { maxCalls: 25, maxMs: 10_000 })
    assert.equal(seq.count, 25)
    assert.equal(n, 25)
    const t0 = performance.now()
    const slow = await measureSequential(() => new Promise((r) => setTimeout(r, 20)), { maxCalls: 1000, maxMs: 100 })
    assert.ok(performance.now() - t0 < 1000)
    assert.ok(slow.count >= 1 && slow.count <= 6, `count ${slow.count}`)
    let inflight = 0
    let peak = 0
    const tput = await measureThroughput(
      async () => {
        inflight++
        peak = Math.max(peak, inflight)
        await new Promise((r) => setImmediate(r))
        inflight--
      },
      10,
      { maxCalls: 200, maxMs: 10_000 },
    )
    assert.equal(tput.count, 200)
    assert.equal(peak, 10)
    assert.ok(tput.rps > 0)
    let i = 0
    const failing = await measureThroughput(
      async () => {
        if (i++ % 2 === 0) throw new Error('x')
      },
      2,
      { maxCalls: 20, maxMs: 10_000 },
    )
    assert.equal(failing.errors, 10)
    assert.equal(failing.count, 10)
  })

  it('bench - plain tables align columns and show missing values as "-"', () => {
    assert.equal(cell(null), '-')
    assert.equal(cell(Number.NaN), '-')
    assert.equal(cell(1234.567), '1235')
    assert.equal(cell(1.2345), '1.23')
    const t = formatTable(
      ['name', 'p50'],
      [
        ['short', 1.5],
        ['a much longer name', null],
      ],
    ).split('\n')
    assert.equal(t.length, 4)
    assert.match(t[1]!, /^-+ {2}-+$/)
    assert.equal(t[2]!.length, t[3]!.length)
    assert.ok(t[2]!.endsWith('1.50'))
    assert.ok(t[3]!.endsWith('-'))
  })

  it('bench - markdown tables are aligned with right-aligned figures', () => {
    const md = formatMarkdownTable(['name', 'value'], [['a|b', 12.5]]).split('\n')
    assert.deepEqual(md, ['| name | value |', '| ---- | ----: |', '| a\\|b | 12.50 |'])
  })

  it('bench - command line: --quick and --only; unknown arguments are refused', () => {
    assert.deepEqual(parseBenchArgs(['--quick']), { quick: true, only: [] })
    assert.deepEqual(parseBenchArgs(['--only', 'raw,pool', '--only=cold']), { quick: false, only: ['raw', 'pool', 'cold'] })
    assert.throws(() => parseBenchArgs(['--fast']), /unknown argument/)
  })

  it('bench - ratios relate each Stargate figure to its raw baseline', () => {
    const r = computeRatios(fakeResults())
    assert.equal(r['direct.ping.p50_vs_transport_plus_grpc'], 1.33) // 2 / (0.5 + 1)
    assert.equal(r['direct.echo.p50_vs_transport_plus_2grpc'], 1.6) // 4 / (0.5 + 1 + 1)
    assert.equal(r['relay.ping.p50_vs_transport_plus_grpc'], 1.5) // 3 / (1 + 1)
    assert.equal(r['nats.ping.p50_vs_transport_plus_grpc'], 1.6) // 2.4 / (0.5 + 1)
    assert.equal(r['relay.echo.p50_vs_transport_plus_2grpc'], null) // not measured
    assert.equal(r['direct.ping.c50_rps_vs_grpc_c50'], 0.7)
    assert.equal(r['direct.cold_vs_pooled_p50'], 10) // median 20 / 2
    assert.equal(r['libp2pDirect.streamPerCall_vs_mux_p50'], 3)
    assert.equal(r['libp2pDirect.mux_vs_streamPerCall_c50_rps'], 3)
    assert.equal(r['connect_vs_grpcjs.c50_rps'], 0.5)
    // CPU per call: caller vs grpc-js server + mux client, callee vs mux server, NATS vs direct
    assert.equal(r['direct.ping.cpu_caller_vs_grpc_server_plus_mux_client'], 1.3) // 117 / (50 + 40)
    assert.equal(r['direct.ping.cpu_callee_vs_mux_server'], 1.5) // 60 / 40
    assert.equal(r['relay.ping.cpu_caller_vs_grpc_server_plus_mux_client'], null)
    assert.equal(r['nats.ping.cpu_caller_vs_direct'], 2) // 234 / 117
    assert.equal(r['nats.ping.cpu_callee_vs_direct'], 1)
    // tunnel: p50 vs transport RTT + 1.5 x the backend called directly; rates vs the backend
    assert.equal(r['tunnel.direct.unary_p50_vs_transport_plus_1.5x_backend'], 1) // 1.1 / (0.5 + 0.6)
    assert.equal(r['tunnel.direct.unary_c50_rps_vs_backend'], 0.5)
    assert.equal(r['tunnel.direct.download_MBps_vs_backend'], 0.5)
    assert.equal(r['tunnel.direct.upload_MBps_vs_backend'], 0.33)
    assert.equal(r['tunnel.relay.unary_c50_rps_vs_backend'], null)
  })

  it('bench - targets are checked as goals: met, missed, or n/a when not measured', () => {
    const input = fakeResults()
    const t = checkTargets(input, computeRatios(input))
    const by = (prefix: string) => t.find((x) => x.name.startsWith(prefix))!
    assert.equal(by('direct ping p50').met, true)
    assert.equal(by('nats ping p50').met, false)
    assert.equal(by('relay echo p50').met, null)
    assert.equal(by('direct ping req/s').met, true)
    assert.equal(by('gateway RSS').met, true)
    assert.equal(by('relay reservations').met, true)
    assert.equal(by('relay active circuits').met, false)
    assert.equal(by('nats ping req/s').goal, '≥ 0.4', 'NATS throughput goal is 0.4 of grpc-js')
    assert.equal(by('nats ping req/s').met, true) // 600 / 1000
    assert.equal(by('direct caller CPU').met, true)
    assert.equal(by('direct callee CPU').met, false)
    assert.equal(by("nats ping caller CPU/call / direct's").met, false)
    assert.equal(by('tunnel direct unary p50').met, true)
    assert.equal(by('tunnel direct unary req/s').met, false)
    assert.equal(by('tunnel direct download').met, true)
    assert.equal(by('tunnel direct upload').met, false)
    assert.equal(by('tunnel nats unary p50').met, null)
    assert.equal(by('gateway RSS idle').met, true)
    assert.equal(by('relay RSS idle').met, false)
    assert.equal(by('relay RSS per reservation').met, true)
  })

  it('bench - the report prints every table, the gaps, and updates only the generated part of BENCHMARKS.md', () => {
    const rep = renderReport(fakeResults())
    for (const title of ['Sequential latency', 'Throughput', 'CPU per call', 'Tunnelled gRPC streams', 'Ratios', 'Targets', 'Failover'])
      assert.ok(rep.text.includes(title), title)
    assert.match(rep.text, /tunnel direct\s+200\s+100\s+0\.50\s+0\.33/)
    assert.match(rep.text, /memory gatewayIdleRssMB\s+90/)
    assert.match(rep.text, /not measured \(testbed pending\)/)
    assert.match(rep.text, /failover silentDirectDropDetectionMs\s+not measured/)
    const first = replaceGenerated('', 'ONE')
    assert.ok(first.startsWith('# Benchmarks'))
    assert.ok(first.includes(`${MD_START}\nONE\n${MD_END}`))
    const handWritten = `# Benchmarks\n\nintro\n\n${MD_START}\nold\n${MD_END}\n\n## What was changed and what it bought\n\nnotes\n`
    const updated = rep.updateMarkdown(handWritten, 'bench/results/x.json')
    assert.ok(updated.includes('intro'))
    assert.ok(updated.includes('## What was changed and what it bought\n\nnotes'))
    assert.ok(!updated.includes('\nold\n'))
    assert.ok(updated.includes('`bench/results/x.json`'))
  })
})
