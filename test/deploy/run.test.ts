// The deployment files run: the relay and the gateways start exactly as docker-compose.yml and the rendered Helm
// chart start them (command, environment, uid/gid and groups, read-only root filesystem, volumes with their
// owners and read-only identity mounts; see test/lib/container.ts), each in its own network namespace with the
// deployment's host names, and must become healthy with the deployment's own health checks, and a call must
// cross the relay between two gateways. The chart's `helm test` Pod runs too. Needs root (namespaces, mounts):
// skipped with the reason otherwise, failed under CI=true.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { IStatefulSet } from 'kubernetes-models/apps/v1'
import type { IConfigMap, IContainer, IPod, IPodSpec, IVolume } from 'kubernetes-models/v1'
import { parse, parseAllDocuments } from 'yaml'
import { interpolate } from '../lib/compose.ts'
import { Container, type ContainerSpec, type Image, type Mount, readImage, userOf, volume } from '../lib/container.ts'
import { eventually } from '../lib/eventually.ts'
import type { Proc } from '../lib/harness.ts'
import { cannotRun } from '../lib/mounts.ts'
import { tool } from '../lib/tools.ts'
import { netnsUnsupported, Testbed, type TestbedHost } from '../netns/testbed.ts'

const ROOT = join(import.meta.dirname, '../..')
const HEALTHCHECK = join(ROOT, 'deploy/healthcheck.mjs')
const HELM_TEST = join(ROOT, 'deploy/helm-test.ts')

const peerIdOfKey = (file: string): string => peerIdFromPrivateKey(privateKeyFromProtobuf(readFileSync(file))).toString()

/** Polls an exec'd health check until it passes (as Docker and the kubelet retry); fails when a process exits. */
async function healthy(
  what: string,
  check: () => Promise<{ code: number | null; stdout: string; stderr: string }>,
  procs: Proc[],
): Promise<void> {
  await eventually(
    `${what} is healthy`,
    async () => {
      const r = await check()
      if (r.code !== 0) throw new Error(`health check exited with ${r.code}: ${r.stdout}${r.stderr}`)
      return true
    },
    {
      timeoutMs: 90_000,
      intervalMs: 1_000,
      giveUp: () => {
        const gone = procs.find((p) => !p.running)
        return gone != null ? `${gone.name} exited` : undefined
      },
      context: () => procs.map((p) => p.dump()).join('\n'),
    },
  )
}

/** $(VAR) expansion as Kubernetes does it in env values, command and args. */
const expand = (s: string, env: Record<string, string>): string =>
  s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (ref, name: string) => env[name] ?? ref)

/** Runs deploy/helm-test.ts (health, reservations, a ping from the first gateway to the second) from a host. */
async function crossCheck(tb: Testbed, host: TestbedHost, gateways: string[], relayAdmins: string[]): Promise<string> {
  const r = await tb.exec(
    host,
    [
      'env',
      `STARGATE_TEST_GATEWAYS=${gateways.join(',')}`,
      `STARGATE_TEST_RELAY_ADMINS=${relayAdmins.join(',')}`,
      'STARGATE_TEST_DEADLINE_MS=90000',
      process.execPath,
      HELM_TEST,
    ],
    120_000,
  )
  assert.equal(r.code, 0, `the call across the deployment failed:\n${r.stdout}${r.stderr}`)
  return r.stdout
}

interface ComposeService {
  entrypoint?: string[]
  command?: string[]
  environment?: Record<string, string | number>
  user?: string
  read_only?: boolean
  tmpfs?: string[]
  volumes?: string[]
  build?: { dockerfile: string }
  image?: string
  healthcheck?: { test: string[] }
  depends_on?: Record<string, { condition: string }>
}

describe('deployment run: docker compose', () => {
  it('compose - keygen, relay and both gateways run as compose runs them, become healthy, and a call crosses the relay', async (t: TestContext) => {
    const unsupported = netnsUnsupported()
    if (unsupported != null) return cannotRun(t, unsupported)
    const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
      services: Record<string, ComposeService>
    }
    const work = mkdtempSync(join(tmpdir(), 'stargate-compose-run-'))
    chmodSync(work, 0o755)
    const tb = await Testbed.create()
    const procs: Proc[] = []
    try {
      // One namespace per service; compose service names resolve to them.
      const hostOf = new Map<string, TestbedHost>()
      for (const name of ['nats', 'keygen', 'relay', 'gateway-a', 'gateway-b', 'client']) {
        hostOf.set(name, await tb.host(name.replace('-', ''), 'public'))
      }
      const hosts = Object.fromEntries([...hostOf].map(([name, h]) => [name, h.ip]))
      // Named volumes are created on first use, owned like the image directory they are mounted on (Docker).
      const volumes = new Map<string, string>()
      const containerOf = (name: string): Container => {
        const s = compose.services[name]
        assert.ok(s?.build != null, `${name} is built from our Dockerfile`)
        const image: Image = readImage(s.build.dockerfile)
        const mounts: Mount[] = (s.volumes ?? []).map((v) => {
          const [src = '', target = '', mode] = v.split(':')
          if (src.startsWith('.')) return { source: join(ROOT, src), target, readOnly: mode === 'ro' }
          if (!volumes.has(src)) volumes.set(src, volume(work, src, image.dirs.get(target) ?? { uid: 0, gid: 0 }))
          return { source: volumes.get(src) as string, target, readOnly: mode === 'ro' }
        })
        const { uid, gid } = userOf(s.user ?? image.user)
        const spec: ContainerSpec = {
          name,
          image,
          argv: [...(s.entrypoint ?? image.entrypoint), ...(s.command ?? (s.entrypoint != null ? [] : image.cmd))].map((a) =>
            interpolate(a),
          ),
          env: Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))])),
          uid,
          gid,
          groups: [],
          readOnlyRoot: s.read_only === true,
          mounts,
          tmpfs: s.tmpfs ?? [],
          hosts,
        }
        return Container.create(tb, hostOf.get(name) as TestbedHost, spec, work)
      }
      /** The service's health check (a CMD run in the container), the port it checks, and its wait. */
      const started = new Map<string, { c?: Container; proc: Proc }>()
      const healthPort = (name: string): number => {
        const target = compose.services[name]?.healthcheck?.test.find((a) => /^127\.0\.0\.1:\d+$/.test(a))
        assert.ok(target != null, `${name} has a health check on a local port`)
        return Number(target.split(':')[1])
      }
      const waitFor = async (name: string, condition: string): Promise<void> => {
        const s = started.get(name)
        assert.ok(s != null, `${name} was started before what depends on it`)
        if (condition === 'service_completed_successfully') {
          assert.equal(await s.proc.exited, 0, `${name} did not complete successfully:\n${s.proc.dump()}`)
        } else if (condition === 'service_healthy') {
          const test = compose.services[name]?.healthcheck?.test ?? []
          assert.equal(test[0], 'CMD')
          await healthy(name, () => (s.c as Container).exec(test.slice(1)), [s.proc])
        }
      }

      // Every service of ours (and NATS) in depends_on order, each once its dependencies meet their conditions.
      const run = ['nats', ...Object.keys(compose.services).filter((n) => compose.services[n]?.build != null)]
      const order: string[] = []
      const visit = (name: string): void => {
        if (order.includes(name)) return
        for (const dep of Object.keys(compose.services[name]?.depends_on ?? {})) if (run.includes(dep)) visit(dep)
        order.push(name)
      }
      for (const name of run) visit(name)
      for (const name of order) {
        for (const [dep, { condition }] of Object.entries(compose.services[name]?.depends_on ?? {})) {
          if (run.includes(dep)) await waitFor(dep, condition)
        }
        if (name === 'nats') {
          // The real nats-server with the compose configuration (the official image runs it the same way).
          const [conf] = (compose.services.nats?.volumes ?? []).map((v) => v.split(':')[0] as string)
          const nats = tb.spawn(hostOf.get('nats') as TestbedHost, [tool('nats-server'), '-c', join(ROOT, conf as string)], {
            name: 'nats',
          })
          procs.push(nats)
          await nats.waitFor(/Server is ready/)
          started.set(name, { proc: nats })
          continue
        }
        const c = containerOf(name)
        const proc = c.start()
        procs.push(proc)
        started.set(name, { c, proc })
      }
      for (const name of ['relay', 'gateway-a', 'gateway-b']) await waitFor(name, 'service_healthy')
      const keygen = started.get('keygen')?.proc as Proc
      const [, bPeerId] = await keygen.waitFor(/gateway-b peer id: (\S+)/)

      // The call: A pings B, which is reachable only through the relay, on the ports their health checks use.
      const out = await crossCheck(
        tb,
        hostOf.get('client') as TestbedHost,
        [`${hosts['gateway-a']}:${healthPort('gateway-a')}`, `${hosts['gateway-b']}:${healthPort('gateway-b')}`],
        [`${hosts.relay}:${healthPort('relay')}`],
      )
      assert.match(out, new RegExp(`-> ${bPeerId} answered through tier RELAY`), out)

      // Gateway B ran with keygen's read-only identity and wrote only to its state volume.
      const keys = volumes.get('keys') as string
      assert.deepEqual(readdirSync(keys).sort(), ['gateway-b.key', 'gateway-b.peerid'])
      assert.equal(peerIdOfKey(join(keys, 'gateway-b.key')), bPeerId)
      assert.ok(existsSync(join(volumes.get('gateway-b-data') as string, `${bPeerId}.journal`)), "B's journal is in its state volume")
      assert.ok(existsSync(join(volumes.get('relay-data') as string, 'relay.key')), 'the relay created its identity in its volume')
    } catch (err: unknown) {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${tb.dump()}`)
    } finally {
      await tb.close()
      rmSync(work, { recursive: true, force: true })
    }
  })
})

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are narrowed by kind before typed use
type Manifest = { kind: string; metadata: { name: string; labels?: Record<string, string> }; [k: string]: any }

describe('deployment run: Helm chart', () => {
  it('helm - relay and gateway pods run as rendered (read-only root, uid 1000, fsGroup volumes, identities from a read-only Secret), become ready, and the helm test Pod passes', async (t: TestContext) => {
    const unsupported = netnsUnsupported()
    if (unsupported != null) return cannotRun(t, unsupported)
    const namespace = 'stargate'
    const work = mkdtempSync(join(tmpdir(), 'stargate-helm-run-'))
    chmodSync(work, 0o755)
    const values = join(work, 'values.json')
    writeFileSync(
      values,
      JSON.stringify({ relay: { replicas: 1 }, gateway: { replicas: 2, identity: { existingSecret: 'gateway-keys' } } }),
    )
    const rendered = spawnSync(
      tool('helm'),
      ['template', 'sg', join(ROOT, 'helm/stargate'), '--namespace', namespace, '--kube-version', '1.31.0', '-f', values],
      { encoding: 'utf8', timeout: 60_000 },
    )
    assert.equal(rendered.status, 0, rendered.stderr)
    const objs = parseAllDocuments(rendered.stdout)
      .map((d) => d.toJS() as Manifest | null)
      .filter((m): m is Manifest => m != null)
    const byKind = <T>(kind: string): T[] => objs.filter((o) => o.kind === kind) as unknown as T[]
    const image = readImage('services/gateway/Dockerfile')

    const tb = await Testbed.create()
    const procs: Proc[] = []
    try {
      // Pods: every StatefulSet replica, named <statefulset>-<ordinal>, plus the helm test Pod.
      const pods: { name: string; index: number; spec: IPodSpec; sts?: IStatefulSet }[] = []
      for (const sts of byKind<IStatefulSet>('StatefulSet')) {
        for (let i = 0; i < (sts.spec?.replicas ?? 1); i++)
          pods.push({ name: `${sts.metadata?.name}-${i}`, index: i, spec: sts.spec?.template.spec as IPodSpec, sts })
      }
      const [testPod] = byKind<IPod>('Pod')
      assert.ok(testPod != null, 'the helm test Pod is rendered')
      pods.push({ name: testPod.metadata?.name as string, index: 0, spec: testPod.spec as IPodSpec })
      // Each pod gets a namespace; its DNS names (<pod>.<serviceName>.<namespace>.svc.cluster.local) resolve to it.
      const hostOf = new Map<string, TestbedHost>()
      const hosts: Record<string, string> = {}
      for (const [n, pod] of pods.entries()) {
        const h = await tb.host(`pod${n}`, 'public')
        hostOf.set(pod.name, h)
        if (pod.sts != null) hosts[`${pod.name}.${pod.sts.spec?.serviceName}.${namespace}.svc.cluster.local`] = h.ip
      }
      // The Secret the values name: one identity per gateway replica (stargate keygen), as the kubelet projects it.
      const secretDir = volume(work, 'secret-gateway-keys', { uid: 0, gid: 0 })
      const gatewayPods = pods.filter((p) => p.sts?.metadata?.name === 'sg-stargate-gateway')
      for (const p of gatewayPods) {
        const file = join(secretDir, `gateway-${p.index}.key`)
        const r = spawnSync(process.execPath, [join(ROOT, 'services/cli/bin/stargate.js'), 'keygen', '--out', file], { encoding: 'utf8' })
        assert.equal(r.status, 0, r.stderr)
      }

      const containerOf = (pod: (typeof pods)[number]): Container => {
        const [c] = pod.spec.containers as [IContainer]
        const psc = pod.spec.securityContext ?? {}
        const fsGroup = psc.fsGroup
        const downward: Record<string, string> = {
          "metadata.labels['apps.kubernetes.io/pod-index']": String(pod.index),
          'metadata.name': pod.name,
          'metadata.namespace': namespace,
          'status.hostIP': (hostOf.get(pod.name) as TestbedHost).ip,
        }
        const env: Record<string, string> = {}
        for (const from of c.envFrom ?? []) {
          const cm = byKind<IConfigMap>('ConfigMap').find((x) => x.metadata?.name === from.configMapRef?.name)
          assert.ok(cm != null, `ConfigMap ${from.configMapRef?.name} exists`)
          Object.assign(env, cm.data)
        }
        for (const e of c.env ?? []) {
          const field = e.valueFrom?.fieldRef?.fieldPath
          if (field != null) {
            assert.ok(field in downward, `downward API field ${field}`)
            env[e.name] = downward[field] as string
          } else {
            env[e.name] = expand(e.value ?? '', env)
          }
        }
        const volumes = new Map<string, IVolume | { pvc: true }>((pod.spec.volumes ?? []).map((v) => [v.name, v]))
        for (const claim of pod.sts?.spec?.volumeClaimTemplates ?? []) volumes.set(claim.metadata?.name as string, { pvc: true })
        const mounts: Mount[] = []
        const tmpfs: string[] = []
        for (const m of c.volumeMounts ?? []) {
          const v = volumes.get(m.name)
          assert.ok(v != null, `volume ${m.name}`)
          const readOnly = m.readOnly === true
          if ('pvc' in v) {
            // A fresh PersistentVolume with fsGroup: group-owned and group-writable (setgid), as the kubelet leaves it.
            mounts.push({
              source: volume(work, `${m.name}-${pod.name}`, { uid: 0, gid: fsGroup ?? 0 }, 0o2775),
              target: m.mountPath,
              readOnly,
            })
          } else if (v.emptyDir != null) {
            tmpfs.push(m.mountPath)
          } else if (v.secret != null) {
            assert.equal(v.secret.secretName, 'gateway-keys')
            const dir = volume(work, `${m.name}-${pod.name}`, { uid: 0, gid: 0 })
            for (const f of readdirSync(secretDir)) {
              const to = join(dir, f)
              writeFileSync(to, readFileSync(join(secretDir, f)))
              chownSync(to, 0, fsGroup ?? 0)
              chmodSync(to, v.secret.defaultMode ?? 0o644)
            }
            mounts.push({ source: dir, target: m.mountPath, readOnly })
          } else {
            assert.fail(`volume ${m.name} of an unexpected kind`)
          }
        }
        const sc = c.securityContext ?? {}
        const argv = [...(c.command ?? image.entrypoint), ...(c.args ?? (c.command != null ? [] : image.cmd))].map((a) => expand(a, env))
        return Container.create(
          tb,
          hostOf.get(pod.name) as TestbedHost,
          {
            name: pod.name,
            image,
            argv,
            env,
            uid: sc.runAsUser ?? psc.runAsUser ?? userOf(image.user).uid,
            gid: sc.runAsGroup ?? psc.runAsGroup ?? userOf(image.user).gid,
            groups: fsGroup != null ? [fsGroup] : [],
            readOnlyRoot: sc.readOnlyRootFilesystem === true,
            mounts,
            tmpfs,
            hosts,
          },
          work,
        )
      }
      /** The kubelet's gRPC readiness probe, from the pod's network namespace. */
      const ready = (pod: (typeof pods)[number]) => {
        const probe = pod.spec.containers[0]?.readinessProbe?.grpc
        assert.ok(probe != null, `${pod.name} has a gRPC readiness probe`)
        const host = hostOf.get(pod.name) as TestbedHost
        return healthy(
          pod.name,
          () => tb.exec(host, [process.execPath, HEALTHCHECK, `127.0.0.1:${probe.port}`, probe.service ?? '']),
          procs.filter((p) => p.name === pod.name),
        )
      }

      const workloads = pods.filter((p) => p.sts != null)
      for (const pod of workloads) procs.push(containerOf(pod).start())
      for (const pod of workloads) await ready(pod)
      // Each gateway runs with its own key from the read-only Secret: pod gateway-N has the peer id of gateway-N.key.
      for (const p of gatewayPods) {
        const proc = procs.find((x) => x.name === p.name) as Proc
        const [, peerId] = await proc.waitFor(/^Gateway started: (\S+)/)
        assert.equal(peerId, peerIdOfKey(join(secretDir, `gateway-${p.index}.key`)), `${p.name} has the identity of gateway-${p.index}.key`)
      }

      // helm test: the rendered test Pod, as rendered.
      const test = containerOf(pods.at(-1) as (typeof pods)[number]).start()
      procs.push(test)
      assert.equal(await test.exited, 0, `helm test failed:\n${test.dump()}`)
      const out = test.stdout.join('\n')
      assert.match(out, /^PASS relay .* is SERVING$/m)
      assert.equal(out.match(/^PASS gateway .* reserved on relay /gm)?.length, 2, out)
      assert.match(out, /^PASS ping \S+ -> \S+ answered through tier \w+$/m)
    } catch (err: unknown) {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${tb.dump()}`)
    } finally {
      await tb.close()
      rmSync(work, { recursive: true, force: true })
    }
  })
})
