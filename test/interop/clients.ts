/**
 * Runs the Go (test/interop/go/cmd/client) and Python (test/interop/python/client.py) Stargate clients from
 * tests: builds / sets them up once per process (fast when cached), runs `call` mode, starts `serve` mode.
 */
import { execFile, execFileSync, spawn } from 'node:child_process'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Harness } from '../lib/harness.ts'
import { Proc } from '../lib/harness.ts'

const run = promisify(execFile)
const HERE = import.meta.dirname
const CACHE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stargate')

export type Lang = 'go' | 'python'

let goBuilt: Promise<string> | undefined
let python: string | undefined

/** Builds the Go client once per process with the module cache (go.sum is committed); resolves to the binary. */
export function goClient(): Promise<string> {
  goBuilt ??= (async () => {
    const out = join(CACHE, 'interop', 'go-client')
    await run('go', ['build', '-o', out, './cmd/client'], {
      cwd: join(HERE, 'go'),
      env: { ...process.env, GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' },
      timeout: 300_000,
    })
    return out
  })()
  return goBuilt
}

/** The venv python with the pinned grpcio (test/interop/python/setup.sh, instant when already set up). */
export function pythonBin(): string {
  python ??= execFileSync('bash', [join(HERE, 'python/setup.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
    .trim()
    .split('\n')
    .at(-1)!
  return python
}

async function command(lang: Lang, args: string[]): Promise<[string, string[]]> {
  if (lang === 'go') return [await goClient(), args]
  return [
    pythonBin(),
    [join(HERE, 'python/client.py'), ...args.map((a) => (/^-(gateway|peer|method|json|data|prefix|timeout)$/.test(a) ? `-${a}` : a))],
  ]
}

export interface CallResult {
  /** Exit code: 0 on success, 1 on a gRPC error. */
  exitCode: number
  /** The CallResponse as JSON (proto field names, enums by name) on success. */
  response?: { json?: unknown; data?: string; tier: string; request_id: string; attempts: Array<{ tier: string; outcome: string }> }
  /** On error: the gRPC status code name as the client's language spells it, and the message. */
  error?: { code: string; message: string }
  stdout: string
}

/** Runs `client call` in the given language against a gateway. */
export async function clientCall(
  lang: Lang,
  gateway: string,
  peer: string,
  method: string,
  payload: { json: unknown } | { data: string },
): Promise<CallResult> {
  const p = 'json' in payload ? ['-json', JSON.stringify(payload.json)] : ['-data', payload.data]
  const [bin, args] = await command(lang, ['call', '-gateway', gateway, '-peer', peer, '-method', method, ...p])
  let stdout: string
  let exitCode = 0
  try {
    stdout = (await run(bin, args, { timeout: 60_000 })).stdout
  } catch (err: unknown) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string }
    if (typeof e.code !== 'number') throw err
    exitCode = e.code
    stdout = e.stdout ?? ''
    if (exitCode !== 1) throw new Error(`${lang} client call exited ${exitCode}: ${stdout}${e.stderr ?? ''}`)
  }
  const line = stdout.trim().split('\n').at(-1) ?? ''
  const m = line.match(/^ERROR (\S+) (.*)$/)
  if (m != null) return { exitCode, error: { code: m[1]!, message: m[2]! }, stdout }
  return { exitCode, response: JSON.parse(line) as CallResult['response'], stdout }
}

/** Starts `client serve` in the given language on a gateway; resolves once it printed READY (registered). */
export async function clientServe(h: Harness, lang: Lang, gateway: string, prefix: string): Promise<Proc> {
  const [bin, args] = await command(lang, ['serve', '-gateway', gateway, '-prefix', prefix])
  const proc = new Proc(`${lang}-serve`, spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  h.procs.push(proc)
  await proc.waitFor(/^READY /, 60_000)
  return proc
}
