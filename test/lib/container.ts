/**
 * Containers without a container engine, for the deployment-run tests: a process runs the way docker compose
 * or Kubernetes would run it from our image, inside a network namespace of the netns testbed:
 *   - its own root filesystem (chroot), read-only when the deployment says so: the host's /usr (for libc and
 *     the shell), the image's files under WORKDIR exactly as the Dockerfile's final stage COPYs them, a private
 *     /etc (hosts naming the other containers), and nothing else;
 *   - the deployment's volumes bind-mounted at their paths, read-only where declared, owned as Docker or the
 *     kubelet would make them (a fresh named volume takes the image directory's owner; fsGroup volumes belong
 *     to the group), tmpfs where declared;
 *   - the deployment's uid, gid and supplementary groups (setpriv), no new privileges;
 *   - exactly the deployment's environment over the image's ENV; argv from ENTRYPOINT/CMD as overridden.
 * The image's Node (/usr/local/bin/node in node:24-bookworm-slim) is stood in for by the Node 24 the tests run
 * on, mounted at /usr/local/bin. Needs root (mounts, namespaces); see netnsUnsupported().
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, posix, relative } from 'node:path'
import type { ExecResult, Testbed, TestbedHost } from '../netns/testbed.ts'
import type { Proc } from './harness.ts'

const ROOT = join(import.meta.dirname, '../..')

/** What the image gives a container (from the Dockerfile's final stage). */
export interface Image {
  workdir: string
  env: Record<string, string>
  user: string
  entrypoint: string[]
  cmd: string[]
  /** Files of the image: container path -> path in the build context (or node_modules for COPY --from=deps). */
  files: Map<string, string>
  /** Directories the image creates, with their owner (a fresh named volume mounted there takes it). */
  dirs: Map<string, { uid: number; gid: number }>
}

export interface Mount {
  /** Path in the container. */
  target: string
  /** Host directory or file (created by the caller). */
  source: string
  readOnly: boolean
}

export interface ContainerSpec {
  name: string
  image: Image
  /** The command line the process runs (entrypoint and command resolved by the caller). */
  argv: string[]
  /** The deployment's environment (set over the image's ENV). */
  env: Record<string, string>
  uid: number
  gid: number
  groups: number[]
  readOnlyRoot: boolean
  mounts: Mount[]
  tmpfs: string[]
  /** /etc/hosts names of the other containers. */
  hosts: Record<string, string>
}

const NODE_USER = { uid: 1000, gid: 1000 }

/** Reads the final stage of a Dockerfile: WORKDIR, ENV, USER, ENTRYPOINT, CMD, COPY sources, created directories. */
export function readImage(dockerfile: string): Image {
  const lines = readFileSync(join(ROOT, dockerfile), 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
  const final = lines.slice(lines.findLastIndex((l) => /^FROM /i.test(l)))
  const image: Image = {
    workdir: '/',
    // node:24-bookworm-slim's environment.
    env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', NODE_VERSION: process.versions.node },
    user: 'root',
    entrypoint: [],
    cmd: [],
    files: new Map(),
    dirs: new Map(),
  }
  for (const line of final) {
    const [instr = '', ...rest] = line.split(/\s+/)
    const args = rest.join(' ')
    switch (instr.toUpperCase()) {
      case 'WORKDIR':
        image.workdir = posix.resolve(image.workdir, args)
        break
      case 'ENV': {
        const [k, ...v] = args.split('=')
        image.env[k as string] = v.join('=')
        break
      }
      case 'USER':
        image.user = args
        break
      case 'ENTRYPOINT':
        image.entrypoint = JSON.parse(args) as string[]
        break
      case 'CMD':
        image.cmd = JSON.parse(args) as string[]
        break
      case 'COPY': {
        const from = /--from=\S+/.test(args)
        const parts = args.split(/\s+/).filter((p) => !p.startsWith('--'))
        const rawDest = parts.at(-1) as string
        const dest = posix.resolve(image.workdir, rawDest)
        for (const src of parts.slice(0, -1)) {
          // COPY --from=deps /app/node_modules: the deps stage installed node_modules in the same WORKDIR.
          const source = from ? relative(image.workdir, src) : src
          const intoDir = rawDest.endsWith('/') || parts.length > 2
          image.files.set(intoDir ? posix.join(dest, posix.basename(source)) : dest, join(ROOT, source))
        }
        break
      }
      case 'RUN': {
        const made = /mkdir -p ((?:\/\S+\s*)+)&& chown node:node/.exec(args)
        for (const dir of made?.[1]?.trim().split(/\s+/) ?? []) image.dirs.set(dir, NODE_USER)
        break
      }
    }
  }
  return image
}

/** The numeric user of a USER / `user:` value ("node", "1000", "1000:1000"). */
export function userOf(user: string): { uid: number; gid: number } {
  if (user === 'node') return NODE_USER
  if (user === 'root') return { uid: 0, gid: 0 }
  const [uid, gid] = user.split(':').map(Number)
  return { uid: uid as number, gid: gid ?? (uid as number) }
}

const quote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`

/** A prepared container: its root filesystem and mount script; start() runs its process, exec() one more. */
export class Container {
  readonly spec: ContainerSpec
  readonly host: TestbedHost
  private readonly tb: Testbed
  private readonly dir: string
  private readonly rootfs: string

  private constructor(tb: Testbed, host: TestbedHost, spec: ContainerSpec, parent: string) {
    this.tb = tb
    this.host = host
    this.spec = spec
    this.dir = mkdtempSync(join(parent, `ctr-${spec.name}-`))
    chmodSync(this.dir, 0o755)
    this.rootfs = join(this.dir, 'root')
    mkdirSync(this.rootfs, { mode: 0o755 })
  }

  /** Prepares the container's files in a new directory under `parent` (remove it after the testbed closed). */
  static create(tb: Testbed, host: TestbedHost, spec: ContainerSpec, parent: string): Container {
    const c = new Container(tb, host, spec, parent)
    c.build()
    return c
  }

  private path(containerPath: string): string {
    return join(this.rootfs, containerPath)
  }

  /** Mount points and the private /etc of the root filesystem. */
  private build(): void {
    const r = this.rootfs
    for (const d of ['usr', 'proc', 'dev', 'etc', 'tmp']) mkdirSync(join(r, d), { recursive: true, mode: 0o755 })
    chmodSync(join(r, 'tmp'), 0o1777)
    for (const l of ['bin', 'lib', 'lib64', 'sbin']) {
      if (existsSync(`/${l}`)) execFileSync('ln', ['-s', `usr/${l}`, join(r, l)])
    }
    for (const f of ['nsswitch.conf', 'resolv.conf']) if (existsSync(`/etc/${f}`)) copyFileSync(`/etc/${f}`, join(r, 'etc', f))
    writeFileSync(join(r, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n')
    writeFileSync(join(r, 'etc/group'), 'root:x:0:\nnode:x:1000:\n')
    const hosts = Object.entries(this.spec.hosts).map(([name, ip]) => `${ip}\t${name}`)
    writeFileSync(join(r, 'etc/hosts'), ['127.0.0.1\tlocalhost', '::1\tlocalhost', ...hosts, ''].join('\n'))
    for (const [target, source] of this.spec.image.files) this.mountPoint(target, statSync(source).isDirectory())
    for (const m of this.spec.mounts) this.mountPoint(m.target, statSync(m.source).isDirectory())
    for (const t of this.spec.tmpfs) this.mountPoint(t, true)
    mkdirSync(this.path(this.spec.image.workdir), { recursive: true })
  }

  private mountPoint(target: string, dir: boolean): void {
    const p = this.path(target)
    if (existsSync(p)) return
    mkdirSync(dir ? p : dirname(p), { recursive: true, mode: 0o755 })
    if (!dir) writeFileSync(p, '')
  }

  /** The shell script that mounts the root filesystem in a new mount namespace and execs argv in it. */
  private script(argv: string[]): string {
    const s = this.spec
    const r = this.rootfs
    const bind = (source: string, target: string, ro: boolean): string[] => [
      `mount --bind ${quote(source)} ${quote(target)}`,
      ...(ro ? [`mount -o remount,bind,ro ${quote(target)}`] : []),
    ]
    const lines = [
      'set -e',
      // The root itself first, so what is mounted on it keeps its own flags.
      ...bind(r, r, s.readOnlyRoot),
      ...bind('/usr', `${r}/usr`, true),
      // The Node 24 these tests run on stands in for the image's /usr/local/bin/node.
      ...bind(dirname(process.execPath), `${r}/usr/local/bin`, true),
      `mount -t proc proc ${quote(`${r}/proc`)}`,
      `mount --rbind /dev ${quote(`${r}/dev`)}`,
      ...[...s.image.files].flatMap(([target, source]) => bind(source, this.path(target), true)),
      ...s.tmpfs.map((t) => `mount -t tmpfs -o mode=1777,size=64m tmpfs ${quote(this.path(t))}`),
      ...s.mounts.flatMap((m) => bind(m.source, this.path(m.target), m.readOnly)),
    ]
    const env: Record<string, string> = { ...s.image.env, HOME: '/home/node', ...s.env }
    const groups = s.groups.length > 0 ? ['--groups', s.groups.join(',')] : ['--clear-groups']
    const exec = [
      'chroot',
      r,
      'setpriv',
      '--reuid',
      String(s.uid),
      '--regid',
      String(s.gid),
      ...groups,
      '--no-new-privs',
      'env',
      '-i',
      '-C',
      s.image.workdir,
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ...argv,
    ]
    lines.push(`exec ${exec.map(quote).join(' ')}`)
    return `${lines.join('\n')}\n`
  }

  private scriptFile(name: string, argv: string[]): string {
    const file = join(this.dir, `${name}.sh`)
    writeFileSync(file, this.script(argv))
    return file
  }

  /** Starts the container's process. */
  start(): Proc {
    const file = this.scriptFile('main', this.spec.argv)
    return this.tb.spawn(this.host, ['unshare', '--mount', '--propagation', 'private', 'sh', file], { name: this.spec.name })
  }

  /** Runs another process in the container (like docker exec: same user, environment, files), to completion. */
  exec(argv: string[], timeoutMs = 60_000): Promise<ExecResult> {
    const file = this.scriptFile(`exec-${Date.now()}`, argv)
    return this.tb.exec(this.host, ['unshare', '--mount', '--propagation', 'private', 'sh', file], timeoutMs)
  }
}

/** A fresh volume directory owned as given (Docker copies the image directory's owner; Kubernetes uses fsGroup). */
export function volume(parent: string, name: string, owner: { uid: number; gid: number }, mode = 0o755): string {
  const dir = join(parent, name)
  mkdirSync(dir, { recursive: true })
  chownSync(dir, owner.uid, owner.gid)
  chmodSync(dir, mode)
  return dir
}
