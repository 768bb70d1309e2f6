import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { type Harness, Proc } from './harness.ts'

const SCRIPT = join(import.meta.dirname, 'relay-client.ts')

type Reply = Record<string, unknown> & { id?: number; ok?: boolean; error?: string; event?: string }

/** Drives test/lib/relay-client.ts (real js-libp2p circuit relay clients) in a child process. */
export class RelayClient {
  readonly proc: Proc
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (r: Reply) => void }>()
  readonly events: Reply[] = []
  private readonly eventWaiters: Array<{ match: (r: Reply) => boolean; resolve: (r: Reply) => void }> = []

  private constructor(proc: Proc) {
    this.proc = proc
  }

  /** Starts a client process, registered with the harness so it is always torn down. */
  static async start(h: Harness, name = 'relay-client'): Promise<RelayClient> {
    const child = spawn(process.execPath, [SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'], cwd: await h.tmp() })
    const proc = new Proc(name, child)
    h.procs.push(proc)
    const client = new RelayClient(proc)
    const seen = new Set<number>()
    const onLine = (): void => {
      for (let i = 0; i < proc.stdout.length; i++) {
        if (seen.has(i)) continue
        seen.add(i)
        let r: Reply
        try {
          r = JSON.parse(proc.stdout[i]!) as Reply
        } catch {
          continue
        }
        client.dispatch(r)
      }
    }
    child.stdout!.on('data', () => setImmediate(onLine))
    await proc.waitFor(/"event":"ready"/)
    return client
  }

  private dispatch(r: Reply): void {
    if (r.event != null) {
      this.events.push(r)
      for (const w of [...this.eventWaiters]) {
        if (w.match(r)) {
          this.eventWaiters.splice(this.eventWaiters.indexOf(w), 1)
          w.resolve(r)
        }
      }
      return
    }
    const p = this.pending.get(r.id!)
    if (p != null) {
      this.pending.delete(r.id!)
      p.resolve(r)
    }
  }

  /** Sends a command; resolves with the reply (which may carry `error`). */
  async call(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<Reply> {
    const id = this.nextId++
    const reply = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`relay-client ${cmd} timed out after ${timeoutMs} ms\n${this.proc.dump()}`))
      }, timeoutMs)
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer)
          resolve(r)
        },
      })
      this.proc.exited
        .then((code) => {
          if (this.pending.has(id)) {
            clearTimeout(timer)
            reject(new Error(`relay-client exited (${code}) during ${cmd}\n${this.proc.dump()}`))
          }
        })
        .catch(reject)
    })
    this.proc.child.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`)
    return reply
  }

  /** Like call, but throws if the reply is an error. */
  async ok(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<Reply> {
    const r = await this.call(cmd, args, timeoutMs)
    if (r.error != null) throw new Error(`relay-client ${cmd}: ${r.error}`)
    return r
  }

  /** Resolves with the first event (past or future) matching. */
  waitEvent(match: (r: Reply) => boolean, timeoutMs = 20_000): Promise<Reply> {
    const seen = this.events.find(match)
    if (seen != null) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching relay-client event within ${timeoutMs} ms`)), timeoutMs)
      this.eventWaiters.push({
        match,
        resolve: (r) => {
          clearTimeout(timer)
          resolve(r)
        },
      })
    })
  }
}
