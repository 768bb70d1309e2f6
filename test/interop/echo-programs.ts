/**
 * Runs the Go (test/interop/go/cmd/echo-server, echo-client) and Python (test/interop/python/echo_server.py,
 * echo_client.py) EchoService programs from tests. They are ordinary gRPC programs built from the stubs their
 * standard tools generated from test/proto; both languages take the same flags and print the same JSON lines.
 */
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { generatedPayload } from '../lib/echo.ts'
import { type Harness, Proc } from '../lib/harness.ts'
import { pythonBin } from './clients.ts'

const run = promisify(execFile)
const HERE = import.meta.dirname
const BIN_DIR = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stargate', 'interop')

/** The languages of the echo clients (and servers). */
export type EchoLang = 'go' | 'python'
export const ECHO_LANGS: readonly EchoLang[] = ['go', 'python']
/** The languages of the echo servers: Node is examples/node/echo-server.ts (the one `npm start` exposes). */
export type EchoServerLang = EchoLang | 'node'
export const ECHO_SERVER_LANGS: readonly EchoServerLang[] = ['go', 'python', 'node']
const NODE_ECHO_SERVER = join(HERE, '../../examples/node/echo-server.ts')
export type EchoKind = 'unary' | 'server_stream' | 'client_stream' | 'bidi'
export const ECHO_KINDS: readonly EchoKind[] = ['unary', 'server_stream', 'client_stream', 'bidi']
/** The fully qualified name of the service the programs serve. */
export const ECHO_SERVICE = 'stargate.test.v1.EchoService'

/** Metadata as the programs print it: key → values, -bin values base64. */
export type MetadataJson = Record<string, string[]>

/** One call made by an echo client (its "result" line). */
export interface EchoResult {
  kind: EchoKind
  size: number
  /** gRPC status code number. */
  code: number
  message: string
  elapsed_ms: number
  sent_messages: number
  sent_bytes: number
  sent_sha256: string
  received_messages: number
  received_bytes: number
  received_sha256: string
  /** Stream responses arrived with index 0, 1, 2, ... */
  in_order: boolean
  /** The ClientStream response. */
  server?: { received_messages: number; received_bytes: number; sha256: string }
  headers: MetadataJson
  trailers: MetadataJson
  /** grpc-status-details-bin, base64 ("" when absent). */
  details: string
}

/** An event line of an echo server. */
export type ServerEvent =
  | { event: 'call'; method: string; metadata: MetadataJson }
  | { event: 'cancelled'; method: string; reason: 'cancelled' | 'deadline_exceeded'; at_ms: number }
  | { event: 'progress'; method: string; messages: number; bytes: number }

/** An event line of an echo client other than a result. */
export type ClientEvent =
  | { event: 'cancelling'; kind: EchoKind; at_ms: number }
  | { event: 'stalled'; kind: EchoKind; received_messages: number }

export interface EchoClientOptions {
  /** Sets the stargate-peer header (header routing); unset: the client knows nothing of Stargate. */
  peer?: string
  idempotencyKey?: string
  kinds?: readonly EchoKind[]
  sizes?: readonly number[]
  /** Messages per stream. */
  count?: number
  /** ServerStream: generated responses of this many bytes instead of echoes. */
  responseBytes?: number
  /** Request metadata; values of -bin keys are base64. */
  metadata?: ReadonlyArray<readonly [string, string]>
  timeoutMs?: number
  delayMs?: number
  failure?: { code: number; message: string; details?: Uint8Array }
  cancelAfterMs?: number
  /** ServerStream: stop reading after this many responses until a line on stdin. */
  stallAfter?: number
}

let goBuilt: Promise<string> | undefined

/** Builds the Go echo-server and echo-client once per process (go.sum is committed); resolves to their dir. */
export function goEchoPrograms(): Promise<string> {
  goBuilt ??= (async () => {
    await run('go', ['build', '-o', `${BIN_DIR}/`, './cmd/echo-server', './cmd/echo-client'], {
      cwd: join(HERE, 'go'),
      env: { ...process.env, GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' },
      timeout: 300_000,
    })
    return BIN_DIR
  })()
  return goBuilt
}

/** Builds / sets up both languages' programs (call in before(), in parallel with starting a stack). */
export async function prepareEchoPrograms(): Promise<void> {
  await Promise.all([goEchoPrograms(), Promise.resolve(pythonBin())])
}

async function command(lang: EchoServerLang, program: 'server' | 'client', args: string[]): Promise<[string, string[]]> {
  if (lang === 'node') return [process.execPath, [NODE_ECHO_SERVER, ...args]]
  if (lang === 'go') return [join(await goEchoPrograms(), `echo-${program}`), args]
  return [pythonBin(), [join(HERE, `python/echo_${program}.py`), ...args]]
}

/** A running echo server. */
export class EchoServer {
  readonly proc: Proc
  readonly lang: EchoServerLang
  /** host:port it serves on. */
  readonly addr: string
  /** Its event lines so far. */
  readonly events: ServerEvent[] = []
  private readonly waiters = new Set<(e: ServerEvent) => void>()

  constructor(lang: EchoServerLang, proc: Proc, addr: string) {
    this.lang = lang
    this.proc = proc
    this.addr = addr
    this.events.push(...jsonLines<ServerEvent>(proc.stdout))
    createInterface({ input: proc.child.stdout! }).on('line', (line) => {
      if (!line.startsWith('{')) return
      const e = JSON.parse(line) as ServerEvent
      this.events.push(e)
      for (const w of [...this.waiters]) w(e)
    })
  }

  /** Resolves with the first event (past or future) of that kind that matches. */
  waitForEvent<E extends ServerEvent['event']>(
    event: E,
    match: (e: Extract<ServerEvent, { event: E }>) => boolean = () => true,
    timeoutMs = 30_000,
  ): Promise<Extract<ServerEvent, { event: E }>> {
    type Ev = Extract<ServerEvent, { event: E }>
    const is = (e: ServerEvent): e is Ev => e.event === event && match(e as Ev)
    const found = this.events.find(is)
    if (found != null) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new Error(`${this.proc.name}: no matching ${event} event within ${timeoutMs} ms\n${this.proc.dump()}`))
      }, timeoutMs)
      const waiter = (e: ServerEvent): void => {
        if (!is(e)) return
        clearTimeout(timer)
        this.waiters.delete(waiter)
        resolve(e)
      }
      this.waiters.add(waiter)
    })
  }

  /** The "call" events of one method from index `since` of events on. */
  calls(method: string, since = 0): Array<Extract<ServerEvent, { event: 'call' }>> {
    return this.events.slice(since).filter((e): e is Extract<ServerEvent, { event: 'call' }> => e.event === 'call' && e.method === method)
  }
}

/** Starts an echo server on 127.0.0.1 (port 0); resolves once it serves. */
export async function startEchoServer(
  h: Harness,
  lang: EchoServerLang,
  name = `${lang}-echo-server`,
  listen = '127.0.0.1:0',
): Promise<EchoServer> {
  const [bin, args] = await command(lang, 'server', ['--listen', listen])
  const proc = new Proc(name, spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  h.procs.push(proc)
  const [, addr] = await proc.waitFor(/^LISTENING (\S+)$/, 60_000)
  return new EchoServer(lang, proc, addr!)
}

function clientArgs(addr: string, o: EchoClientOptions): string[] {
  const args = ['--addr', addr]
  const opt = (flag: string, v: string | number | undefined): void => {
    if (v != null) args.push(`--${flag}`, String(v))
  }
  opt('peer', o.peer)
  opt('idempotency-key', o.idempotencyKey)
  opt('kinds', o.kinds?.join(','))
  opt('sizes', o.sizes?.join(','))
  opt('count', o.count)
  opt('response-bytes', o.responseBytes)
  for (const [k, v] of o.metadata ?? []) opt('metadata', `${k}=${v}`)
  opt('timeout-ms', o.timeoutMs)
  opt('delay-ms', o.delayMs)
  if (o.failure != null) {
    opt('fail-code', o.failure.code)
    opt('fail-message', o.failure.message)
    if (o.failure.details != null) opt('fail-details', Buffer.from(o.failure.details).toString('base64'))
  }
  opt('cancel-after-ms', o.cancelAfterMs)
  opt('stall-after', o.stallAfter)
  return args
}

/** What one run of an echo client printed. */
export interface EchoRun {
  results: EchoResult[]
  events: ClientEvent[]
  stdout: string
}

/** Runs an echo client to completion against addr (a gateway or a server). */
export async function runEchoClient(lang: EchoLang, addr: string, o: EchoClientOptions = {}, timeoutMs = 120_000): Promise<EchoRun> {
  const [bin, args] = await command(lang, 'client', clientArgs(addr, o))
  try {
    // A client still running after timeoutMs (its own calls have deadlines: it is stuck) gets SIGQUIT: Go and
    // the Python client (faulthandler) then print every thread's stack to stderr, which the error carries.
    const { stdout } = await run(bin, args, { timeout: timeoutMs, killSignal: 'SIGQUIT', maxBuffer: 64 << 20 })
    return parseRun(stdout)
  } catch (err: unknown) {
    const e = err as { stdout?: string; stderr?: string; code?: unknown; signal?: unknown }
    const how = e.signal === 'SIGQUIT' ? `stuck after ${timeoutMs} ms, stacks below` : String(e.code)
    throw new Error(`${lang} echo-client ${args.join(' ')} failed (${how}): ${e.stdout ?? ''}${e.stderr ?? ''}`)
  }
}

/** Starts an echo client and returns it running (stdin open: a line resumes a stalled client). */
export async function spawnEchoClient(h: Harness, lang: EchoLang, addr: string, o: EchoClientOptions = {}): Promise<Proc> {
  const [bin, args] = await command(lang, 'client', clientArgs(addr, o))
  const proc = new Proc(`${lang}-echo-client`, spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] }))
  h.procs.push(proc)
  return proc
}

/** The result lines and events among a client's output lines. */
export function parseRun(stdout: string | string[]): EchoRun {
  const lines = typeof stdout === 'string' ? stdout.split('\n') : stdout
  const all = jsonLines<EchoResult | ClientEvent>(lines)
  return {
    results: all.filter((e): e is EchoResult => (e as { event: string }).event === 'result'),
    events: all.filter((e): e is ClientEvent => (e as { event: string }).event !== 'result'),
    stdout: lines.join('\n'),
  }
}

function jsonLines<T>(lines: readonly string[]): T[] {
  return lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as T)
}

/** Hex SHA-256 of messages from..from+count-1 of size bytes each, byte i of message n being (n + i) mod 256. */
export function generatedSha256(count: number, size: number, from = 0): string {
  const hash = createHash('sha256')
  for (let n = from; n < from + count; n++) hash.update(generatedPayload(n, size))
  return hash.digest('hex')
}

/** Hex SHA-256 of the same payload repeated count times. */
export function repeatedSha256(payload: Uint8Array, count: number): string {
  const hash = createHash('sha256')
  for (let n = 0; n < count; n++) hash.update(payload)
  return hash.digest('hex')
}

/** Resident set size of a process, in bytes (from /proc). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (m == null) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(m[1]) * 1024
}
