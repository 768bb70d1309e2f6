// docker compose stack and Dockerfiles, validated without a Docker engine: docker-compose config, file and
// network consistency, every flag parsed by the real CLI parsers, Dockerfile lint; then the parts that can run
// here run for real: the keygen script, a relay with the compose flags, gateway B with its compose command (it
// must learn the relay's peer id and reserve on it), and the container health check.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { GATEWAY_FLAGS, gatewayConfigFromFlags } from '@stargate/gateway/cli'
import { GATEWAY_DEFAULTS } from '@stargate/gateway/defaults'
import { RELAY_FLAGS, relayConfigFromFlags } from '@stargate/relay/cli'
import { RelayService } from '@stargate/shared/gen/relay'
import { envName, type FlagSpec, parseFlags } from '@stargate/shared/options'
import { parse } from 'yaml'
import { interpolate } from '../lib/compose.ts'
import { freePort, grpcClient, Harness } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const ROOT = join(import.meta.dirname, '../..')
const COMPOSE_FILE = join(ROOT, 'docker-compose.yml')
/** Flags announced by later features that compose already sets (unknown STARGATE_* variables are ignored until then). */
const UPCOMING_FLAGS = new Set(['metrics-listen', 'state-dir'])

interface ComposeService {
  image?: string
  build?: { context: string; dockerfile: string }
  entrypoint?: string[]
  command?: string[]
  user?: string
  read_only?: boolean
  tmpfs?: string[]
  environment?: Record<string, string>
  volumes?: string[]
  networks?: string[]
  network_mode?: string
  ports?: string[]
  healthcheck?: { test: string[] }
  depends_on?: Record<string, { condition: string }>
  restart?: string
}
interface Compose {
  services: Record<string, ComposeService>
  networks: Record<string, unknown>
  volumes: Record<string, unknown>
}

const compose = parse(readFileSync(COMPOSE_FILE, 'utf8'), { merge: true }) as Compose
const svc = (name: string): ComposeService => {
  const s = compose.services[name]
  assert.ok(s, `service ${name} exists`)
  return s
}
const STARGATE_SERVICES = ['relay', 'gateway-a', 'gateway-b'] as const

/** Mounts of a service: named volume or bind source, container target, read-only. */
function mounts(s: ComposeService): { source: string; target: string; readOnly: boolean; bind: boolean }[] {
  return (s.volumes ?? []).map((v) => {
    const [source = '', target = '', mode] = v.split(':')
    return { source, target, readOnly: mode === 'ro', bind: source.startsWith('.') || source.startsWith('/') }
  })
}

const shareNetwork = (a: string, b: string): boolean => (svc(a).networks ?? []).some((n) => (svc(b).networks ?? []).includes(n))

/** The flags a gateway container runs with: the image entrypoint (the stargate CLI) with `gateway` and the compose command. */
function gatewayArgv(s: ComposeService): string[] {
  assert.equal(s.entrypoint, undefined, 'the gateway runs the image entrypoint (the stargate CLI)')
  assert.equal(s.command?.[0], 'gateway')
  return s.command?.slice(1) ?? []
}

/** A service's environment as its process gets it (from a shell without compose variables), STARGATE_* checked. */
function checkEnv(s: ComposeService, flags: FlagSpec[], shell: NodeJS.ProcessEnv = {}): Record<string, string> {
  const env = Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v), shell)]))
  const known = new Set([...flags.map((f) => envName(f.name)), ...[...UPCOMING_FLAGS].map(envName)])
  for (const k of Object.keys(env)) if (k.startsWith('STARGATE_')) assert.ok(known.has(k), `${k} is a real flag`)
  return env
}

function dockerfile(path: string): { instr: string; args: string }[] {
  return readFileSync(join(ROOT, path), 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trim().startsWith('#'))
    .map((l) => {
      const [instr = '', ...rest] = l.trim().split(/\s+/)
      return { instr: instr.toUpperCase(), args: rest.join(' ') }
    })
}

/** .dockerignore patterns as regexes over context-relative paths (a match also excludes everything below). */
function dockerignore(): RegExp[] {
  return readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((p) => {
      assert.ok(!p.startsWith('!'), 'no re-include patterns (not modelled here)')
      const re = p
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*\*\//g, '\u0001')
        .replace(/\*\*/g, '\u0002')
        .replace(/\*/g, '[^/]*')
        .replaceAll('\u0001', '(?:.*/)?')
        .replaceAll('\u0002', '.*')
      return new RegExp(`^${re}(?:/.*)?$`)
    })
}
const ignored = (path: string): boolean => dockerignore().some((re) => re.test(path))

function filesUnder(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .map((f) => join(dir, f))
    .filter((f) => !f.split('/').includes('node_modules') && statSync(join(ROOT, f)).isFile())
}

describe('docker compose', () => {
  it('compose - docker-compose config accepts the file', () => {
    const r = spawnSync(tool('docker-compose'), ['-f', COMPOSE_FILE, 'config', '-q'], { encoding: 'utf8', timeout: 60_000, cwd: ROOT })
    assert.equal(r.status, 0, `docker-compose config failed:\n${r.stderr}`)
    // And it fails on a broken file, so the check above means something.
    const bad = spawnSync(tool('docker-compose'), ['-f', '-', 'config', '-q'], {
      input: 'services:\n  x:\n    image: a\n    ports: 12\n    bogus: 1\n',
      encoding: 'utf8',
      timeout: 60_000,
      cwd: ROOT,
    })
    assert.notEqual(bad.status, 0)
  })

  it('compose - services, networks, volumes, files and ports are consistent', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), [
      'gateway-a',
      'gateway-b',
      'grafana',
      'jaeger',
      'keygen',
      'nats',
      'otel-collector',
      'prometheus',
      'relay',
    ])
    const usedNetworks = new Set<string>()
    const usedVolumes = new Set<string>()
    const hostPorts: string[] = []
    for (const [name, s] of Object.entries(compose.services)) {
      assert.ok(s.image != null || s.build != null, `${name} has an image or a build`)
      if (s.image != null) assert.match(s.image, /:[\w.-]+$/, `${name}: image tag is pinned`)
      if (s.build != null) {
        assert.ok(existsSync(join(ROOT, s.build.context)), `${name}: build context exists`)
        assert.ok(existsSync(join(ROOT, s.build.context, s.build.dockerfile)), `${name}: ${s.build.dockerfile} exists`)
      }
      assert.ok((s.networks?.length ?? 0) > 0 || s.network_mode === 'none', `${name} is on a network`)
      for (const n of s.networks ?? []) {
        assert.ok(n in compose.networks, `${name}: network ${n} is declared`)
        usedNetworks.add(n)
      }
      for (const m of mounts(s)) {
        if (m.bind) {
          assert.ok(existsSync(join(ROOT, m.source)), `${name}: bind-mounted ${m.source} exists`)
          assert.ok(m.readOnly, `${name}: config files are mounted read-only`)
        } else {
          assert.ok(m.source in compose.volumes, `${name}: volume ${m.source} is declared`)
          usedVolumes.add(m.source)
        }
        assert.match(m.target, /^\//)
      }
      for (const p of s.ports ?? []) {
        const parts = p.split(':')
        assert.ok(parts.length === 2 || parts[0] === '127.0.0.1', `${name}: ${p} binds loopback unless public on purpose`)
        hostPorts.push(parts.at(-2) as string)
      }
      for (const dep of Object.keys(s.depends_on ?? {})) assert.ok(dep in compose.services, `${name} depends on a real service`)
      assert.equal(s.restart, name === 'keygen' ? 'no' : 'unless-stopped', `${name}: restart policy`)
    }
    assert.deepEqual([...usedNetworks].sort(), Object.keys(compose.networks).sort(), 'every declared network is used')
    assert.deepEqual([...usedVolumes].sort(), Object.keys(compose.volumes).sort(), 'every declared volume is used')
    assert.equal(new Set(hostPorts).size, hostPorts.length, 'host ports are unique')
    // Only the relay's libp2p and STUN ports are published on all interfaces: it is the public relay.
    assert.deepEqual(
      Object.entries(compose.services).flatMap(([n, s]) =>
        (s.ports ?? []).filter((p) => p.split(':').length === 2).map((p) => `${n} ${p}`),
      ),
      ['relay 4001:4001', 'relay 3478:3478/udp'],
    )
  })

  it('compose - STARGATE_CORS_ALLOW_ORIGIN from the shell reaches both gateways as --cors-allow-origin; none when unset', () => {
    const origins = (shell: NodeJS.ProcessEnv): string[][] => {
      // docker-compose itself resolves the variables (the file is read as `docker compose up` would read it).
      const r = spawnSync(tool('docker-compose'), ['-f', COMPOSE_FILE, 'config'], {
        encoding: 'utf8',
        timeout: 60_000,
        cwd: ROOT,
        env: { PATH: process.env.PATH, ...shell },
      })
      assert.equal(r.status, 0, r.stderr)
      const resolved = parse(r.stdout) as Compose
      return ['gateway-a', 'gateway-b'].map((name) => {
        const s = resolved.services[name] as ComposeService
        return gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, gatewayArgv(s), checkEnv(s, GATEWAY_FLAGS))).init.corsAllowOrigins ?? []
      })
    }
    assert.deepEqual(origins({}), [[], []])
    const page = ['http://127.0.0.1:8080', 'https://dashboard.example.com']
    assert.deepEqual(origins({ STARGATE_CORS_ALLOW_ORIGIN: page.join(',') }), [page, page])
    // The test's own reading of the file agrees with docker-compose.
    assert.deepEqual(
      gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, [], checkEnv(svc('gateway-a'), GATEWAY_FLAGS, { STARGATE_CORS_ALLOW_ORIGIN: '*' })))
        .init.corsAllowOrigins,
      ['*'],
    )
  })

  it('compose - gateway B is reachable only through the relay', () => {
    assert.ok(!shareNetwork('gateway-a', 'gateway-b'), 'gateway A and B share no network')
    assert.ok(shareNetwork('gateway-a', 'relay') && shareNetwork('gateway-b', 'relay'), 'both reach the relay')
    assert.ok(!shareNetwork('gateway-b', 'nats'), 'gateway B cannot reach NATS')
    assert.ok(shareNetwork('gateway-a', 'nats'))
    const b = gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, gatewayArgv(svc('gateway-b')), {}))
    assert.deepEqual(b.init.p2pListen, [], 'gateway B has no direct libp2p listener')
    assert.deepEqual(b.init.natsServers, [])
  })

  it('compose - every stargate command line parses with the real CLI flags; gateways find the relay by name; state on volumes', () => {
    const r = svc('relay')
    assert.equal(r.entrypoint, undefined, 'the relay runs the image entrypoint (the stargate CLI)')
    assert.equal(r.command?.[0], 'relay')
    const relay = relayConfigFromFlags(parseFlags(RELAY_FLAGS, r.command?.slice(1) ?? [], checkEnv(r, RELAY_FLAGS)))
    assert.equal(relay.init.host, '0.0.0.0')
    assert.deepEqual(relay.admin, { host: '0.0.0.0', port: 4002 })
    assert.equal(relay.identityFile, '/var/lib/stargate/relay.key')
    assert.deepEqual(relay.init.announce, ['/dns4/relay/tcp/4001'])
    assert.ok(r.ports?.includes(`${relay.init.port}:${relay.init.port}`), 'the libp2p port is published')
    assert.ok(r.ports?.includes(`${relay.stunPort}:${relay.stunPort}/udp`), 'the STUN port is published')
    const relayIdentity = mounts(r).find((x) => x.target === dirname(relay.identityFile))
    assert.ok(relayIdentity != null && !relayIdentity.bind && !relayIdentity.readOnly, 'the relay creates its identity on its volume')

    for (const name of ['gateway-a', 'gateway-b']) {
      const s = svc(name)
      const g = gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, gatewayArgv(s), checkEnv(s, GATEWAY_FLAGS)))
      // One `docker compose up`: the gateways dial the relay service by name; its peer id is learned on connecting.
      assert.deepEqual(g.init.relays, [`/dns4/relay/tcp/${relay.init.port}`])
      assert.ok(shareNetwork(name, 'relay'))
      assert.equal(g.init.apiHost, '0.0.0.0')
      assert.ok(
        s.ports?.some((p) => p.endsWith(`:${g.init.apiPort}`)),
        `${name}: API port published`,
      )
      const m = mounts(s).find((x) => x.target === dirname(g.identityFile))
      assert.ok(m != null && !m.bind, `${name}: identity ${g.identityFile} is on a volume`)
      const state = s.environment?.STARGATE_STATE_DIR
      const stateMount = mounts(s).find((x) => x.target === state)
      assert.ok(
        stateMount != null && !stateMount.bind && !stateMount.readOnly,
        `${name}: its state directory ${state} is a writable volume`,
      )
    }
    const a = gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, gatewayArgv(svc('gateway-a')), {}))
    assert.deepEqual(a.init.natsServers, ['nats://nats:4222'])
    assert.deepEqual(a.init.p2pListen, ['/ip4/0.0.0.0/tcp/4011'])
    assert.ok(!mounts(svc('gateway-a')).find((x) => x.target === dirname(a.identityFile))?.readOnly, 'gateway A can create its identity')
    const b = gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, gatewayArgv(svc('gateway-b')), {}))
    assert.equal(b.identityFile, '/keys/gateway-b.key')
    assert.ok(mounts(svc('gateway-b')).find((x) => x.target === '/keys')?.readOnly, "gateway B's identity (keygen's) is mounted read-only")

    // Hardening as in the chart: uid 1000, read-only root filesystem, writable /tmp.
    for (const name of [...STARGATE_SERVICES, 'keygen']) {
      assert.equal(svc(name).user, '1000:1000', `${name} runs as uid 1000`)
    }
    for (const name of STARGATE_SERVICES) {
      assert.equal(svc(name).read_only, true, `${name}: read-only root filesystem`)
      assert.deepEqual(svc(name).tmpfs, ['/tmp'], `${name}: /tmp is writable`)
    }

    // Start order: gateway B after keygen made its identity; the gateways wait for a healthy relay.
    assert.equal(r.depends_on, undefined, 'the relay needs nothing before it')
    assert.equal(svc('gateway-b').depends_on?.keygen?.condition, 'service_completed_successfully')
    for (const name of ['gateway-a', 'gateway-b']) assert.equal(svc(name).depends_on?.relay?.condition, 'service_healthy')
    const keygen = svc('keygen')
    assert.deepEqual(keygen.entrypoint, ['/bin/sh', '/opt/stargate/keygen.sh'])
    assert.ok(mounts(keygen).some((x) => x.source === './deploy/keygen.sh' && x.target === '/opt/stargate/keygen.sh'))
    assert.ok(mounts(keygen).some((x) => x.source === 'keys' && x.target === keygen.environment?.KEYS_DIR && !x.readOnly))
    for (const name of STARGATE_SERVICES) {
      assert.deepEqual(svc(name).healthcheck?.test.slice(0, 3), ['CMD', 'node', 'deploy/healthcheck.mjs'])
    }
  })

  it('compose - the NATS config is valid and carries the gateway payload limit', () => {
    const n = svc('nats')
    const conf = n.command?.[(n.command?.indexOf('-c') ?? -2) + 1]
    assert.ok(mounts(n).some((m) => m.source === './deploy/nats.conf' && m.target === conf))
    const r = spawnSync(tool('nats-server'), ['-c', join(ROOT, 'deploy/nats.conf'), '-t'], { encoding: 'utf8', timeout: 30_000 })
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stderr + r.stdout, /is valid/)
    const text = readFileSync(join(ROOT, 'deploy/nats.conf'), 'utf8')
    const m = /^max_payload:\s*(\d+)MB$/m.exec(text)
    assert.ok(m, 'max_payload is set')
    assert.ok(Number(m[1]) * 1024 * 1024 > GATEWAY_DEFAULTS.maxPayloadBytes, 'a maximal call payload plus its envelope fits')
    assert.match(text, /^listen: 0\.0\.0\.0:4222$/m)
    assert.match(svc('gateway-a').command?.join(' ') ?? '', /--nats nats:\/\/nats:4222/)
  })

  it('compose - telemetry: services export OTLP to the collector, which feeds Jaeger and Prometheus', () => {
    const collector = parse(readFileSync(join(ROOT, 'deploy/otel-collector.yaml'), 'utf8'))
    const prom = parse(readFileSync(join(ROOT, 'deploy/prometheus.yml'), 'utf8'))
    const c = svc('otel-collector')
    const configPath = c.command?.find((x) => x.startsWith('--config='))?.slice('--config='.length)
    assert.ok(mounts(c).some((m) => m.source === './deploy/otel-collector.yaml' && m.target === configPath))
    const p = svc('prometheus')
    const promPath = p.command?.find((x) => x.startsWith('--config.file='))?.slice('--config.file='.length)
    assert.ok(mounts(p).some((m) => m.source === './deploy/prometheus.yml' && m.target === promPath))

    // Collector: every pipeline component is defined; OTLP/HTTP on 4318; traces to Jaeger; a Prometheus exporter.
    for (const [pipeline, def] of Object.entries(collector.service.pipelines as Record<string, Record<string, string[]>>)) {
      for (const kind of ['receivers', 'processors', 'exporters']) {
        for (const comp of def[kind] ?? []) assert.ok(comp in collector[kind], `${pipeline}: ${kind} ${comp} is defined`)
      }
    }
    assert.deepEqual(collector.service.pipelines.traces.exporters, ['otlp/jaeger'])
    assert.deepEqual(collector.service.pipelines.metrics.exporters, ['prometheus'])
    assert.equal(collector.receivers.otlp.protocols.http.endpoint, '0.0.0.0:4318')
    const [jaegerHost] = String(collector.exporters['otlp/jaeger'].endpoint).split(':')
    assert.equal(jaegerHost, 'jaeger')
    assert.ok(shareNetwork('otel-collector', 'jaeger'))
    const exporterPort = String(collector.exporters.prometheus.endpoint).split(':')[1]

    for (const name of STARGATE_SERVICES) {
      const env = svc(name).environment ?? {}
      assert.equal(env.OTEL_EXPORTER_OTLP_ENDPOINT, 'http://otel-collector:4318', `${name} exports to the collector`)
      assert.equal(env.OTEL_EXPORTER_OTLP_PROTOCOL, 'http/protobuf')
      assert.equal(env.OTEL_SERVICE_NAME, `stargate-${name}`)
      assert.equal(env.STARGATE_METRICS_LISTEN, '0.0.0.0:9464')
      assert.ok(shareNetwork(name, 'otel-collector'), `${name} reaches the collector`)
    }

    // Prometheus scrapes the collector's exporter and each stargate process's metrics port, on shared networks.
    const targets: string[] = prom.scrape_configs.flatMap((sc: { static_configs: { targets: string[] }[] }) =>
      sc.static_configs.flatMap((x) => x.targets),
    )
    assert.deepEqual(targets.sort(), ['gateway-a:9464', 'gateway-b:9464', `otel-collector:${exporterPort}`, 'relay:9464'].sort())
    for (const t of targets) {
      const [host = ''] = t.split(':')
      assert.ok(host in compose.services, `${t} is a compose service`)
      assert.ok(shareNetwork('prometheus', host), `prometheus reaches ${host}`)
    }

    // Prometheus loads the chart's alert rules; Grafana gets Prometheus as data source and the chart's dashboard.
    assert.deepEqual(prom.rule_files, ['/etc/prometheus/alerts.yaml'])
    assert.ok(
      mounts(p).some((m) => m.source === './helm/stargate/files/prometheus/alerts.yaml' && m.target === '/etc/prometheus/alerts.yaml'),
    )
    const g = svc('grafana')
    const provisioning = (file: string): string =>
      mounts(g).find((m) => m.source === file && m.target.startsWith('/etc/grafana/provisioning/'))?.target ?? ''
    assert.match(provisioning('./deploy/grafana/datasources.yaml'), /^\/etc\/grafana\/provisioning\/datasources\//)
    assert.match(provisioning('./deploy/grafana/dashboards.yaml'), /^\/etc\/grafana\/provisioning\/dashboards\//)
    const datasources = parse(readFileSync(join(ROOT, 'deploy/grafana/datasources.yaml'), 'utf8'))
    assert.equal(datasources.datasources[0].type, 'prometheus')
    assert.equal(datasources.datasources[0].url, 'http://prometheus:9090')
    assert.ok(p.command?.includes('--web.listen-address=0.0.0.0:9090'))
    assert.ok(shareNetwork('grafana', 'prometheus'))
    const providers = parse(readFileSync(join(ROOT, 'deploy/grafana/dashboards.yaml'), 'utf8'))
    const dashboard = mounts(g).find((m) => m.source === './helm/stargate/files/grafana/stargate.json')
    assert.ok(dashboard != null, 'the chart dashboard is mounted')
    assert.equal(dirname(dashboard.target), providers.providers[0].options.path, 'where the dashboard provider reads')
  })
})

describe('dockerfiles', () => {
  for (const [service, subcommand, flags] of [
    ['relay', 'relay', RELAY_FLAGS],
    ['gateway', 'gateway', GATEWAY_FLAGS],
  ] as const) {
    it(`dockerfile - ${service}: multi-stage on node:24, npm ci --omit=dev, non-root, CLI entrypoint`, () => {
      const path = `services/${service}/Dockerfile`
      const lines = dockerfile(path)
      const froms = lines.filter((l) => l.instr === 'FROM')
      assert.ok(froms.length >= 2, 'multi-stage')
      for (const f of froms) assert.match(f.args, /^node:24-[\w.-]+( AS \w+)?$/i, `FROM ${f.args} is a Node 24 image`)
      const lastFrom = lines.lastIndexOf(froms.at(-1) as (typeof lines)[number])
      const final = lines.slice(lastFrom)
      const users = final.filter((l) => l.instr === 'USER')
      assert.equal(users.at(-1)?.args, 'node', 'the final stage runs as the non-root node user')
      const userAt = final.indexOf(users.at(-1) as (typeof lines)[number])
      assert.ok(
        final.slice(userAt).every((l) => l.instr !== 'RUN'),
        'nothing runs as root after USER',
      )
      assert.ok(
        lines.some((l) => l.instr === 'RUN' && /npm ci --omit=dev/.test(l.args)),
        'production dependencies only',
      )
      assert.deepEqual(JSON.parse(final.find((l) => l.instr === 'ENTRYPOINT')?.args ?? 'null'), ['node', 'services/cli/bin/stargate.js'])
      assert.ok(existsSync(join(ROOT, 'services/cli/bin/stargate.js')))
      // Every COPY source from the build context exists and is not excluded by .dockerignore.
      for (const c of lines.filter((l) => l.instr === 'COPY' && !l.args.includes('--from='))) {
        const parts = c.args.split(/\s+/).filter((x) => !x.startsWith('--'))
        for (const src of parts.slice(0, -1)) {
          assert.ok(existsSync(join(ROOT, src)), `COPY source ${src} exists`)
          assert.ok(!ignored(src.replace(/\/$/, '')), `COPY source ${src} is not in .dockerignore`)
        }
      }
      // The default command parses with the real flags; its ports are exposed; the health check file is copied.
      const cmd = JSON.parse(final.find((l) => l.instr === 'CMD')?.args ?? '[]') as string[]
      assert.equal(cmd[0], subcommand)
      const parsed = parseFlags(flags, cmd.slice(1), {})
      const exposed = final
        .filter((l) => l.instr === 'EXPOSE')
        .flatMap((l) => l.args.split(/\s+/))
        .map(Number)
      if (service === 'relay') {
        const r = relayConfigFromFlags(parsed)
        assert.ok(exposed.includes(r.init.port ?? -1) && exposed.includes(r.admin.port))
        assert.match(r.identityFile, /^\/var\/lib\/stargate\//)
      } else {
        const g = gatewayConfigFromFlags(parsed)
        assert.ok(exposed.includes(g.init.apiPort ?? -1) && exposed.includes(4011))
        assert.match(g.identityFile, /^\/var\/lib\/stargate\//)
      }
      assert.ok(exposed.includes(9464), 'metrics port exposed')
      assert.ok(
        final.some((l) => l.instr === 'RUN' && /chown node:node \/var\/lib\/stargate/.test(l.args)),
        'the identity directory is writable by node',
      )
      const hc = final.find((l) => l.instr === 'HEALTHCHECK')?.args ?? ''
      assert.match(hc, /CMD \["node", "deploy\/healthcheck\.mjs"/)
      assert.ok(final.some((l) => l.instr === 'COPY' && l.args.startsWith('deploy/healthcheck.mjs ')))
    })
  }

  it('dockerfile - the build context keeps every runtime file and drops tests and dependencies', () => {
    const runtime = [
      ...filesUnder('services').filter((f) => !f.endsWith('.test.ts') && !f.endsWith('Dockerfile')),
      'deploy/healthcheck.mjs',
    ]
    assert.ok(runtime.some((f) => f.endsWith('.binpb')))
    for (const f of runtime) assert.ok(!ignored(f), `${f} is in the build context`)
    assert.ok(ignored('node_modules/libp2p/package.json'))
    assert.ok(ignored('services/gateway/src/gateway.test.ts'))
    assert.ok(ignored('.git/HEAD'))
  })

  it('dockerfile - every package the services import at run time is a production dependency', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
    const deps = new Set(Object.keys(pkg.dependencies))
    const sources = [
      ...filesUnder('services').filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.endsWith('.d.ts')),
      // Run in the images too: the HEALTHCHECK and `helm test`.
      'deploy/healthcheck.mjs',
      'deploy/helm-test.ts',
    ]
    const imports = new Set<string>()
    for (const f of sources) {
      for (const m of readFileSync(join(ROOT, f), 'utf8').matchAll(/^import (?!type )[^'"]*['"]([^'"]+)['"]/gm)) {
        const spec = m[1] as string
        if (spec.startsWith('.') || spec.startsWith('node:') || spec.startsWith('@stargate/')) continue
        imports.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string))
      }
    }
    assert.ok(imports.size > 5)
    for (const i of imports) assert.ok(deps.has(i), `${i} is in dependencies (the image installs --omit=dev)`)
  })
})

describe('compose parts run for real', () => {
  const h = new Harness()
  const keys = mkdtempSync(join(tmpdir(), 'stargate-keys-'))
  const cli = `${process.execPath} ${join(ROOT, 'services/cli/bin/stargate.js')}`
  let relayPort = 0

  function keygen(): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('sh', [join(ROOT, 'deploy/keygen.sh')], {
      encoding: 'utf8',
      timeout: 60_000,
      env: {
        ...process.env,
        ...svc('keygen').environment,
        KEYS_DIR: keys,
        STARGATE: cli,
      },
    })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  const read = (f: string): string => readFileSync(join(keys, f), 'utf8').trim()
  const peerIdOfKey = (f: string): string => peerIdFromPrivateKey(privateKeyFromProtobuf(readFileSync(join(keys, f)))).toString()

  before(async () => {
    relayPort = await freePort()
  })
  after(async () => {
    await h.close()
    rmSync(keys, { recursive: true, force: true })
  })

  it("keygen - creates gateway B's identity once", () => {
    const first = keygen()
    assert.equal(first.status, 0, first.stderr)
    assert.equal(read('gateway-b.peerid'), peerIdOfKey('gateway-b.key'))
    assert.equal(statSync(join(keys, 'gateway-b.key')).mode & 0o777, 0o600, 'keys are private to their owner')
    assert.match(first.stdout, new RegExp(`gateway-b peer id: ${read('gateway-b.peerid')}`))
    const id = read('gateway-b.peerid')
    const second = keygen()
    assert.equal(second.status, 0, second.stderr)
    assert.equal(read('gateway-b.peerid'), id, 'a second run keeps the identity')
    assert.deepEqual(readdirSync(keys).sort(), ['gateway-b.key', 'gateway-b.peerid'])
  })

  it('compose - relay and gateway B start with the compose flags; B learns the relay peer id and reserves; health checks pass', async () => {
    if (!existsSync(join(keys, 'gateway-b.key'))) assert.equal(keygen().status, 0)
    const relayData = mkdtempSync(join(tmpdir(), 'stargate-relay-data-'))
    // The compose command lines, moved to loopback, free ports and the temporary keys directory.
    const adminPort = await freePort()
    const local = (args: string[]): string[] =>
      args.map((a) =>
        a
          .replace(/^0\.0\.0\.0$/, '127.0.0.1')
          .replace('0.0.0.0:4002', `127.0.0.1:${adminPort}`)
          .replace('0.0.0.0:50051', '127.0.0.1:0')
          .replace(/^4001$/, String(relayPort))
          .replace('/dns4/relay/tcp/4001', `/dns4/localhost/tcp/${relayPort}`)
          .replace(/^\/keys\//, `${keys}/`)
          .replace(/^\/var\/lib\/stargate\//, `${relayData}/`),
      )
    const relayCmd = local(svc('relay').command ?? [])
    assert.ok(relayCmd.includes(`${relayData}/relay.key`))
    // STUN on a free port: other tests (the dev stack) may hold 127.0.0.1:3478 at the same time.
    const relay = await h.spawnCli('relay', [...relayCmd, '--stun-port', '0'])
    const [, relayPeer] = await relay.waitFor(/^Relay node started: (\S+)/)
    await relay.waitFor(/^Admin API:/)

    const b = svc('gateway-b')
    const gw = await h.spawnCli('gateway-b', local(b.command ?? []))
    const [, gwPeer] = await gw.waitFor(/^Gateway started: (\S+)/)
    assert.equal(gwPeer, read('gateway-b.peerid'), 'gateway B runs with the identity keygen made')
    const [, api] = await gw.waitFor(/^API: (\S+)/)
    await gw.waitFor(new RegExp(`"msg":"reserved on relay".*"peerId":"${relayPeer}"`))

    // The relay counts a reservation before it answers it, so it is counted once B logged it.
    const stats = await grpcClient(RelayService, `127.0.0.1:${adminPort}`).getRelayStats({})
    assert.equal(stats.reservations, 1, 'gateway B holds a reservation on the relay it found by name')

    const health = (target: string, service = '') =>
      spawnSync(process.execPath, [join(ROOT, 'deploy/healthcheck.mjs'), target, service], { encoding: 'utf8', timeout: 30_000 })
    assert.equal(health(`127.0.0.1:${adminPort}`).status, 0)
    assert.equal(health(`127.0.0.1:${adminPort}`, 'stargate.v1.RelayService').status, 0)
    assert.equal(health(api as string).status, 0)
    const closed = health(`127.0.0.1:${await freePort()}`)
    assert.equal(closed.status, 1)
    assert.match(closed.stderr, /unhealthy/)
    const unknown = health(api as string, 'no.such.Service')
    assert.equal(unknown.status, 1)
    rmSync(relayData, { recursive: true, force: true })
  })
})
