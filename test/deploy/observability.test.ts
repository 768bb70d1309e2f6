// The observability pack against what the services really export. A real relay and two real gateways (with
// NATS) serve /metrics (--metrics-listen) after calls that succeed, fail remotely and find no tier, and tunnelled
// gRPC calls to a backend B exposes; a real
// Prometheus (the version docker compose runs) scrapes them and loads the chart's alert rules. Then:
//   - every dashboard query parses (Prometheus' own parser), every metric selector in it matches exported
//     series, every label it groups by or shows in a legend is on those series, and every panel has data;
//   - every alert rule loads and evaluates without error, its selectors and labels exist, and each alert goes
//     pending when its condition is produced for real (a dead relay, a full relay, UNAVAILABLE calls, a full
//     request journal, NATS killed); promtool checks the rule file.
// A metric or label renamed in the code, the dashboard or the alerts fails here.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import * as grpc from '@grpc/grpc-js'
import { parse } from 'yaml'
import { EchoBackend, EchoClient } from '../lib/echo.ts'
import { eventually } from '../lib/eventually.ts'
import { freePort, type GatewayHandle, Harness, Proc } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const ROOT = join(import.meta.dirname, '../..')
const DASHBOARD = join(ROOT, 'helm/stargate/files/grafana/stargate.json')
const ALERTS = join(ROOT, 'helm/stargate/files/prometheus/alerts.yaml')
/** Grafana's built-in variables, as Grafana would fill them for a 1 s scrape interval. */
const GRAFANA_VARIABLES: Record<string, string> = { $__rate_interval: '30s', $__interval: '15s', $__range: '5m' }
/** Labels Prometheus adds to every scraped series (not exported by the services). */
const TARGET_LABELS = new Set(['job', 'instance'])
/** How panels name their data source: Grafana's data source variable. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JavaScript template
const DATASOURCE = { type: 'prometheus', uid: '${datasource}' }
const UNKNOWN_PEER = '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf'
const ECHO_SERVICE = 'stargate.test.v1.EchoService'

interface Target {
  expr: string
  legendFormat?: string
  refId: string
  datasource?: { type: string; uid: string }
}
interface Panel {
  id: number
  type: string
  title: string
  gridPos: { h: number; w: number; x: number; y: number }
  datasource?: { type: string; uid: string }
  targets?: Target[]
}
interface Rule {
  alert: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}
type Series = Record<string, string>
/** A node of Prometheus' /api/v1/parse_query AST (the parts walked here). */
interface AstNode {
  type: string
  name?: string
  matchers?: { name: string; value: string; type: string }[]
  grouping?: string[]
  without?: boolean
  [child: string]: unknown
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
  panels: Panel[]
  templating: { list: { name: string; type: string; query: string }[] }
}
const rules = (parse(readFileSync(ALERTS, 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules)

const withGrafanaVariables = (expr: string): string =>
  Object.entries(GRAFANA_VARIABLES).reduce((e, [name, value]) => e.replaceAll(name, value), expr)

describe('observability pack against real metrics', () => {
  const h = new Harness()
  const work = mkdtempSync(join(tmpdir(), 'stargate-prom-'))
  const backend = new EchoBackend()
  let prom = ''
  let natsProc: Proc | undefined

  async function api<T>(path: string, params: Record<string, string> = {}): Promise<T> {
    const res = await fetch(`http://${prom}/api/v1/${path}?${new URLSearchParams(params)}`)
    const body = (await res.json()) as { status: string; data: T; error?: string }
    assert.equal(body.status, 'success', `${path} ${JSON.stringify(params)}: ${body.error}`)
    return body.data
  }
  const instant = async (query: string): Promise<Series[]> =>
    (await api<{ result: { metric: Series }[] }>('query', { query })).result.map((r) => r.metric)

  /** How to poll Prometheus: it scrapes and evaluates on its own clock and announces neither. */
  const PROMETHEUS_POLL = { timeoutMs: 60_000, intervalMs: 500, context: () => h.dump() }

  /** The vector selectors of a query and the labels each aggregation groups by, from Prometheus' own parser. */
  async function analyse(query: string): Promise<{ selectors: string[]; groupings: { labels: string[]; selectors: string[] }[] }> {
    const ast = await api<AstNode>('parse_query', { query })
    const groupings: { labels: string[]; selectors: string[] }[] = []
    const walk = (node: unknown): string[] => {
      if (node == null || typeof node !== 'object') return []
      if (Array.isArray(node)) return node.flatMap(walk)
      const n = node as AstNode
      if (n.type === 'vectorSelector' || n.type === 'matrixSelector') {
        const matchers = (n.matchers ?? []).filter((m) => m.name !== '__name__').map((m) => `${m.name}${m.type}${JSON.stringify(m.value)}`)
        return [`${n.name}{${matchers.join(',')}}`]
      }
      const below = Object.values(n).flatMap(walk)
      if (n.type === 'aggregation' && (n.grouping ?? []).length > 0) groupings.push({ labels: n.grouping ?? [], selectors: below })
      return below
    }
    return { selectors: walk(ast), groupings }
  }

  /** Every selector matches exported series, and every grouping label is on them. */
  async function checkQuery(where: string, query: string): Promise<void> {
    const { selectors, groupings } = await analyse(query)
    assert.ok(selectors.length > 0, `${where}: reads a metric`)
    const labelsOf = new Map<string, Set<string>>()
    for (const selector of selectors) {
      const series = await instant(selector)
      assert.ok(series.length > 0, `${where}: ${selector} matches no exported series`)
      labelsOf.set(selector, new Set(series.flatMap((s) => Object.keys(s))))
    }
    for (const g of groupings) {
      const present = new Set(g.selectors.flatMap((s) => [...(labelsOf.get(s) ?? [])]))
      for (const label of g.labels)
        assert.ok(present.has(label), `${where}: groups by "${label}", which ${g.selectors.join(', ')} do not carry`)
    }
  }

  before(async () => {
    const nats = await h.nats()
    natsProc = nats.proc
    await backend.start()
    const [relayMetrics, aMetrics, bMetrics, deadRelayPort, promPort] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ])
    // Two reservations fill this relay (StargateRelayNearReservationCapacity).
    const relay = await h.relay(['--metrics-listen', `127.0.0.1:${relayMetrics}`, '--max-reservations', '2'], { name: 'relay' })
    // B's request journal is small, so calls fill it (StargateJournalNearBound).
    const b = await h.gateway(
      [
        ...[
          '--relay',
          relay.multiaddr,
          '--nats',
          nats.url,
          '--metrics-listen',
          `127.0.0.1:${bMetrics}`,
          '--request-journal-max-bytes',
          '8192',
        ],
        ...['--expose', `${ECHO_SERVICE}=127.0.0.1:${backend.port}`],
      ],
      { name: 'gateway-b' },
    )
    // A also has a relay nobody runs (StargateRelayUnhealthy, failing health checks).
    const a: GatewayHandle = await h.gateway(
      [
        ...['--relay', relay.multiaddr, '--relay', `/ip4/127.0.0.1/tcp/${deadRelayPort}`, '--nats', nats.url],
        ...['--metrics-listen', `127.0.0.1:${aMetrics}`, '--max-retries', '0', '--attempt-timeout-ms', '2000'],
      ],
      { name: 'gateway-a' },
    )
    await b.proc.waitFor(/"msg":"reserved on relay"/)
    await a.proc.waitFor(/"msg":"reserved on relay"/)
    // C (not scraped) finds the relay full (a refusal) and fills B's journal without changing A's call mix.
    const c = await h.gateway(['--relay', relay.multiaddr], { name: 'gateway-c' })
    await c.proc.waitFor(/"msg":"reservation failed"/)
    const config = join(work, 'prometheus.yml')
    writeFileSync(
      config,
      JSON.stringify({
        global: { scrape_interval: '1s', evaluation_interval: '1s' },
        rule_files: [ALERTS],
        scrape_configs: [
          { job_name: 'stargate-relay', static_configs: [{ targets: [`127.0.0.1:${relayMetrics}`] }] },
          { job_name: 'stargate-gateway', static_configs: [{ targets: [`127.0.0.1:${aMetrics}`, `127.0.0.1:${bMetrics}`] }] },
        ],
      }),
    )
    prom = `127.0.0.1:${promPort}`
    const child = spawn(
      tool('prometheus'),
      [`--config.file=${config}`, `--storage.tsdb.path=${join(work, 'data')}`, `--web.listen-address=${prom}`, '--log.level=warn'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const proc = new Proc('prometheus', child)
    h.procs.push(proc)
    await eventually('Prometheus answers', async () => (await fetch(`http://${prom}/-/ready`)).ok, PROMETHEUS_POLL)
    await eventually('three targets are up', async () => (await instant('up == 1')).length === 3, PROMETHEUS_POLL)
    await h.serveClient(b.api, ['echo'])
    // Calls that succeed (relay), fail in the handler's gateway (UNIMPLEMENTED) and find no tier (UNAVAILABLE), in two
    // rounds with a scrape between them: rate() only sees a counter that moves inside its window.
    const round = async (): Promise<void> => {
      for (let i = 0; i < 3; i++) {
        await a.client.call({ peerId: b.peerId, method: 'echo', payload: { case: 'json', value: fromJson(ValueSchema, { i }) } })
      }
      await assert.rejects(
        a.client.call({ peerId: b.peerId, method: 'nobody.serves' }),
        (e: unknown) => ConnectError.from(e).code === Code.Unimplemented,
      )
      await assert.rejects(
        a.client.call({ peerId: UNKNOWN_PEER, method: 'ping' }),
        (e: unknown) => ConnectError.from(e).code === Code.Unavailable,
      )
      // a gRPC call tunnelled through A to the backend B exposes
      const echo = new EchoClient(a.api, grpc.credentials.createInsecure())
      try {
        const md = new grpc.Metadata()
        md.set('stargate-peer', b.peerId)
        await new Promise((resolve, reject) =>
          (echo as unknown as Record<string, (...args: unknown[]) => void>).unary!({ payload: Buffer.from('t') }, md, (err: unknown) =>
            err != null ? reject(err) : resolve(undefined),
          ),
        )
      } finally {
        echo.close()
      }
    }
    await round()
    await eventually(
      'the first round is in the scrapes',
      async () => (await instant('stargate_call_duration_count{error_type="UNAVAILABLE"}')).length > 0,
      PROMETHEUS_POLL,
    )
    await round()
    // Calls to B's Serve handler until its journal refuses one: the journal is then near its bound.
    for (let i = 0; ; i++) {
      assert.ok(i < 1000, "B's journal never filled")
      const refused = await c.client
        .call({ peerId: b.peerId, method: 'echo', payload: { case: 'json', value: fromJson(ValueSchema, { fill: i }) } })
        .then(
          () => false,
          (e: unknown) => ConnectError.from(e).code === Code.ResourceExhausted,
        )
      if (refused) break
    }
    // Pings from C with many small JSON objects: megabytes of short-lived objects on B, so its young generation is
    // collected (the GC panel reads v8js.gc.duration, which exists once a process has paused for GC); C is not
    // scraped, so A's mix of calls (StargateCallsUnavailable) stays as it is.
    const many = fromJson(ValueSchema, { items: Array.from({ length: 5000 }, (_, i) => ({ i, s: 'x'.repeat(20) })) })
    for (let i = 0; i < 20; i++) await c.client.call({ peerId: b.peerId, method: 'ping', payload: { case: 'json', value: many } })
    await eventually(
      'the second round and a GC pause of B are in the scrapes',
      async () =>
        (await instant('increase(stargate_call_duration_count{error_type="UNAVAILABLE"}[1m]) > 0')).length > 0 &&
        (await instant(`v8js_gc_duration_count{instance="127.0.0.1:${bMetrics}"}`)).length > 0,
      PROMETHEUS_POLL,
    )
  })

  after(async () => {
    await h.close()
    await backend.stop()
    rmSync(work, { recursive: true, force: true })
  })

  it('dashboard - every panel query parses, reads exported metrics and labels, and has data', async () => {
    const panels = dashboard.panels.filter((p) => p.type !== 'row')
    assert.ok(panels.length >= 10)
    for (const panel of panels) {
      assert.ok((panel.targets ?? []).length > 0, `${panel.title}: has a query`)
      for (const target of panel.targets ?? []) {
        const where = `panel "${panel.title}" ${target.refId}`
        const query = withGrafanaVariables(target.expr)
        assert.doesNotMatch(query, /\$/, `${where}: only Grafana's built-in variables are used`)
        await checkQuery(where, query)
        const result = await instant(query)
        assert.ok(result.length > 0, `${where}: ${query} returns no data`)
        for (const [, label] of (target.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
          if (TARGET_LABELS.has(label as string)) continue
          assert.ok(
            result.some((s) => (s[label as string] ?? '') !== ''),
            `${where}: legend shows {{${label}}}, which its series do not carry`,
          )
        }
      }
    }
  })

  it('alerts - every rule loads and evaluates cleanly, reads exported metrics, and goes pending on its real condition', async () => {
    const check = spawnSync(tool('promtool'), ['check', 'rules', ALERTS], { encoding: 'utf8', timeout: 60_000 })
    assert.equal(check.status, 0, check.stdout + check.stderr)
    assert.match(check.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`))
    for (const rule of rules) await checkQuery(`alert ${rule.alert}`, rule.expr)

    // NATS goes away: both gateways report it (StargateNatsDisconnected).
    await natsProc?.stop('SIGKILL')
    let active: { labels: Series; state: string }[] = []
    const missing = (): string[] => rules.filter((r) => !active.some((x) => x.labels.alertname === r.alert)).map((r) => r.alert)
    const alerts = await eventually(
      'every alert is pending',
      async () => {
        active = (await api<{ alerts: { labels: Series; state: string }[] }>('alerts')).alerts
        return missing().length === 0 && active
      },
      { ...PROMETHEUS_POLL, timeoutMs: 90_000, context: () => `not pending: ${missing().join(', ')}\n${h.dump()}` },
    )
    const loaded = await api<{ groups: { rules: { name: string; health: string; lastError?: string }[] }[] }>('rules')
    const states = loaded.groups.flatMap((g) => g.rules)
    assert.deepEqual(states.map((r) => r.name).sort(), rules.map((r) => r.alert).sort(), 'Prometheus loaded every rule')
    for (const r of states) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`)
    for (const rule of rules) {
      const fired = alerts.filter((x) => x.labels.alertname === rule.alert)
      assert.ok(fired.every((x) => x.state === 'pending' || x.state === 'firing'))
      // Every label an annotation shows is on the alert.
      for (const text of Object.values(rule.annotations ?? {})) {
        for (const [, label] of text.matchAll(/\$labels\.(\w+)/g)) {
          assert.ok(
            fired.some((x) => (x.labels[label as string] ?? '') !== ''),
            `${rule.alert}: its annotation shows $labels.${label}, which the alert does not carry`,
          )
        }
      }
    }
    const unhealthy = alerts.filter((x) => x.labels.alertname === 'StargateRelayUnhealthy').map((x) => x.labels.stargate_relay_addr)
    assert.ok(
      unhealthy.some((addr) => addr?.startsWith('/ip4/127.0.0.1/tcp/')),
      `the dead relay is the unhealthy one: ${unhealthy}`,
    )
  })

  it('dashboard - one Prometheus data source variable for every panel; ids and layout are valid', () => {
    assert.deepEqual(
      dashboard.templating.list.map((v) => [v.name, v.type, v.query]),
      [['datasource', 'datasource', 'prometheus']],
    )
    const ids = dashboard.panels.map((p) => p.id)
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique')
    for (const p of dashboard.panels) {
      assert.ok(p.gridPos.x >= 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: fits the 24-column grid`)
      if (p.type === 'row') continue
      assert.deepEqual(p.datasource, DATASOURCE, `${p.title}: uses the data source variable`)
      const refIds = (p.targets ?? []).map((t) => t.refId)
      assert.equal(new Set(refIds).size, refIds.length, `${p.title}: refIds are unique`)
      for (const t of p.targets ?? []) assert.deepEqual(t.datasource, p.datasource)
    }
  })

  it('compose - runs the Prometheus version these checks ran, and its configuration is valid', () => {
    const pinned = /^PROMETHEUS_VERSION=v0\.(\d+)\.(\d+)$/m.exec(readFileSync(join(ROOT, 'scripts/ensure-tools.sh'), 'utf8'))
    assert.ok(pinned, 'scripts/ensure-tools.sh pins the Prometheus Go module')
    // Prometheus 3.x.y is the Go module v0.3xx.y.
    const version = `v${Number(pinned[1]) >= 300 ? `3.${Number(pinned[1]) - 300}` : `2.${pinned[1]}`}.${pinned[2]}`
    const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: Record<string, { image?: string }> }
    assert.equal(compose.services.prometheus?.image, `prom/prometheus:${version}`)
    // The compose Prometheus configuration, with the alert file where compose mounts it.
    const config = readFileSync(join(ROOT, 'deploy/prometheus.yml'), 'utf8').replace('/etc/prometheus/alerts.yaml', ALERTS)
    const file = join(work, 'compose-prometheus.yml')
    writeFileSync(file, config)
    const r = spawnSync(tool('promtool'), ['check', 'config', file], { encoding: 'utf8', timeout: 60_000 })
    assert.equal(r.status, 0, r.stdout + r.stderr)
  })
})
