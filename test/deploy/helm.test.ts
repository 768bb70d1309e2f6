// Helm chart: lint, render with several value sets, validate every object against the Kubernetes
// schemas offline (kubernetes-validate --strict for 1.28 and 1.34, kubernetes-models, the Prometheus Operator
// models for the ServiceMonitor and PrometheusRule), check cross-object wiring, parse the rendered relay args and
// gateway environment with the real CLI flag parsers, and follow each pod's identity to the volume it lives on.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'
import { GATEWAY_FLAGS, gatewayConfigFromFlags } from '@stargate/gateway/cli'
import { GATEWAY_DEFAULTS } from '@stargate/gateway/defaults'
import { RELAY_FLAGS, relayConfigFromFlags } from '@stargate/relay/cli'
import { envName, parseFlags } from '@stargate/shared/options'
import { type IStatefulSet, StatefulSet } from 'kubernetes-models/apps/v1'
import { HorizontalPodAutoscaler, type IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2'
import { type INetworkPolicy, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { type IPodDisruptionBudget, PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import {
  ConfigMap,
  type IConfigMap,
  type IContainer,
  type IPod,
  type IPodSpec,
  type IPodTemplateSpec,
  type IProbe,
  type IService,
  type IVolume,
  Pod,
  Service,
  ServiceAccount,
} from 'kubernetes-models/v1'
import { parse, parseAllDocuments } from 'yaml'
import { CHART_README, readChart, renderChartReadme, type SchemaNode } from '../../scripts/chart-readme.ts'
import { tool } from '../lib/tools.ts'

const CHART = join(import.meta.dirname, '../../helm/stargate')
const RELEASE = 'sg'
const NAMESPACE = 'stargate'
/** Flags announced by later features that the chart already wires (unknown STARGATE_* variables are ignored until then). */
const UPCOMING_FLAGS = new Set(['metrics-listen', 'state-dir'])
const RELAY_PEER = '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf'

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are checked by schema before typed use
type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [k: string]: any }

const helm = tool('helm')
const work = mkdtempSync(join(tmpdir(), 'stargate-helm-'))
after(() => rmSync(work, { recursive: true, force: true }))

function runHelm(args: string[], values: object): { status: number | null; stdout: string; stderr: string } {
  const file = join(work, `values-${Math.random().toString(36).slice(2)}.yaml`)
  writeFileSync(file, JSON.stringify(values))
  const r = spawnSync(helm, [...args, '-f', file], { encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Kubernetes versions the rendered objects are validated against: the chart's minimum and a recent one. */
const KUBE_VERSIONS = ['1.28.0', '1.34.0']

/**
 * Strict schema validation of rendered YAML with kubernetes-validate (offline JSON schemas of the Kubernetes
 * API, rejecting unknown fields, which the kubernetes-models validators accept). Kinds without a bundled
 * schema (the ServiceMonitor CRD) are validated by their kubernetes-models package in validate().
 */
function strictValidate(yamlText: string): { status: number | null; output: string } {
  const file = join(work, `rendered-${Math.random().toString(36).slice(2)}.yaml`)
  writeFileSync(file, yamlText)
  let output = ''
  for (const version of KUBE_VERSIONS) {
    const r = spawnSync(tool('kubernetes-validate'), ['--strict', '--quiet', '--no-warn', '-k', version, file], {
      encoding: 'utf8',
      timeout: 60_000,
    })
    output += r.stdout + r.stderr
    if (r.status !== 0) return { status: r.status, output }
  }
  return { status: 0, output }
}

function render(values: object = {}): Manifest[] {
  const r = runHelm(['template', RELEASE, CHART, '--namespace', NAMESPACE, '--kube-version', '1.31.0'], values)
  assert.equal(r.status, 0, `helm template failed:\n${r.stderr}`)
  const strict = strictValidate(r.stdout)
  assert.equal(strict.status, 0, `rendered objects fail strict Kubernetes schema validation:\n${strict.output}`)
  const docs = parseAllDocuments(r.stdout)
  for (const d of docs) assert.deepEqual(d.errors, [], 'rendered YAML parses')
  return docs.map((d) => d.toJS() as Manifest | null).filter((m): m is Manifest => m != null)
}

/** Validates an object against its Kubernetes (or Prometheus Operator) schema; unknown kinds fail. */
function validate(m: Manifest): void {
  const models: Record<string, new (data: never) => { validate(): void }> = {
    'v1/Service': Service,
    'v1/ConfigMap': ConfigMap,
    'v1/ServiceAccount': ServiceAccount,
    'v1/Pod': Pod,
    'apps/v1/StatefulSet': StatefulSet,
    'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
    'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
    'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
    'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
    'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
  }
  const Model = models[`${m.apiVersion}/${m.kind}`]
  assert.ok(Model, `no schema for ${m.apiVersion} ${m.kind}`)
  assert.doesNotThrow(() => new Model(m as never).validate(), `${m.kind}/${m.metadata.name} is valid`)
  assert.match(m.metadata.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'name is a DNS-1123 label')
  assert.ok(m.metadata.name.length <= 63)
  const labels = m.metadata.labels ?? {}
  assert.equal(labels['app.kubernetes.io/instance'], RELEASE, `${m.kind}/${m.metadata.name} has standard labels`)
  assert.equal(labels['app.kubernetes.io/managed-by'], 'Helm')
  assert.equal(labels['app.kubernetes.io/name'], 'stargate')
}

const find = <T>(objs: Manifest[], kind: string, name?: string): T[] =>
  objs.filter((o) => o.kind === kind && (name == null || o.metadata.name === name)) as unknown as T[]
function one<T>(objs: Manifest[], kind: string, name: string): T {
  const found = find<T>(objs, kind, name)
  assert.equal(found.length, 1, `exactly one ${kind}/${name}`)
  return found[0] as T
}

const matches = (selector: Record<string, string>, labels: Record<string, string> | undefined): boolean =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v)

/**
 * Labels of the pods a workload creates: its template labels plus, for a StatefulSet, the per-pod labels the
 * controller adds, matched against the selector's pod-name when it has one.
 */
function podLabels(owner: Manifest, template: IPodTemplateSpec, selectedPod?: string): Record<string, string> {
  const labels = { ...template.metadata?.labels }
  if (owner.kind === 'StatefulSet') {
    const replicas = (owner as unknown as IStatefulSet).spec?.replicas ?? 1
    const pods = Array.from({ length: replicas }, (_, i) => `${owner.metadata.name}-${i}`)
    if (selectedPod != null && pods.includes(selectedPod)) labels['statefulset.kubernetes.io/pod-name'] = selectedPod
  }
  return labels
}

function podTemplates(objs: Manifest[]): { owner: Manifest; template: IPodTemplateSpec }[] {
  return objs
    .filter((o) => o.kind === 'StatefulSet')
    .map((o) => ({ owner: o, template: (o as unknown as IStatefulSet).spec?.template as IPodTemplateSpec }))
}

/** Security settings every container of the chart has (workloads and the helm test Pod). */
function checkSecurity(name: string, spec: IPodSpec): void {
  assert.equal(spec.automountServiceAccountToken, false, `${name}: no service account token`)
  assert.equal(spec.securityContext?.runAsNonRoot, true)
  assert.equal(spec.securityContext?.runAsUser, 1000, `${name}: runs as the image's node user`)
  assert.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault')
  for (const c of spec.containers) {
    const sc = c.securityContext
    assert.equal(sc?.runAsNonRoot, true, `${c.name}: runAsNonRoot`)
    assert.equal(sc?.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation false`)
    assert.equal(sc?.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`)
    assert.deepEqual(sc?.capabilities?.drop, ['ALL'], `${c.name}: drops ALL capabilities`)
    assert.equal(sc?.seccompProfile?.type, 'RuntimeDefault')
    assert.ok(c.resources?.requests?.cpu != null && c.resources?.limits?.memory != null, `${c.name}: resources set`)
    assert.ok(
      (c.volumeMounts ?? []).some((m) => m.mountPath === '/tmp'),
      `${c.name}: /tmp is writable with a read-only root`,
    )
  }
}

/** Checks that hold for every rendering: schema validity, selectors, ports, probes, security, volumes. */
function checkCommon(objs: Manifest[]): void {
  assert.ok(objs.length > 0)
  for (const o of objs) validate(o)
  const names = objs.map((o) => `${o.kind}/${o.metadata.name}`)
  assert.equal(new Set(names).size, names.length, 'no duplicate objects')
  const templates = podTemplates(objs)
  for (const { owner, template } of templates) {
    const spec = template.spec as IPodSpec
    const selector = (owner as unknown as IStatefulSet).spec?.selector.matchLabels ?? {}
    assert.ok(matches(selector, template.metadata?.labels), `${owner.metadata.name}: selector matches its pod labels`)
    checkSecurity(owner.metadata.name, spec)
    const volumes = new Set([
      ...(spec.volumes ?? []).map((v: IVolume) => v.name),
      ...((owner as unknown as IStatefulSet).spec?.volumeClaimTemplates ?? []).map((c) => c.metadata?.name),
    ])
    for (const c of spec.containers) {
      for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `${c.name}: mount ${m.name} has a volume`)
      const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]))
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe] as (IProbe | undefined)[]) {
        assert.ok(probe?.grpc != null, `${c.name}: native gRPC probe`)
        assert.ok([...ports.values()].includes(probe.grpc.port), `${c.name}: probe port ${probe.grpc.port} is a container port`)
      }
    }
    const sts = owner as unknown as IStatefulSet
    assert.ok(
      find<IService>(objs, 'Service', sts.spec?.serviceName).some((s) => s.spec?.clusterIP === 'None'),
      `${owner.metadata.name}: its serviceName is a headless Service`,
    )
  }
  // Every Service selects pods of this release and targets named ports (with their protocol) those pods declare.
  for (const svc of find<IService>(objs, 'Service')) {
    const selected = templates.filter(({ owner, template }) =>
      matches(svc.spec?.selector ?? {}, podLabels(owner, template, svc.spec?.selector?.['statefulset.kubernetes.io/pod-name'])),
    )
    assert.ok(selected.length > 0, `Service ${svc.metadata?.name} selects a workload`)
    const declared = new Set(
      selected.flatMap(
        ({ template }) => template.spec?.containers.flatMap((c) => (c.ports ?? []).map((p) => `${p.name}/${p.protocol}`)) ?? [],
      ),
    )
    for (const p of svc.spec?.ports ?? []) {
      assert.ok(
        declared.has(`${p.targetPort}/${p.protocol}`),
        `Service ${svc.metadata?.name}: targetPort ${p.targetPort}/${p.protocol} is declared`,
      )
    }
  }
  for (const pdb of find<IPodDisruptionBudget>(objs, 'PodDisruptionBudget')) {
    const sel = pdb.spec?.selector?.matchLabels ?? {}
    assert.equal(templates.filter(({ template }) => matches(sel, template.metadata?.labels)).length, 1, 'PDB selects one workload')
  }
  for (const np of find<INetworkPolicy>(objs, 'NetworkPolicy')) {
    const selected = templates.filter(({ template }) => matches(np.spec?.podSelector?.matchLabels ?? {}, template.metadata?.labels))
    assert.equal(selected.length, 1, `NetworkPolicy ${np.metadata?.name} selects one workload`)
    const declared = new Set(selected[0]?.template.spec?.containers.flatMap((c) => (c.ports ?? []).map((p) => `${p.name}/${p.protocol}`)))
    for (const rule of np.spec?.ingress ?? []) {
      for (const p of rule.ports ?? [])
        assert.ok(declared.has(`${p.port}/${p.protocol}`), `NetworkPolicy port ${p.port}/${p.protocol} is declared`)
    }
  }
  for (const hpa of find<IHorizontalPodAutoscaler>(objs, 'HorizontalPodAutoscaler')) {
    const target = one<IStatefulSet>(objs, hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name)
    assert.equal(target.spec?.replicas, undefined, 'an autoscaled StatefulSet leaves replicas to the HPA')
  }
}

const relayName = `${RELEASE}-stargate-relay`
const gatewayName = `${RELEASE}-stargate-gateway`

function relayOf(objs: Manifest[]): { sts: IStatefulSet; c: IContainer } {
  const sts = one<IStatefulSet>(objs, 'StatefulSet', relayName)
  const c = sts.spec?.template.spec?.containers.find((x) => x.name === 'relay')
  assert.ok(c)
  return { sts, c }
}

/**
 * The environment Kubernetes gives a container in pod `podIndex`: its ConfigMaps (envFrom), then its env list
 * (which wins), with $(VAR) references expanded; downward-API values come from `downward`.
 */
function containerEnv(objs: Manifest[], c: IContainer, downward: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {}
  for (const from of c.envFrom ?? []) {
    if (from.configMapRef != null) Object.assign(env, one<IConfigMap>(objs, 'ConfigMap', from.configMapRef.name ?? '').data)
  }
  for (const e of c.env ?? []) {
    const field = e.valueFrom?.fieldRef?.fieldPath
    if (field != null) {
      assert.ok(field in downward, `a value for the downward-API field ${field}`)
      env[e.name] = downward[field] as string
    } else if (e.value != null) {
      env[e.name] = e.value.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (ref, name: string) => env[name] ?? ref)
    }
  }
  return env
}

const downwardOf = (podIndex: number, hostIp = '203.0.113.9'): Record<string, string> => ({
  "metadata.labels['apps.kubernetes.io/pod-index']": String(podIndex),
  'status.hostIP': hostIp,
  'metadata.name': `pod-${podIndex}`,
  'metadata.namespace': NAMESPACE,
})

function gatewayOf(objs: Manifest[], podIndex = 0): { sts: IStatefulSet; c: IContainer; env: Record<string, string> } {
  const sts = one<IStatefulSet>(objs, 'StatefulSet', gatewayName)
  const c = sts.spec?.template.spec?.containers.find((x) => x.name === 'gateway')
  assert.ok(c)
  assert.ok(c.envFrom?.[0]?.configMapRef?.name != null, 'gateway takes its flags from a ConfigMap')
  return { sts, c, env: containerEnv(objs, c, downwardOf(podIndex)) }
}

/** Parses the relay's rendered args with the real relay flag parser (args[0] is the subcommand). */
function relayFlags(objs: Manifest[], c: IContainer, podIndex = 0, hostIp?: string): ReturnType<typeof relayConfigFromFlags> {
  assert.deepEqual(c.command, undefined, 'the image entrypoint (stargate CLI) is kept')
  assert.equal(c.args?.[0], 'relay')
  const env = containerEnv(objs, c, downwardOf(podIndex, hostIp))
  for (const e of Object.keys(env)) {
    if (e.startsWith('STARGATE_')) assert.ok(knownEnv(RELAY_FLAGS).has(e), `${e} is a relay flag`)
  }
  // Kubernetes expands $(VAR) in args from the container environment.
  const args = (c.args ?? []).slice(1).map((a) => a.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (ref, name: string) => env[name] ?? ref))
  for (const a of args) assert.doesNotMatch(a, /\$\(/, `${a}: every reference is defined`)
  return relayConfigFromFlags(parseFlags(RELAY_FLAGS, args, env))
}

function knownEnv(flags: { name: string }[]): Set<string> {
  return new Set([...flags.map((f) => envName(f.name)), ...[...UPCOMING_FLAGS].map(envName)])
}

/** Parses the gateway's environment with the real gateway flag parser, as the process would at start. */
function gatewayFlags(env: Record<string, string>): ReturnType<typeof gatewayConfigFromFlags> {
  for (const k of Object.keys(env)) {
    if (k.startsWith('STARGATE_')) assert.ok(knownEnv(GATEWAY_FLAGS).has(k), `${k} is a gateway flag`)
  }
  return gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, [], env))
}

function mountFor(c: IContainer, file: string): { name: string; readOnly: boolean } {
  const m = (c.volumeMounts ?? []).find((x) => file === x.mountPath || file.startsWith(`${x.mountPath}/`))
  assert.ok(m, `${file} lies on a volume mount of ${c.name}`)
  return { name: m.name, readOnly: m.readOnly === true }
}

/**
 * Where pod `podIndex` of a StatefulSet finds `file`: the PersistentVolumeClaim Kubernetes binds to that pod
 * (<template>-<statefulset>-<ordinal>), or a key of a Secret. Never an emptyDir: that would be a new peer id per pod.
 */
function storageOf(sts: IStatefulSet, c: IContainer, file: string, podIndex: number): string {
  const mount = mountFor(c, file)
  const claim = sts.spec?.volumeClaimTemplates?.find((t) => t.metadata?.name === mount.name)
  if (claim != null) return `pvc:${mount.name}-${sts.metadata?.name}-${podIndex}${file.slice(mountPathOf(c, mount.name).length)}`
  const vol = sts.spec?.template.spec?.volumes?.find((v) => v.name === mount.name)
  assert.ok(vol?.secret != null, `${file} is on a persistent volume or a Secret, not ${JSON.stringify(vol)}`)
  assert.equal(mount.readOnly, true, 'a Secret is mounted read-only')
  const key = file.slice(mountPathOf(c, mount.name).length + 1)
  const item = vol.secret.items?.find((i) => i.path === key)
  return `secret:${vol.secret.secretName}/${item?.key ?? key}`
}

const mountPathOf = (c: IContainer, name: string): string => (c.volumeMounts ?? []).find((m) => m.name === name)?.mountPath ?? ''

/** The identity source of every pod of the relay and gateway StatefulSets, by pod name. */
function identitySources(objs: Manifest[]): Map<string, string> {
  const out = new Map<string, string>()
  const { sts: relaySts, c: relay } = relayOf(objs)
  for (let i = 0; i < (relaySts.spec?.replicas ?? 0); i++) {
    out.set(`${relayName}-${i}`, storageOf(relaySts, relay, relayFlags(objs, relay, i).identityFile, i))
  }
  const gw = gatewayOf(objs)
  for (let i = 0; i < (gw.sts.spec?.replicas ?? 0); i++) {
    const { env } = gatewayOf(objs, i)
    out.set(`${gatewayName}-${i}`, storageOf(gw.sts, gw.c, gatewayFlags(env).identityFile, i))
  }
  return out
}

function testPodOf(objs: Manifest[]): IPod {
  const pods = find<IPod>(objs, 'Pod')
  assert.equal(pods.length, 1, 'one helm test Pod')
  return pods[0] as IPod
}

describe('helm chart', () => {
  it('helm - lint --strict passes with default and non-default values', () => {
    // Lint also renders NOTES.txt, so its branches are covered here (helm template does not render it).
    for (const values of [
      {},
      { relay: { replicas: 3, service: { type: 'LoadBalancer', perPod: true } }, metrics: { enabled: true } },
      { relay: { replicas: 2, service: { type: 'NodePort', perPod: true, nodePort: 30400, stunNodePort: 30480 } } },
      {
        relay: { identity: { existingSecret: 'k' }, announce: ['/dns4/r.example.com/tcp/4001'], stun: { enabled: false } },
        gateway: { replicas: 3, identity: { existingSecret: 'g' }, releaseRelays: false },
        tests: { enabled: false },
      },
      {
        metrics: { enabled: true, serviceMonitor: { enabled: true } },
        networkPolicy: { enabled: true },
        otel: { enabled: true, endpoint: 'http://c:4318' },
        grafana: { dashboards: { enabled: true } },
        prometheusRule: { enabled: true },
        gateway: { autoscaling: { enabled: true }, natsUrl: 'nats://n:4222', relays: [`/dns4/r/tcp/4001/p2p/${RELAY_PEER}`] },
      },
    ]) {
      const r = runHelm(['lint', '--strict', CHART], values)
      assert.equal(r.status, 0, `helm lint failed:\n${r.stdout}\n${r.stderr}`)
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/)
    }
  })

  it('helm - default values render valid objects: relay and gateway StatefulSets with state on PVCs, the helm test Pod', () => {
    const objs = render()
    checkCommon(objs)
    const kinds = objs.map((o) => o.kind).sort()
    assert.deepEqual(
      [...new Set(kinds)],
      ['ConfigMap', 'Pod', 'PodDisruptionBudget', 'Service', 'ServiceAccount', 'StatefulSet'],
      'no optional objects by default',
    )

    const { sts, c } = relayOf(objs)
    assert.equal(sts.spec?.replicas, 1)
    assert.equal(sts.spec?.serviceName, `${relayName}-headless`)
    assert.deepEqual(
      c.ports?.map((p) => [p.name, p.containerPort, p.protocol]),
      [
        ['libp2p', 4001, 'TCP'],
        ['admin', 4002, 'TCP'],
        ['stun', 3478, 'UDP'],
      ],
    )
    assert.deepEqual(c.livenessProbe?.grpc, { port: 4002, service: 'stargate.v1.RelayService' })
    assert.deepEqual(c.readinessProbe?.grpc, { port: 4002, service: '' })
    const relay = relayFlags(objs, c)
    assert.equal(relay.init.port, 4001)
    assert.equal(relay.init.host, '0.0.0.0')
    assert.deepEqual(relay.admin, { host: '0.0.0.0', port: 4002 })
    assert.equal(relay.init.maxConnections, 1000)
    assert.equal(relay.stunPort, 3478, 'the STUN responder runs on the port the Services name')
    assert.deepEqual(relay.init.announce, [])
    // The relay creates its identity on first start on the PVC, so the peer id survives restarts.
    const mount = mountFor(c, relay.identityFile)
    assert.equal(mount.readOnly, false)
    const claims = sts.spec?.volumeClaimTemplates ?? []
    assert.deepEqual(
      claims.map((x) => x.metadata?.name),
      [mount.name],
    )
    assert.equal(claims[0]?.spec?.resources?.requests?.storage, '16Mi')
    assert.equal(sts.spec?.persistentVolumeClaimRetentionPolicy?.whenDeleted, 'Retain')

    const relaySvc = one<IService>(objs, 'Service', relayName)
    assert.equal(relaySvc.spec?.type, 'ClusterIP')
    assert.deepEqual(
      relaySvc.spec?.ports?.map((p) => [p.name, p.port, p.protocol]),
      [
        ['libp2p', 4001, 'TCP'],
        ['stun', 3478, 'UDP'],
      ],
      'libp2p and STUN on the relay Service; the admin API is not',
    )
    assert.ok(one<IService>(objs, 'Service', `${relayName}-headless`).spec?.ports?.some((p) => p.name === 'stun' && p.protocol === 'UDP'))

    const gw = gatewayOf(objs)
    assert.equal(gw.sts.spec?.replicas, 2)
    assert.equal(gw.sts.spec?.serviceName, `${gatewayName}-headless`)
    assert.deepEqual(gw.c.args, ['gateway'])
    assert.deepEqual(gw.c.livenessProbe?.grpc, { port: 50051, service: 'stargate.v1.GatewayService' })
    assert.deepEqual(gw.c.readinessProbe?.grpc, { port: 50051, service: '' })
    assert.deepEqual(
      gw.c.ports?.map((p) => [p.name, p.containerPort]),
      [
        ['api', 50051],
        ['libp2p', 4011],
      ],
    )
    const g = gatewayFlags(gw.env)
    assert.equal(g.init.apiHost, '0.0.0.0')
    assert.equal(g.init.apiPort, 50051)
    assert.deepEqual(g.init.p2pListen, ['/ip4/0.0.0.0/tcp/4011'])
    assert.deepEqual(g.init.natsServers, [])
    // Identity and state directory on the writable per-pod PVC; sized for the journal.
    const state = gw.env.STARGATE_STATE_DIR as string
    assert.equal(mountFor(gw.c, state).name, 'state')
    assert.equal(mountFor(gw.c, state).readOnly, false)
    assert.equal(mountFor(gw.c, g.identityFile).name, 'state')
    const gwClaims = gw.sts.spec?.volumeClaimTemplates ?? []
    assert.deepEqual(
      gwClaims.map((x) => [x.metadata?.name, x.spec?.resources?.requests?.storage]),
      [['state', '256Mi']],
    )
    assert.deepEqual(gw.sts.spec?.persistentVolumeClaimRetentionPolicy, { whenDeleted: 'Retain', whenScaled: 'Retain' })
    const gsvc = one<IService>(objs, 'Service', gatewayName)
    assert.deepEqual(
      gsvc.spec?.ports?.map((p) => [p.name, p.port, p.appProtocol]),
      [['grpc', 50051, 'grpc']],
    )
  })

  it('helm - one install: the gateways dial every relay of the release by DNS name, without a peer id', () => {
    for (const replicas of [1, 3]) {
      const objs = render({ relay: { replicas } })
      checkCommon(objs)
      const g = gatewayFlags(gatewayOf(objs).env)
      const expected = Array.from(
        { length: replicas },
        (_, i) => `/dns4/${relayName}-${i}.${relayName}-headless.${NAMESPACE}.svc.cluster.local/tcp/4001`,
      )
      // gatewayFlags parsed them with the gateway's own --relay validation.
      assert.deepEqual(g.init.relays, expected)
      // Each name is a relay pod (<pod>.<serviceName>) on the port its libp2p listener uses.
      const { sts, c } = relayOf(objs)
      const headless = one<IService>(objs, 'Service', `${relayName}-headless`)
      assert.equal(sts.spec?.serviceName, headless.metadata?.name)
      assert.equal(headless.spec?.clusterIP, 'None')
      assert.ok(headless.spec?.ports?.some((p) => p.name === 'libp2p' && p.port === relayFlags(objs, c).init.port))
    }
    const extra = `/dns4/relay.example.com/tcp/4001/p2p/${RELAY_PEER}`
    const own = render({ relay: { enabled: false }, gateway: { relays: [extra] } })
    assert.deepEqual(gatewayFlags(gatewayOf(own).env).init.relays, [extra], 'without the release relays only gateway.relays')
  })

  it('helm - identities are stable per replica: two renders give every pod name the same identity source', () => {
    for (const values of [
      { relay: { replicas: 3 }, gateway: { replicas: 3 } },
      {
        relay: { replicas: 2, identity: { existingSecret: 'relay-keys' } },
        gateway: { replicas: 3, identity: { existingSecret: 'gw-keys' } },
      },
    ]) {
      // The second render changes unrelated settings (image tag, a flag, pod annotations): the sources must not move.
      const first = identitySources(render(values))
      const second = identitySources(
        render({
          ...values,
          image: { repository: 'registry.example.com/stargate', tag: '9.9.9' },
          gateway: { ...values.gateway, config: { 'call-deadline-ms': 7000 }, podAnnotations: { rollout: '2' } },
        }),
      )
      assert.deepEqual([...second], [...first], 'same pod name, same identity source')
      assert.equal(new Set(first.values()).size, first.size, `every pod has its own identity: ${[...first.values()]}`)
      for (const [pod, source] of first) {
        const ordinal = pod.split('-').at(-1)
        if (source.startsWith('pvc:')) {
          assert.match(source, new RegExp(`^pvc:(data|state)-${pod}/`), `${pod}: on the PVC the StatefulSet binds to it`)
        } else {
          assert.match(source, new RegExp(`^secret:(relay-keys/relay|gw-keys/gateway)-${ordinal}\\.key$`), `${pod}: its own Secret key`)
        }
      }
    }
    // With identities from a Secret the gateway still writes its state (journal) to its own PVC, never beside the key.
    const objs = render({ gateway: { replicas: 2, identity: { existingSecret: 'gw-keys' } } })
    for (const i of [0, 1]) {
      const { sts, c, env } = gatewayOf(objs, i)
      const g = gatewayFlags(env)
      assert.equal(mountFor(c, g.identityFile).readOnly, true)
      assert.equal(storageOf(sts, c, env.STARGATE_STATE_DIR as string, i), `pvc:state-${gatewayName}-${i}`)
    }
  })

  it('helm - the gateway state volume is sized for the journal bound: half of it by default, a larger bound must fit', () => {
    const bytes = (q: string): number => {
      const m = /^(\d+)(Ki|Mi|Gi)$/.exec(q)
      assert.ok(m, q)
      return Number(m[1]) * { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[m[2] as 'Ki' | 'Mi' | 'Gi']
    }
    const sized = (values: object): { journal: number | undefined; volume: number } => {
      const objs = render(values)
      const gw = gatewayOf(objs)
      const volume = gw.sts.spec?.volumeClaimTemplates?.find(
        (t) => t.metadata?.name === mountFor(gw.c, gw.env.STARGATE_STATE_DIR ?? '').name,
      )
      return {
        journal: gatewayFlags(gw.env).init.requestJournalMaxBytes,
        volume: bytes(volume?.spec?.resources?.requests?.storage as string),
      }
    }
    // The default volume keeps the code's default bound.
    const byDefault = sized({})
    assert.equal(byDefault.journal, GATEWAY_DEFAULTS.requestJournalMaxBytes)
    assert.equal(byDefault.journal, byDefault.volume / 2)
    const large = sized({ gateway: { persistence: { size: '2Gi' } } })
    assert.equal(large.journal, 1024 ** 3)
    const explicit = sized({ gateway: { config: { 'request-journal-max-bytes': 100 * 1024 ** 2 } } })
    assert.equal(explicit.journal, 100 * 1024 ** 2)
    const tooLarge = runHelm(['template', RELEASE, CHART, '--kube-version', '1.31.0'], {
      gateway: { config: { 'request-journal-max-bytes': 250 * 1024 ** 2 } },
    })
    assert.notEqual(tooLarge.status, 0)
    assert.match(tooLarge.stderr, /gateway\.config\.request-journal-max-bytes 262144000 does not fit gateway\.persistence\.size 256Mi/)
  })

  it('helm - STUN: UDP port in the relay container, its Services and the NetworkPolicy; --no-stun when disabled', () => {
    const on = render({ networkPolicy: { enabled: true }, relay: { stun: { port: 3479 } } })
    checkCommon(on)
    const { c } = relayOf(on)
    assert.equal(relayFlags(on, c).stunPort, 3479)
    assert.ok(c.ports?.some((p) => p.name === 'stun' && p.containerPort === 3479 && p.protocol === 'UDP'))
    for (const name of [relayName, `${relayName}-headless`]) {
      const svc = one<IService>(on, 'Service', name)
      assert.ok(
        svc.spec?.ports?.some((p) => p.name === 'stun' && p.port === 3479 && p.protocol === 'UDP' && p.targetPort === 'stun'),
        name,
      )
    }
    const np = one<INetworkPolicy>(on, 'NetworkPolicy', relayName)
    const stunRule = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'stun' && p.protocol === 'UDP'))
    assert.ok(stunRule != null, 'STUN is admitted')
    assert.equal(stunRule.from, undefined, 'from any source, like libp2p')

    const off = render({ networkPolicy: { enabled: true }, relay: { stun: { enabled: false } } })
    checkCommon(off)
    const relayOff = relayOf(off)
    assert.equal(relayFlags(off, relayOff.c).stunPort, undefined, '--no-stun')
    const all = JSON.stringify(off)
    assert.ok(!all.includes('"stun"'), 'no STUN port anywhere')
  })

  it('helm - public relay: 3 replicas, one LoadBalancer Service per pod, announce addresses wired to --announce', () => {
    const announce = ['/dns4/relay-$(POD_INDEX).example.com/tcp/4001', '/dns4/relay-$(POD_INDEX).example.net/tcp/4001']
    const objs = render({
      relay: {
        replicas: 3,
        announce,
        service: { type: 'LoadBalancer', perPod: true, annotations: { 'service.beta.kubernetes.io/aws-load-balancer-type': 'nlb' } },
        config: { 'reservation-ttl-ms': 600000, 'max-reservations-per-ip': '4' },
      },
    })
    checkCommon(objs)
    const { sts, c } = relayOf(objs)
    assert.equal(sts.spec?.replicas, 3)
    const podIndexEnv = c.env?.find((e) => e.name === 'POD_INDEX')
    assert.equal(podIndexEnv?.valueFrom?.fieldRef?.fieldPath, "metadata.labels['apps.kubernetes.io/pod-index']")
    const r1 = relayFlags(objs, c, 1)
    assert.deepEqual(r1.init.announce, ['/dns4/relay-1.example.com/tcp/4001', '/dns4/relay-1.example.net/tcp/4001'])
    assert.equal(r1.init.reservationTtlMs, 600000)
    assert.equal(r1.init.maxReservationsPerIp, 4)
    const perPod = find<IService>(objs, 'Service').filter((s) => s.spec?.type === 'LoadBalancer')
    assert.deepEqual(
      perPod.map((s) => s.metadata?.name),
      [0, 1, 2].map((i) => `${relayName}-${i}`),
    )
    for (const [i, s] of perPod.entries()) {
      assert.equal(s.spec?.selector?.['statefulset.kubernetes.io/pod-name'], `${relayName}-${i}`, 'each Service selects one pod')
      assert.equal(s.spec?.externalTrafficPolicy, 'Local', 'client IPs are kept for per-IP limits')
      assert.deepEqual(
        s.spec?.ports?.map((p) => [p.name, p.port, p.protocol]),
        [
          ['libp2p', 4001, 'TCP'],
          ['stun', 3478, 'UDP'],
        ],
        'only libp2p and STUN are public',
      )
      assert.equal(s.metadata?.annotations?.['service.beta.kubernetes.io/aws-load-balancer-type'], 'nlb')
    }
    assert.equal(find(objs, 'Service', relayName).length, 0, 'no shared relay Service in per-pod mode')
  })

  it('helm - nodePort and loadBalancerIP: Service ports and the announce address derived from them agree, per pod', () => {
    const nodePorts = render({ relay: { replicas: 3, service: { type: 'NodePort', perPod: true, nodePort: 30410, stunNodePort: 30480 } } })
    checkCommon(nodePorts)
    const { c } = relayOf(nodePorts)
    for (const i of [0, 1, 2]) {
      const svc = one<IService>(nodePorts, 'Service', `${relayName}-${i}`)
      const libp2p = svc.spec?.ports?.find((p) => p.name === 'libp2p')
      assert.equal(libp2p?.nodePort, 30410 + i)
      assert.equal(svc.spec?.ports?.find((p) => p.name === 'stun')?.nodePort, 30480 + i)
      // The pod runs on the node with IP 198.51.100.<i>: it announces that node's address at its own node port.
      const flags = relayFlags(nodePorts, c, i, `198.51.100.${i}`)
      assert.deepEqual(flags.init.announce, [`/ip4/198.51.100.${i}/tcp/${libp2p?.nodePort}`])
    }
    const named = render({ relay: { service: { type: 'NodePort', nodePort: 30401, nodeAddress: 'relay.example.com' } } })
    checkCommon(named)
    assert.deepEqual(relayFlags(named, relayOf(named).c).init.announce, ['/dns/relay.example.com/tcp/30401'])
    assert.ok(!JSON.stringify(relayOf(named).c.env).includes('status.hostIP'), 'the node IP is read only when announced')

    const lb = render({ relay: { service: { type: 'LoadBalancer', loadBalancerIP: '203.0.113.7' } } })
    checkCommon(lb)
    assert.equal(one<IService>(lb, 'Service', relayName).spec?.loadBalancerIP, '203.0.113.7')
    assert.deepEqual(relayFlags(lb, relayOf(lb).c).init.announce, ['/ip4/203.0.113.7/tcp/4001'])
    // An explicit announce wins over the derived one.
    const explicit = render({
      relay: { announce: ['/dns4/relay.example.org/tcp/443'], service: { type: 'LoadBalancer', loadBalancerIP: '203.0.113.7' } },
    })
    assert.deepEqual(relayFlags(explicit, relayOf(explicit).c).init.announce, ['/dns4/relay.example.org/tcp/443'])
  })

  it('helm - extraVolumes and extraVolumeMounts carry TLS and token files to the flags that read them', () => {
    const objs = render({
      gateway: {
        extraVolumes: [
          { name: 'api-tls', secret: { secretName: 'stargate-api-tls' } },
          { name: 'api-tokens', secret: { secretName: 'stargate-api-tokens' } },
        ],
        extraVolumeMounts: [
          { name: 'api-tls', mountPath: '/etc/stargate/tls', readOnly: true },
          { name: 'api-tokens', mountPath: '/etc/stargate/tokens', readOnly: true },
        ],
        config: {
          'tls-cert': '/etc/stargate/tls/tls.crt',
          'tls-key': '/etc/stargate/tls/tls.key',
          'auth-token-file': '/etc/stargate/tokens/tokens',
        },
      },
      relay: {
        extraVolumes: [{ name: 'extra', configMap: { name: 'relay-extra' } }],
        extraVolumeMounts: [{ name: 'extra', mountPath: '/etc/stargate/extra', readOnly: true }],
      },
    })
    checkCommon(objs)
    const gw = gatewayOf(objs)
    const g = gatewayFlags(gw.env)
    for (const [file, secret] of [
      [g.init.tlsCertFile, 'stargate-api-tls'],
      [g.init.tlsKeyFile, 'stargate-api-tls'],
      [g.init.authTokenFile, 'stargate-api-tokens'],
    ] as const) {
      assert.ok(file != null)
      const m = mountFor(gw.c, file)
      assert.equal(m.readOnly, true, `${file} is mounted read-only`)
      assert.equal(gw.sts.spec?.template.spec?.volumes?.find((v) => v.name === m.name)?.secret?.secretName, secret)
    }
    const { sts, c } = relayOf(objs)
    assert.ok(c.volumeMounts?.some((m) => m.name === 'extra' && m.mountPath === '/etc/stargate/extra'))
    assert.equal(sts.spec?.template.spec?.volumes?.find((v) => v.name === 'extra')?.configMap?.name, 'relay-extra')
  })

  it('helm - the helm test Pod is a valid test hook that checks every relay and two gateways with the script in the image', () => {
    const objs = render({ relay: { replicas: 2 }, gateway: { replicas: 3 }, networkPolicy: { enabled: true, metricsFrom: [] } })
    checkCommon(objs)
    const pod = testPodOf(objs)
    assert.equal(pod.metadata?.annotations?.['helm.sh/hook'], 'test')
    assert.match(pod.metadata?.annotations?.['helm.sh/hook-delete-policy'] ?? '', /before-hook-creation/)
    const spec = pod.spec as IPodSpec
    assert.equal(spec.restartPolicy, 'Never')
    checkSecurity(pod.metadata?.name ?? '', spec)
    for (const c of spec.containers) for (const m of c.volumeMounts ?? []) assert.ok(spec.volumes?.some((v) => v.name === m.name))
    const [c] = spec.containers
    assert.ok(c != null)
    assert.equal(c.image, relayOf(objs).c.image, 'the same image as the workloads')
    // The command runs deploy/helm-test.ts, which both images contain (WORKDIR /app).
    assert.deepEqual(c.command, ['node', 'deploy/helm-test.ts'])
    assert.ok(existsSync(join(CHART, '../..', 'deploy/helm-test.ts')))
    for (const df of ['services/relay/Dockerfile', 'services/gateway/Dockerfile']) {
      assert.match(
        readFileSync(join(CHART, '../..', df), 'utf8'),
        /^COPY .*deploy\/helm-test\.ts .*\.\/deploy\/$/m,
        `${df} copies the test script`,
      )
      assert.match(readFileSync(join(CHART, '../..', df), 'utf8'), /^WORKDIR \/app$/m)
    }
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? '']))
    // Gateways 0 and 1 through the gateway StatefulSet's headless Service, on the API port.
    const gw = gatewayOf(objs)
    const apiPort = gatewayFlags(gw.env).init.apiPort
    assert.deepEqual(
      env.STARGATE_TEST_GATEWAYS?.split(','),
      [0, 1].map((i) => `${gatewayName}-${i}.${gw.sts.spec?.serviceName}.${NAMESPACE}.svc.cluster.local:${apiPort}`),
    )
    const { sts, c: relay } = relayOf(objs)
    assert.deepEqual(
      env.STARGATE_TEST_RELAY_ADMINS?.split(','),
      [0, 1].map((i) => `${relayName}-${i}.${sts.spec?.serviceName}.${NAMESPACE}.svc.cluster.local:${relayFlags(objs, relay).admin.port}`),
    )
    assert.equal(env.STARGATE_TEST_DEADLINE_MS, '120000')
    // With NetworkPolicies on, the test Pod may reach the relay admin API.
    const np = one<INetworkPolicy>(objs, 'NetworkPolicy', relayName)
    const admin = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'admin'))
    assert.ok(
      admin?.from?.some((f) => matches(f.podSelector?.matchLabels ?? {}, pod.metadata?.labels)),
      'the test Pod reaches the admin API',
    )

    // One gateway: it pings itself. Disabled: no Pod.
    const single = testPodOf(render({ gateway: { replicas: 1 } }))
    assert.equal(single.spec?.containers[0]?.env?.find((e) => e.name === 'STARGATE_TEST_GATEWAYS')?.value?.split(',').length, 1)
    assert.equal(find(render({ tests: { enabled: false } }), 'Pod').length, 0)
  })

  it('helm - existing Secrets: relay identity per pod from the Secret, gateway identity per pod from its Secret', () => {
    const objs = render({
      relay: { replicas: 2, identity: { existingSecret: 'relay-keys' } },
      gateway: {
        replicas: 2,
        identity: { existingSecret: 'gateway-keys' },
        relays: [`/dns4/relay.example.com/tcp/4001/p2p/${RELAY_PEER}`],
      },
    })
    checkCommon(objs)
    const { sts, c } = relayOf(objs)
    assert.deepEqual(sts.spec?.volumeClaimTemplates, undefined, 'no PVC when the identity comes from a Secret')
    const r0 = relayFlags(objs, c, 0)
    const r1 = relayFlags(objs, c, 1)
    assert.equal(r0.identityFile, '/etc/stargate/identity/relay-0.key')
    assert.equal(r1.identityFile, '/etc/stargate/identity/relay-1.key')
    const m = mountFor(c, r0.identityFile)
    assert.equal(m.readOnly, true)
    const vol = sts.spec?.template.spec?.volumes?.find((v) => v.name === m.name)
    assert.equal(vol?.secret?.secretName, 'relay-keys')
    assert.equal(vol?.secret?.defaultMode, 0o440)

    const g1 = gatewayFlags(gatewayOf(objs, 1).env)
    assert.ok(g1.init.relays?.includes(`/dns4/relay.example.com/tcp/4001/p2p/${RELAY_PEER}`))
    assert.equal(g1.identityFile, '/etc/stargate/identity/gateway-1.key')
    const gw = gatewayOf(objs, 1)
    const gm = mountFor(gw.c, g1.identityFile)
    const gvol = gw.sts.spec?.template.spec?.volumes?.find((v) => v.name === gm.name)
    assert.equal(gvol?.secret?.secretName, 'gateway-keys')
    assert.equal(gm.readOnly, true)
  })

  it('helm - metrics, ServiceMonitor, NetworkPolicy, HPA, OpenTelemetry and NATS on', () => {
    const objs = render({
      metrics: { enabled: true, serviceMonitor: { enabled: true, labels: { release: 'kube-prometheus-stack' } } },
      otel: { enabled: true, endpoint: 'http://otel-collector.observability:4318' },
      networkPolicy: {
        enabled: true,
        metricsFrom: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }],
      },
      gateway: {
        natsUrl: 'nats://nats.nats.svc:4222',
        autoscaling: { enabled: true, minReplicas: 2, maxReplicas: 6 },
        config: { 'call-deadline-ms': 5000, 'tier-stagger-ms': 250, 'backoff-factor': 1.5, 'dedupe-max-bytes': 64 * 1024 ** 3 },
        networkPolicy: { apiFrom: [{ namespaceSelector: { matchLabels: { team: 'apps' } } }] },
      },
    })
    checkCommon(objs)
    const kinds = new Set(objs.map((o) => o.kind))
    for (const k of ['ServiceMonitor', 'NetworkPolicy', 'HorizontalPodAutoscaler']) assert.ok(kinds.has(k), `${k} rendered`)

    const { c } = relayOf(objs)
    assert.ok(c.ports?.some((p) => p.name === 'metrics' && p.containerPort === 9464))
    assert.equal(c.env?.find((e) => e.name === 'STARGATE_METRICS_LISTEN')?.value, '0.0.0.0:9464')
    const otelEnv = Object.fromEntries((c.env ?? []).filter((e) => e.name.startsWith('OTEL_')).map((e) => [e.name, e.value]))
    assert.equal(otelEnv.OTEL_EXPORTER_OTLP_ENDPOINT, 'http://otel-collector.observability:4318')
    assert.equal(otelEnv.OTEL_EXPORTER_OTLP_PROTOCOL, 'http/protobuf')
    assert.equal(otelEnv.OTEL_SERVICE_NAME, 'stargate-relay')
    relayFlags(objs, c)

    const gw = gatewayOf(objs)
    assert.equal(gw.sts.spec?.replicas, undefined)
    assert.equal(gw.env.STARGATE_METRICS_LISTEN, '0.0.0.0:9464')
    assert.equal(gw.env.OTEL_SERVICE_NAME, 'stargate-gateway')
    const g = gatewayFlags(gw.env)
    assert.deepEqual(g.init.natsServers, ['nats://nats.nats.svc:4222'])
    assert.equal(g.init.callDeadlineMs, 5000)
    assert.equal(g.init.tierStaggerMs, 250)
    assert.equal(g.init.backoffFactor, 1.5, 'fractions stay fractions')
    assert.equal(g.init.dedupeMaxBytes, 64 * 1024 ** 3, 'large whole numbers are written without an exponent')
    assert.equal(g.init.relays?.length, 1)

    // The ServiceMonitor scrapes the "metrics" port of exactly the relay (headless) and gateway Services.
    const sm = one<Manifest>(objs, 'ServiceMonitor', `${RELEASE}-stargate`)
    assert.equal(sm.metadata.labels?.release, 'kube-prometheus-stack')
    assert.deepEqual(
      sm.spec.endpoints.map((e: { port: string }) => e.port),
      ['metrics'],
    )
    const scraped = find<IService>(objs, 'Service').filter((s) => matches(sm.spec.selector.matchLabels, s.metadata?.labels))
    assert.deepEqual(scraped.map((s) => s.metadata?.name).sort(), [gatewayName, `${relayName}-headless`])
    for (const s of scraped) assert.ok(s.spec?.ports?.some((p) => p.name === 'metrics' && p.port === 9464))

    // NetworkPolicy: the relay admin API only from the gateways and the test Pod; metrics only from monitoring.
    const np = one<INetworkPolicy>(objs, 'NetworkPolicy', relayName)
    const adminRule = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'admin'))
    assert.deepEqual(
      adminRule?.from?.map((f) => f.podSelector?.matchLabels?.['app.kubernetes.io/component']),
      ['gateway', 'test'],
    )
    const metricsRule = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'metrics'))
    assert.equal(metricsRule?.from?.[0]?.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'], 'monitoring')
    const libp2pRule = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'libp2p'))
    assert.equal(libp2pRule?.from, undefined, 'libp2p is open to every source')
    const gwNp = one<INetworkPolicy>(objs, 'NetworkPolicy', gatewayName)
    const apiRule = gwNp.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'api'))
    assert.deepEqual(
      apiRule?.from?.map((f) => f.namespaceSelector?.matchLabels?.team ?? f.podSelector?.matchLabels?.['app.kubernetes.io/component']),
      ['apps', 'test'],
      'the API from gateway.networkPolicy.apiFrom and the helm test Pod',
    )

    const hpa = one<IHorizontalPodAutoscaler>(objs, 'HorizontalPodAutoscaler', gatewayName)
    assert.equal(hpa.spec.scaleTargetRef.kind, 'StatefulSet')
    assert.equal(hpa.spec.minReplicas, 2)
    assert.equal(hpa.spec.maxReplicas, 6)
  })

  it('helm - gateway.corsAllowOrigins reaches every gateway as --cors-allow-origin; none by default', () => {
    assert.equal(gatewayOf(render()).env.STARGATE_CORS_ALLOW_ORIGIN, undefined, 'no CORS unless asked for')
    const origins = ['https://dashboard.example.com', 'http://localhost:8080']
    const objs = render({ gateway: { corsAllowOrigins: origins } })
    checkCommon(objs)
    for (const pod of [0, 1]) assert.deepEqual(gatewayFlags(gatewayOf(objs, pod).env).init.corsAllowOrigins, origins)
    assert.deepEqual(gatewayFlags(gatewayOf(render({ gateway: { corsAllowOrigins: ['*'] } })).env).init.corsAllowOrigins, ['*'])
  })

  it('helm - the Grafana dashboard ConfigMap and the PrometheusRule ship the files compose uses', () => {
    const objs = render({
      grafana: { dashboards: { enabled: true, annotations: { grafana_folder: 'Stargate' } } },
      prometheusRule: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
    })
    checkCommon(objs)
    const cm = one<IConfigMap>(objs, 'ConfigMap', `${RELEASE}-stargate-dashboard`)
    assert.equal(cm.metadata?.labels?.grafana_dashboard, '1', 'the label the Grafana sidecar selects on')
    assert.equal(cm.metadata?.annotations?.grafana_folder, 'Stargate')
    const dashboardFile = readFileSync(join(CHART, 'files/grafana/stargate.json'), 'utf8')
    assert.deepEqual(JSON.parse(cm.data?.['stargate.json'] ?? ''), JSON.parse(dashboardFile))
    const rule = one<Manifest>(objs, 'PrometheusRule', `${RELEASE}-stargate`)
    assert.equal(rule.metadata.labels?.release, 'kube-prometheus-stack')
    assert.deepEqual(rule.spec, parse(readFileSync(join(CHART, 'files/prometheus/alerts.yaml'), 'utf8')))
    const compose = readFileSync(join(CHART, '../../docker-compose.yml'), 'utf8')
    assert.ok(compose.includes('./helm/stargate/files/grafana/stargate.json:'), 'compose provisions the same dashboard')
    assert.ok(compose.includes('./helm/stargate/files/prometheus/alerts.yaml:'), 'compose loads the same alerts')
  })

  it('helm - relay only or gateway only renders just that component', () => {
    const relayOnly = render({ gateway: { enabled: false } })
    checkCommon(relayOnly)
    assert.ok(relayOnly.every((o) => o.metadata.labels?.['app.kubernetes.io/component'] !== 'gateway'))
    const gatewayOnly = render({ relay: { enabled: false }, networkPolicy: { enabled: true } })
    checkCommon(gatewayOnly)
    assert.ok(gatewayOnly.every((o) => o.metadata.labels?.['app.kubernetes.io/component'] !== 'relay'))
    assert.equal(testPodOf(gatewayOnly).spec?.containers[0]?.env?.find((e) => e.name === 'STARGATE_TEST_RELAY_ADMINS')?.value, '')
  })

  it('helm - the strict validator rejects unknown and mistyped fields', () => {
    const r = runHelm(['template', RELEASE, CHART, '--kube-version', '1.31.0'], {})
    assert.equal(r.status, 0)
    assert.equal(strictValidate(r.stdout).status, 0)
    const typo = strictValidate(r.stdout.replaceAll('readOnlyRootFilesystem', 'readOnlyRootFileSystem'))
    assert.notEqual(typo.status, 0)
    assert.match(typo.output, /'readOnlyRootFileSystem' was unexpected/)
    const badType = strictValidate(r.stdout.replace('maxUnavailable: 1', 'maxUnavailable: [1]'))
    assert.notEqual(badType.status, 0)
  })

  it('helm - values.schema.json rejects bad values with a message naming the value', () => {
    const cases: [object, RegExp][] = [
      [{ relay: { service: { type: 'Public' } } }, /\/relay\/service\/type.*one of/],
      [{ gateway: { replicaCount: 3 } }, /additional properties 'replicaCount' not allowed/],
      [{ relay: { port: 70000 } }, /\/relay\/port/],
      [{ gateway: { relays: ['relay.example.com:4001'] } }, /\/gateway\/relays\/0.*does not match pattern/],
      [{ gateway: { relays: ['/ip4/10.0.0.1/tcp/4001/p2p-circuit'] } }, /\/gateway\/relays\/0.*does not match pattern/],
      [{ gateway: { config: { 'max-retrys': 3 } } }, /additional properties 'max-retrys' not allowed/],
      [{ relay: { announce: ['relay.example.com:4001'] } }, /\/relay\/announce\/0/],
      [{ relay: { service: { nodePort: 40000 } } }, /\/relay\/service\/nodePort/],
      [{ relay: { service: { loadBalancerIP: 'relay.example.com' } } }, /\/relay\/service\/loadBalancerIP/],
      [{ gateway: { extraVolumeMounts: [{ name: 'x' }] } }, /\/gateway\/extraVolumeMounts\/0.*mountPath/],
      [{ gateway: { corsAllowOrigins: ['https://app.example.com/'] } }, /\/gateway\/corsAllowOrigins\/0.*does not match pattern/],
    ]
    for (const [values, message] of cases) {
      const r = runHelm(['template', RELEASE, CHART, '--kube-version', '1.31.0'], values)
      assert.notEqual(r.status, 0, `rejected: ${JSON.stringify(values)}`)
      assert.match(r.stderr, /values don't meet the specifications of the schema/)
      assert.match(r.stderr, message)
    }
  })

  it('helm - settings that would share one peer id or address between pods fail with a clear message', () => {
    const cases: [object, RegExp][] = [
      [
        { relay: { replicas: 2, service: { type: 'LoadBalancer' } } },
        /relay\.service\.type LoadBalancer with 2 replicas needs relay\.service\.perPod=true/,
      ],
      [
        { relay: { replicas: 3, announce: ['/dns4/relay.example.com/tcp/4001'] } },
        /relay\.announce "\/dns4\/relay\.example\.com\/tcp\/4001" is the same for all 3 relays/,
      ],
      [
        { relay: { replicas: 2, service: { type: 'LoadBalancer', perPod: true, loadBalancerIP: '203.0.113.7' } } },
        /relay\.service\.loadBalancerIP is one address but there are 2 relays/,
      ],
      [
        { relay: { replicas: 2, service: { type: 'NodePort', perPod: true, nodePort: 30401 } } },
        /relay\.service\.nodePort 30401 with 2 per-pod Services: .* a nodePort ending in 0/,
      ],
    ]
    for (const [values, message] of cases) {
      const r = runHelm(['template', RELEASE, CHART, '--kube-version', '1.31.0'], values)
      assert.notEqual(r.status, 0, `rejected: ${JSON.stringify(values)}`)
      assert.match(r.stderr, message)
    }
    // The same settings render with one replica.
    checkCommon(render({ relay: { replicas: 1, service: { type: 'LoadBalancer' }, announce: ['/dns4/relay.example.com/tcp/4001'] } }))
  })

  it('helm - schema config keys are exactly the flags without a dedicated value', () => {
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'))
    const dedicated = {
      relay: ['host', 'port', 'admin-listen', 'max-connections', 'identity', 'announce', 'metrics-listen', 'stun-port', 'no-stun'],
      gateway: [
        'listen',
        'p2p-listen',
        'relay',
        'nats',
        'identity',
        'peer',
        'capability',
        'metrics-listen',
        'state-dir',
        'cors-allow-origin',
      ],
    }
    for (const [component, flags] of [
      ['relay', RELAY_FLAGS],
      ['gateway', GATEWAY_FLAGS],
    ] as const) {
      const config = Object.keys(schema.properties[component].properties.config.properties).sort()
      const expected = flags
        .map((f) => f.name)
        .filter((n) => !dedicated[component].includes(n))
        .sort()
      assert.deepEqual(
        config,
        expected,
        `${component}.config in values.schema.json lists every other ${component} flag (add new flags there)`,
      )
    }
  })

  it('helm - the chart README values table is generated from values.schema.json and values.yaml (node scripts/chart-readme.ts --write)', () => {
    const text = readFileSync(CHART_README, 'utf8')
    assert.ok(text.includes('<!-- VALUES -->') && text.includes('<!-- /VALUES -->'))
    assert.equal(renderChartReadme(text), text, 'README.md values table is stale: run node scripts/chart-readme.ts --write')
    // Every value has a description, and every key of values.yaml is in the schema and in the table.
    const { schema, values } = readChart()
    const undocumented: string[] = []
    const walk = (node: SchemaNode, path: string): void => {
      for (const [name, child] of Object.entries(node.properties ?? {})) {
        const key = path === '' ? name : `${path}.${name}`
        if (!/\.config\./.test(key) && (child.description ?? '').trim() === '') undocumented.push(key)
        walk(child, key)
      }
    }
    walk(schema, '')
    assert.deepEqual(undocumented, [], 'every value in values.schema.json has a description')
    const leaves = (v: unknown, path: string): string[] =>
      v != null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0
        ? Object.entries(v).flatMap(([k, x]) => leaves(x, path === '' ? k : `${path}.${k}`))
        : [path]
    for (const key of leaves(values, '')) {
      // A key is in the table itself or under a row of one of its parents (maps such as relay.resources).
      const parts = key.split('.')
      const rows = parts.map((_, i) => `| \`${parts.slice(0, i + 1).join('.')}\``)
      assert.ok(
        rows.some((r) => text.includes(r)),
        `values.yaml key ${key} is in the README table`,
      )
    }
  })
})
