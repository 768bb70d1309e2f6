import { closeSync, existsSync, openSync, readFileSync, renameSync, statSync, writeFileSync, writeSync } from 'node:fs'
import type { Logger } from '@stargate/shared/log'

/** What the journal knows about a request after a restart. */
export type JournalEntry = { state: 'started'; expiresAt: number } | { state: 'done'; expiresAt: number; response: Uint8Array }

interface Line {
  k: string
  t: number
  r?: string
}

/**
 * An append-only record of inbound requests handed to Serve handlers, so that a gateway killed and
 * restarted never runs a request twice: a request that was started but not finished before the restart is
 * answered "outcome unknown" (ABORTED) instead of being run again; a finished one is answered from the
 * journal. Writes are synchronous (they reach the kernel before the handler sees the call, so they survive
 * the process being killed); the file is compacted to the live window when it grows.
 */
export class RequestJournal {
  private readonly path: string
  private readonly log: Logger
  private readonly maxBytes: number
  private fd: number
  private written = 0

  constructor(path: string, log: Logger, maxBytes = 64 * 1024 * 1024) {
    this.path = path
    this.log = log
    this.maxBytes = maxBytes
    this.fd = openSync(path, 'a', 0o600)
    this.written = statSync(path).size
  }

  /** Reads the live entries (not yet expired). */
  static load(path: string, nowMs = Date.now()): Map<string, JournalEntry> {
    const out = new Map<string, JournalEntry>()
    if (!existsSync(path)) return out
    for (const text of readFileSync(path, 'utf8').split('\n')) {
      if (text === '') continue
      let line: Line
      try {
        line = JSON.parse(text) as Line
      } catch {
        continue // a torn last line after a crash
      }
      if (typeof line.k !== 'string' || typeof line.t !== 'number' || line.t < nowMs) continue
      out.set(
        line.k,
        line.r != null
          ? { state: 'done', expiresAt: line.t, response: Buffer.from(line.r, 'base64') }
          : { state: 'started', expiresAt: line.t },
      )
    }
    return out
  }

  started(key: string, expiresAt: number): void {
    this.append({ k: key, t: expiresAt })
  }

  done(key: string, expiresAt: number, response: Uint8Array): void {
    this.append({ k: key, t: expiresAt, r: Buffer.from(response).toString('base64') })
  }

  private append(line: Line): void {
    const bytes = Buffer.from(`${JSON.stringify(line)}\n`)
    writeSync(this.fd, bytes)
    this.written += bytes.byteLength
    if (this.written > this.maxBytes) this.compact()
  }

  private compact(): void {
    const live = RequestJournal.load(this.path)
    const tmp = `${this.path}.compact`
    const lines: string[] = []
    for (const [k, e] of live) {
      lines.push(
        JSON.stringify(e.state === 'done' ? { k, t: e.expiresAt, r: Buffer.from(e.response).toString('base64') } : { k, t: e.expiresAt }),
      )
    }
    writeFileSync(tmp, lines.length > 0 ? `${lines.join('\n')}\n` : '', { mode: 0o600 })
    closeSync(this.fd)
    renameSync(tmp, this.path)
    this.fd = openSync(this.path, 'a', 0o600)
    this.written = statSync(this.path).size
    this.log.info('request journal compacted', { entries: live.size, bytes: this.written })
  }

  close(): void {
    closeSync(this.fd)
  }
}
