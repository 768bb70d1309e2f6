// Helm chart: lint, render with several value sets, validate every object against the Kubernetes
// schemas offline (kubernetes-validate --strict for 1.28 and 1.34, kubernetes-models, the Prometheus Operator
// models for the ServiceMonitor), check cross-object wiring, and parse the rendered relay args and
// gateway ConfigMap with the real CLI flag parsers.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, describe, it } from 'node:test'
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'
import { GATEWAY_FLAGS, gatewayConfigFromFlags } from '@stargate/gateway/cli'
import { RELAY_FLAGS, relayConfigFromFlags } from '@stargate/relay/cli'
import { envName, parseFlags } from '@stargate/shared/options'
import { Deployment, type IDeployment, type IStatefulSet, StatefulSet } from 'kubernetes-models/apps/v1'
import { HorizontalPodAutoscaler, type IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2'
import { type INetworkPolicy, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { type IPodDisruptionBudget, PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import {
  ConfigMap,
  type IConfigMap,
  type IContainer,
  type IPodSpec,
  type IPodTemplateSpec,
  type IProbe,
  type IService,
  type IVolume,
  Service,
  ServiceAccount,
} from 'kubernetes-models/v1'
import { parseAllDocuments } from 'yaml'
import { tool } from '../lib/tools.ts'

const CHART = join(import.meta.dirname, '../../helm/stargate')
const RELEASE = 'sg'
const NAMESPACE = 'stargate'
/** Flags announced by later features that the chart already wires (unknown STARGATE_* variables are ignored until then). */
const UPCOMING_FLAGS = new Set(['metrics-listen'])
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
    'apps/v1/Deployment': Deployment,
    'apps/v1/StatefulSet': StatefulSet,
    'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
    'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
    'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
    'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
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
    .filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet')
    .map((o) => ({ owner: o, template: (o as unknown as IDeployment).spec?.template as IPodTemplateSpec }))
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
    const selector = (owner as unknown as IDeployment).spec?.selector.matchLabels ?? {}
    assert.ok(matches(selector, template.metadata?.labels), `${owner.metadata.name}: selector matches its pod labels`)
    assert.equal(spec.automountServiceAccountToken, false)
    assert.equal(spec.securityContext?.runAsNonRoot, true)
    assert.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault')
    const volumes = new Set([
      ...(spec.volumes ?? []).map((v: IVolume) => v.name),
      ...((owner as unknown as IStatefulSet).spec?.volumeClaimTemplates ?? []).map((c) => c.metadata?.name),
    ])
    for (const c of spec.containers) {
      const sc = c.securityContext
      assert.equal(sc?.runAsNonRoot, true, `${c.name}: runAsNonRoot`)
      assert.equal(sc?.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation false`)
      assert.equal(sc?.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`)
      assert.deepEqual(sc?.capabilities?.drop, ['ALL'], `${c.name}: drops ALL capabilities`)
      assert.equal(sc?.seccompProfile?.type, 'RuntimeDefault')
      assert.ok(c.resources?.requests?.cpu != null && c.resources?.limits?.memory != null, `${c.name}: resources set`)
      for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `${c.name}: mount ${m.name} has a volume`)
      assert.ok(
        (c.volumeMounts ?? []).some((m) => m.mountPath === '/tmp'),
        `${c.name}: /tmp is writable with a read-only root`,
      )
      const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]))
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe] as (IProbe | undefined)[]) {
        assert.ok(probe?.grpc != null, `${c.name}: native gRPC probe`)
        assert.ok([...ports.values()].includes(probe.grpc.port), `${c.name}: probe port ${probe.grpc.port} is a container port`)
      }
    }
  }
  // Every Service selects pods of this release and targets named ports those pods declare.
  for (const svc of find<IService>(objs, 'Service')) {
    const selected = templates.filter(({ owner, template }) =>
      matches(svc.spec?.selector ?? {}, podLabels(owner, template, svc.spec?.selector?.['statefulset.kubernetes.io/pod-name'])),
    )
    assert.ok(selected.length > 0, `Service ${svc.metadata?.name} selects a workload`)
    const declared = new Set(
      selected.flatMap(({ template }) => template.spec?.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name)) ?? []),
    )
    for (const p of svc.spec?.ports ?? []) {
      assert.ok(declared.has(p.targetPort as string), `Service ${svc.metadata?.name}: targetPort ${p.targetPort} is declared`)
    }
  }
  for (const pdb of find<IPodDisruptionBudget>(objs, 'PodDisruptionBudget')) {
    const sel = pdb.spec?.selector?.matchLabels ?? {}
    assert.equal(templates.filter(({ template }) => matches(sel, template.metadata?.labels)).length, 1, 'PDB selects one workload')
  }
  for (const np of find<INetworkPolicy>(objs, 'NetworkPolicy')) {
    const selected = templates.filter(({ template }) => matches(np.spec?.podSelector?.matchLabels ?? {}, template.metadata?.labels))
    assert.equal(selected.length, 1, `NetworkPolicy ${np.metadata?.name} selects one workload`)
    const declared = new Set(selected[0]?.template.spec?.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name)))
    for (const rule of np.spec?.ingress ?? []) {
      for (const p of rule.ports ?? []) assert.ok(declared.has(p.port as string), `NetworkPolicy port ${p.port} is declared`)
    }
  }
  for (const hpa of find<IHorizontalPodAutoscaler>(objs, 'HorizontalPodAutoscaler')) {
    const target = one<IDeployment>(objs, hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name)
    assert.equal(target.spec?.replicas, undefined, 'an autoscaled Deployment leaves replicas to the HPA')
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

function gatewayOf(objs: Manifest[]): { dep: IDeployment; c: IContainer; env: Record<string, string> } {
  const dep = one<IDeployment>(objs, 'Deployment', gatewayName)
  const c = dep.spec?.template.spec?.containers.find((x) => x.name === 'gateway')
  assert.ok(c)
  const cmName = c.envFrom?.[0]?.configMapRef?.name
  assert.ok(cmName != null, 'gateway takes its flags from a ConfigMap')
  const cm = one<IConfigMap>(objs, 'ConfigMap', cmName)
  return { dep, c, env: { ...cm.data } }
}

/** Parses the relay's rendered args with the real relay flag parser (args[0] is the subcommand). */
function relayFlags(c: IContainer, podIndex = '0'): ReturnType<typeof relayConfigFromFlags> {
  assert.deepEqual(c.command, undefined, 'the image entrypoint (stargate CLI) is kept')
  assert.equal(c.args?.[0], 'relay')
  const env: Record<string, string> = {}
  for (const e of c.env ?? []) if (e.value != null) env[e.name] = e.value
  for (const e of Object.keys(env)) {
    if (e.startsWith('STARGATE_')) assert.ok(knownEnv(RELAY_FLAGS).has(e), `${e} is a relay flag`)
  }
  // Kubernetes expands $(POD_INDEX) in args from the container environment.
  const args = (c.args ?? []).slice(1).map((a) => a.replaceAll('$(POD_INDEX)', podIndex))
  return relayConfigFromFlags(parseFlags(RELAY_FLAGS, args, env))
}

function knownEnv(flags: { name: string }[]): Set<string> {
  return new Set([...flags.map((f) => envName(f.name)), ...[...UPCOMING_FLAGS].map(envName)])
}

/** Parses the gateway ConfigMap with the real gateway flag parser, as the process would at start. */
function gatewayFlags(env: Record<string, string>): ReturnType<typeof gatewayConfigFromFlags> {
  for (const k of Object.keys(env)) assert.ok(knownEnv(GATEWAY_FLAGS).has(k), `ConfigMap key ${k} is a gateway flag`)
  return gatewayConfigFromFlags(parseFlags(GATEWAY_FLAGS, [], env))
}

function mountFor(c: IContainer, file: string): { name: string; readOnly: boolean } {
  const m = (c.volumeMounts ?? []).find((x) => dirname(file) === x.mountPath)
  assert.ok(m, `${file} lies on a volume mount of ${c.name}`)
  return { name: m.name, readOnly: m.readOnly === true }
}

describe('helm chart', () => {
  it('helm - lint --strict passes with default and non-default values', () => {
    // Lint also renders NOTES.txt, so its branches are covered here (helm template does not render it).
    for (const values of [
      {},
      { relay: { replicas: 3, service: { type: 'LoadBalancer', perPod: true } }, metrics: { enabled: true } },
      {
        relay: { identity: { existingSecret: 'k' }, announce: ['/dns4/r.example.com/tcp/4001'] },
        gateway: { replicas: 1, identity: { existingSecret: 'g' } },
      },
      {
        metrics: { enabled: true, serviceMonitor: { enabled: true } },
        networkPolicy: { enabled: true },
        otel: { enabled: true, endpoint: 'http://c:4318' },
        gateway: { autoscaling: { enabled: true }, natsUrl: 'nats://n:4222', relays: [`/dns4/r/tcp/4001/p2p/${RELAY_PEER}`] },
      },
    ]) {
      const r = runHelm(['lint', '--strict', CHART], values)
      assert.equal(r.status, 0, `helm lint failed:\n${r.stdout}\n${r.stderr}`)
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/)
    }
  })

  it('helm - default values render valid objects: relay StatefulSet with identity on a PVC, gateway with ConfigMap', () => {
    const objs = render()
    checkCommon(objs)
    const kinds = objs.map((o) => o.kind).sort()
    assert.deepEqual(
      [...new Set(kinds)],
      ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service', 'ServiceAccount', 'StatefulSet'],
      'no optional objects by default',
    )

    const { sts, c } = relayOf(objs)
    assert.equal(sts.spec?.replicas, 1)
    assert.equal(sts.spec?.serviceName, `${relayName}-headless`)
    one<IService>(objs, 'Service', `${relayName}-headless`)
    assert.deepEqual(
      c.ports?.map((p) => [p.name, p.containerPort]),
      [
        ['libp2p', 4001],
        ['admin', 4002],
      ],
    )
    assert.deepEqual(c.livenessProbe?.grpc, { port: 4002, service: 'stargate.v1.RelayService' })
    assert.deepEqual(c.readinessProbe?.grpc, { port: 4002, service: '' })
    const relay = relayFlags(c)
    assert.equal(relay.init.port, 4001)
    assert.equal(relay.init.host, '0.0.0.0')
    assert.deepEqual(relay.admin, { host: '0.0.0.0', port: 4002 })
    assert.equal(relay.init.maxConnections, 1000)
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
      relaySvc.spec?.ports?.map((p) => p.name),
      ['libp2p'],
      'the admin API is not on the relay Service',
    )

    const gw = gatewayOf(objs)
    assert.equal(gw.dep.spec?.replicas, 2)
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
    assert.equal(g.init.natsUrl, undefined)
    // The gateway writes its identity file: it must be on a writable emptyDir, not the read-only root.
    const gm = mountFor(gw.c, g.identityFile)
    assert.equal(gm.readOnly, false)
    const vol = gw.dep.spec?.template.spec?.volumes?.find((v) => v.name === gm.name)
    assert.ok(vol?.emptyDir != null)
    const gsvc = one<IService>(objs, 'Service', gatewayName)
    assert.deepEqual(
      gsvc.spec?.ports?.map((p) => [p.name, p.port, p.appProtocol]),
      [['grpc', 50051, 'grpc']],
    )
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
    const r1 = relayFlags(c, '1')
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
        s.spec?.ports?.map((p) => [p.name, p.port]),
        [['libp2p', 4001]],
        'only libp2p is public',
      )
      assert.equal(s.metadata?.annotations?.['service.beta.kubernetes.io/aws-load-balancer-type'], 'nlb')
    }
    assert.equal(find(objs, 'Service', relayName).length, 0, 'no shared relay Service in per-pod mode')
  })

  it('helm - existing Secrets: relay identity per pod from the Secret, gateway identity from its Secret', () => {
    const objs = render({
      relay: { replicas: 2, identity: { existingSecret: 'relay-keys' } },
      gateway: { replicas: 1, identity: { existingSecret: 'gateway-key' }, relays: [`/dns4/relay.example.com/tcp/4001/p2p/${RELAY_PEER}`] },
    })
    checkCommon(objs)
    const { sts, c } = relayOf(objs)
    assert.deepEqual(sts.spec?.volumeClaimTemplates, undefined, 'no PVC when the identity comes from a Secret')
    const r0 = relayFlags(c, '0')
    const r1 = relayFlags(c, '1')
    assert.equal(r0.identityFile, '/etc/stargate/identity/relay-0.key')
    assert.equal(r1.identityFile, '/etc/stargate/identity/relay-1.key')
    const m = mountFor(c, r0.identityFile)
    assert.equal(m.readOnly, true)
    const vol = sts.spec?.template.spec?.volumes?.find((v) => v.name === m.name)
    assert.equal(vol?.secret?.secretName, 'relay-keys')
    assert.equal(vol?.secret?.defaultMode, 0o440)

    const gw = gatewayOf(objs)
    const g = gatewayFlags(gw.env)
    assert.deepEqual(g.init.relays, [`/dns4/relay.example.com/tcp/4001/p2p/${RELAY_PEER}`])
    const gm = mountFor(gw.c, g.identityFile)
    const gvol = gw.dep.spec?.template.spec?.volumes?.find((v) => v.name === gm.name)
    assert.equal(gvol?.secret?.secretName, 'gateway-key')
    assert.deepEqual(gvol?.secret?.items, [{ key: 'identity.key', path: 'identity.key' }])
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
        relays: [`/dns4/${relayName}-0.${relayName}-headless.${NAMESPACE}.svc.cluster.local/tcp/4001/p2p/${RELAY_PEER}`],
        autoscaling: { enabled: true, minReplicas: 2, maxReplicas: 6 },
        config: { 'call-deadline-ms': 5000, 'tier-stagger-ms': 250 },
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
    relayFlags(c)

    const gw = gatewayOf(objs)
    assert.equal(gw.dep.spec?.replicas, undefined)
    assert.equal(gw.env.STARGATE_METRICS_LISTEN, '0.0.0.0:9464')
    assert.equal(gw.c.env?.find((e) => e.name === 'OTEL_SERVICE_NAME')?.value, 'stargate-gateway')
    const g = gatewayFlags(gw.env)
    assert.equal(g.init.natsUrl, 'nats://nats.nats.svc:4222')
    assert.equal(g.init.callDeadlineMs, 5000)
    assert.equal(g.init.tierStaggerMs, 250)
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

    // NetworkPolicy: the relay admin API only from the gateways; metrics only from the monitoring namespace.
    const np = one<INetworkPolicy>(objs, 'NetworkPolicy', relayName)
    const adminRule = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'admin'))
    assert.deepEqual(adminRule?.from?.[0]?.podSelector?.matchLabels?.['app.kubernetes.io/component'], 'gateway')
    const metricsRule = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'metrics'))
    assert.equal(metricsRule?.from?.[0]?.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'], 'monitoring')
    const libp2pRule = np.spec?.ingress?.find((r) => r.ports?.some((p) => p.port === 'libp2p'))
    assert.equal(libp2pRule?.from, undefined, 'libp2p is open to every source')

    const hpa = one<IHorizontalPodAutoscaler>(objs, 'HorizontalPodAutoscaler', gatewayName)
    assert.equal(hpa.spec.minReplicas, 2)
    assert.equal(hpa.spec.maxReplicas, 6)
  })

  it('helm - relay only or gateway only renders just that component', () => {
    const relayOnly = render({ gateway: { enabled: false } })
    checkCommon(relayOnly)
    assert.ok(relayOnly.every((o) => o.metadata.labels?.['app.kubernetes.io/component'] !== 'gateway'))
    const gatewayOnly = render({ relay: { enabled: false }, networkPolicy: { enabled: true } })
    checkCommon(gatewayOnly)
    assert.ok(gatewayOnly.every((o) => o.metadata.labels?.['app.kubernetes.io/component'] !== 'relay'))
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
      [{ gateway: { relays: ['/ip4/10.0.0.1/tcp/4001'] } }, /\/gateway\/relays\/0.*does not match pattern/],
      [{ gateway: { config: { 'max-retrys': 3 } } }, /additional properties 'max-retrys' not allowed/],
      [{ relay: { announce: ['relay.example.com:4001'] } }, /\/relay\/announce\/0/],
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
        { gateway: { replicas: 2, identity: { existingSecret: 'k' } } },
        /gateway\.identity\.existingSecret gives every pod the same peer id/,
      ],
      [
        { gateway: { replicas: 1, autoscaling: { enabled: true }, identity: { existingSecret: 'k' } } },
        /gateway\.identity\.existingSecret/,
      ],
      [
        { relay: { replicas: 2, service: { type: 'LoadBalancer' } } },
        /relay\.service\.type LoadBalancer with 2 replicas needs relay\.service\.perPod=true/,
      ],
      [
        { relay: { replicas: 3, announce: ['/dns4/relay.example.com/tcp/4001'] } },
        /relay\.announce "\/dns4\/relay\.example\.com\/tcp\/4001" is the same for all 3 relays/,
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
      relay: ['host', 'port', 'admin-listen', 'max-connections', 'identity', 'announce', 'metrics-listen'],
      gateway: ['listen', 'p2p-listen', 'relay', 'nats', 'identity', 'peer', 'capability', 'metrics-listen'],
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
})
