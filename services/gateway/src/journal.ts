import {
  accessSync,
  closeSync,
  constants,
  fdatasync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import { Code, messageOf, StargateError } from '@stargate/shared/errors'
import { type Logger, RateLimitedLog } from '@stargate/shared/log'

/** What the journal knows about a request after a restart. */
export type JournalEntry =
  | { state: 'started'; expiresAtMs: number }
  /** Finished; `response` is the encoded PeerResponse, absent when it was not kept (`responseBytes` long). */
  | { state: 'done'; expiresAtMs: number; response?: Uint8Array; responseBytes: number }

export interface RequestJournalOptions {
  /** Directory of the journal's segment files (created if missing). */
  dir: string
  /** Bytes of all segment files at most (--request-journal-max-bytes). */
  maxBytes: number
  /** Requests journaled within their window at most (--dedupe-max-entries: each is a remembered request). */
  maxEntries: number
  /** How long a record matters (--dedupe-window-ms); a segment is deleted once all its records are older. */
  windowMs: number
  /** Records are fdatasync'ed in batches at least this often. */
  syncIntervalMs: number
  log: Logger
  now?: () => number
}

interface Line {
  k: string
  t: number
  /** The encoded response, base64. */
  r?: string
  /** Finished, response of this many bytes not kept. */
  d?: number
}

interface Segment {
  path: string
  fd?: number
  bytes: number
  /** Started records in it (each is a journaled request). */
  started: number
  /** The latest expiry of its records: once past, the whole segment is dead. */
  maxExpiresAtMs: number
  createdAtMs: number
  syncing: boolean
  /** Written since its last fdatasync. */
  dirty: boolean
  retired: boolean
}

/** What a "done" record without its response adds to its "started" record (`,"d":N` with N < 10^10). */
const DONE_EXTRA_BYTES = 16
const SEGMENT_FILE = /^(\d{12})\.log$/
/** Segments per journal: a segment is deleted whole, so at most about 1/SEGMENTS of the bound is dead weight. */
const SEGMENTS = 8

/**
 * The request journal: a record of every inbound request handed to a Serve handler, so a gateway killed
 * and restarted never runs one twice. A request started but not finished before the restart is answered
 * "may or may not have run" (ABORTED) instead of being run again; a finished one is answered from the
 * journal (its response, or "already ran" when the response was not kept).
 *
 * Durability: a request's record is written (write(2)) before the handler sees the request, so it survives
 * the process being killed at any point; the records are fdatasync'ed in batches, at most syncIntervalMs
 * after they were written, so a power loss or kernel crash can lose the records of the last syncIntervalMs.
 *
 * Bounds: records go to segment files of about maxBytes/8 each; a segment is deleted whole once every
 * record in it is past its window, so nothing is ever rewritten (compaction costs one unlink per segment).
 * A new request is refused (RESOURCE_EXHAUSTED, naming the flag) when its record would take the journal past
 * maxBytes or past maxEntries requests; responses are kept only while the journal is under half full.
 * Record size does not depend on the method or payload of a request, only on its (bounded) ids.
 */
export class RequestJournal {
  readonly dir: string
  readonly maxBytes: number
  private readonly o: RequestJournalOptions
  private readonly now: () => number
  private readonly segments: Segment[] = []
  private active?: Segment
  private nextSeq: number
  private totalBytes = 0
  private startedCount = 0
  /** Room reserved for the "done" records of requests started and not yet finished. */
  private reservedBytes = 0
  private syncTimer?: NodeJS.Timeout
  private closed = false
  private readonly warnings: RateLimitedLog
  /** Records that could not be written ("done" records: their requests stay "started" after a restart). */
  writeFailures = 0

  private constructor(o: RequestJournalOptions, nextSeq: number) {
    this.o = o
    this.dir = o.dir
    this.maxBytes = o.maxBytes
    this.now = o.now ?? Date.now
    this.warnings = new RateLimitedLog(o.log, { now: this.now })
    this.nextSeq = nextSeq
  }

  /**
   * Opens the journal in `dir` and returns what it recovered (requests still within their window).
   * Throws FAILED_PRECONDITION naming the flags when the directory cannot be created or written, or a
   * segment in it cannot be read or (past its window) deleted.
   */
  static open(o: RequestJournalOptions): { journal: RequestJournal; recovered: Map<string, JournalEntry> } {
    for (const k of ['maxBytes', 'maxEntries', 'windowMs', 'syncIntervalMs'] as const) {
      if (!(Number.isSafeInteger(o[k]) && o[k] > 0)) throw new RangeError(`request journal ${k} must be a positive integer, got ${o[k]}`)
    }
    let names: string[]
    try {
      mkdirSync(o.dir, { recursive: true, mode: 0o700 })
      accessSync(o.dir, constants.W_OK)
      names = readdirSync(o.dir)
        .filter((n) => SEGMENT_FILE.test(n))
        .sort()
    } catch (err: unknown) {
      throw unusableDirectory(o.dir, '', err)
    }
    const now = (o.now ?? Date.now)()
    const recovered = new Map<string, JournalEntry>()
    const lastSeq = names.length > 0 ? Number(SEGMENT_FILE.exec(names.at(-1)!)![1]) : 0
    const journal = new RequestJournal(o, lastSeq + 1)
    for (const name of names) {
      const path = join(o.dir, name)
      let seg: Segment
      try {
        seg = readSegment(path, now, recovered)
        if (seg.maxExpiresAtMs <= now) {
          unlinkSync(path)
          continue
        }
      } catch (err: unknown) {
        throw unusableDirectory(o.dir, `segment ${name}: `, err)
      }
      journal.segments.push(seg)
      journal.totalBytes += seg.bytes
      journal.startedCount += seg.started
    }
    return { journal, recovered }
  }

  /** Bytes of all segment files now (gauge stargate.journal.bytes). */
  get bytes(): number {
    return this.totalBytes
  }

  /**
   * Records that a request is handed to its handler; call it right before. Throws when the request must
   * not run: RESOURCE_EXHAUSTED when the journal is full or the disk is, UNAVAILABLE when it cannot be
   * written or is closed. The message says the request was not run.
   */
  started(key: string, expiresAtMs: number): void {
    if (this.closed) throw new StargateError(Code.Unavailable, 'the gateway is shutting down; the request was not run')
    this.dropExpired()
    const line = Buffer.from(`${JSON.stringify({ k: key, t: expiresAtMs } satisfies Line)}\n`)
    if (this.startedCount >= this.o.maxEntries) {
      throw new StargateError(
        Code.ResourceExhausted,
        `request journal full: ${this.startedCount} requests journaled within --dedupe-window-ms ${this.o.windowMs} ms (limit --dedupe-max-entries ${this.o.maxEntries}); the request was not run, retry later`,
      )
    }
    const reserve = line.byteLength + DONE_EXTRA_BYTES
    if (this.totalBytes + line.byteLength + this.reservedBytes + reserve > this.o.maxBytes) {
      throw new StargateError(
        Code.ResourceExhausted,
        `request journal full: ${this.totalBytes} bytes of requests journaled within --dedupe-window-ms ${this.o.windowMs} ms (limit --request-journal-max-bytes ${this.o.maxBytes}); the request was not run, retry later`,
      )
    }
    this.append(line, expiresAtMs).started++
    this.startedCount++
    this.reservedBytes += reserve
  }

  /**
   * Records that a started request finished, with its encoded response while the journal is under half
   * full. Never throws: a record that cannot be written leaves the request "started" (after a restart its
   * retry is answered ABORTED, never run again).
   */
  done(key: string, expiresAtMs: number, response: Uint8Array): void {
    // The room reserved when it started, always enough for the record without its response.
    const reserve = Buffer.byteLength(JSON.stringify({ k: key, t: expiresAtMs } satisfies Line)) + 1 + DONE_EXTRA_BYTES
    this.reservedBytes = Math.max(0, this.reservedBytes - reserve)
    if (this.closed) return
    let text = JSON.stringify({ k: key, t: expiresAtMs, r: Buffer.from(response).toString('base64') } satisfies Line)
    if (this.totalBytes + this.reservedBytes + text.length + 1 > this.o.maxBytes / 2) {
      text = JSON.stringify({ k: key, t: expiresAtMs, d: response.byteLength } satisfies Line)
    }
    try {
      this.append(Buffer.from(`${text}\n`), expiresAtMs)
    } catch (err: unknown) {
      this.writeFailures++
      this.warnings.warn('could not journal a finished request; after a restart its retry is answered ABORTED', {
        dir: this.dir,
        err: messageOf(err),
        failures: this.writeFailures,
      })
    }
  }

  /** Writes what is pending to disk and closes the journal; later records are not written. */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.syncTimer)
    for (const seg of this.segments) this.retire(seg, true)
    this.active = undefined
  }

  /** Appends one record to the active segment (rotating first when due); throws a StargateError. */
  private append(line: Buffer, expiresAtMs: number): Segment {
    const now = this.now()
    const seg = this.activeSegment(now, line.byteLength)
    let written = 0
    try {
      while (written < line.byteLength) written += writeSync(seg.fd!, line, written)
    } catch (err: unknown) {
      if (written > 0) {
        // A torn record would glue onto the next one: cut it off, or leave this segment.
        try {
          ftruncateSync(seg.fd!, seg.bytes)
        } catch {
          this.retire(seg, false)
        }
      }
      throw journalError(err, this.dir)
    }
    seg.bytes += line.byteLength
    this.totalBytes += line.byteLength
    seg.maxExpiresAtMs = Math.max(seg.maxExpiresAtMs, expiresAtMs)
    seg.dirty = true
    this.scheduleSync()
    return seg
  }

  private activeSegment(now: number, bytes: number): Segment {
    const a = this.active
    const full = a != null && a.bytes + bytes > this.o.maxBytes / SEGMENTS && a.bytes > 0
    const old = a != null && now - a.createdAtMs > this.o.windowMs / SEGMENTS && a.bytes > 0
    if (a != null && a.fd != null && !a.retired && !full && !old) return a
    if (a != null) this.retire(a, false)
    const path = join(this.dir, `${String(this.nextSeq++).padStart(12, '0')}.log`)
    let fd: number
    try {
      fd = openSync(path, 'wx', 0o600)
      syncDir(this.dir)
    } catch (err: unknown) {
      throw journalError(err, this.dir)
    }
    const seg: Segment = {
      path,
      fd,
      bytes: 0,
      started: 0,
      maxExpiresAtMs: 0,
      createdAtMs: now,
      syncing: false,
      dirty: false,
      retired: false,
    }
    this.segments.push(seg)
    this.active = seg
    return seg
  }

  /** Stops writing to a segment: its pending records are synced, then its file is closed. */
  private retire(seg: Segment, now: boolean): void {
    if (seg.retired) return
    seg.retired = true
    if (seg.fd == null) return
    if (now) {
      const fd = seg.fd
      seg.fd = undefined
      try {
        if (seg.dirty) fdatasyncSync(fd)
      } catch (err: unknown) {
        this.o.log.warn('request journal sync failed', { dir: this.dir, err: messageOf(err) })
      }
      seg.dirty = false
      // A background sync still running on the file closes it when it ends.
      if (!seg.syncing) closeSync(fd)
      return
    }
    this.sync(seg)
  }

  private scheduleSync(): void {
    if (this.syncTimer != null) return
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined
      for (const seg of this.segments) if (seg.dirty || (seg.retired && seg.fd != null)) this.sync(seg)
    }, this.o.syncIntervalMs)
    this.syncTimer.unref()
  }

  /** fdatasync in the background; a retired segment's file is closed afterwards. */
  private sync(seg: Segment): void {
    if (seg.syncing || seg.fd == null) return
    const fd = seg.fd
    if (!seg.dirty) {
      if (seg.retired) {
        seg.fd = undefined
        closeSync(fd)
      }
      return
    }
    seg.dirty = false
    seg.syncing = true
    fdatasync(fd, (err) => {
      seg.syncing = false
      if (err != null) this.o.log.warn('request journal sync failed', { dir: this.dir, err: err.message })
      // retired and synced meanwhile: closing the file was left to us
      if (seg.fd !== fd) closeSync(fd)
      else if (seg.dirty) seg.retired ? this.sync(seg) : this.scheduleSync()
      else if (seg.retired) {
        seg.fd = undefined
        closeSync(fd)
      }
    })
  }

  /** Deletes segments whose records are all past their window. */
  private dropExpired(): void {
    const now = this.now()
    while (this.segments.length > 0) {
      const seg = this.segments[0]!
      if (seg === this.active || seg.maxExpiresAtMs > now) return
      this.segments.shift()
      this.retire(seg, true)
      try {
        unlinkSync(seg.path)
      } catch (err: unknown) {
        this.o.log.warn('could not delete an expired request journal segment', { path: seg.path, err: messageOf(err) })
      }
      this.totalBytes -= seg.bytes
      this.startedCount -= seg.started
    }
  }
}

/** Parses one segment into `into` (later records of a key win); a torn or foreign line is skipped. */
function readSegment(path: string, now: number, into: Map<string, JournalEntry>): Segment {
  const text = readFileSync(path, 'utf8')
  let started = 0
  let maxExpiresAtMs = 0
  for (const raw of text.split('\n')) {
    if (raw === '') continue
    let line: Line
    try {
      line = JSON.parse(raw) as Line
    } catch {
      continue // a torn last line after a crash
    }
    if (typeof line.k !== 'string' || typeof line.t !== 'number') continue
    maxExpiresAtMs = Math.max(maxExpiresAtMs, line.t)
    const isStarted = line.r == null && line.d == null
    if (isStarted) started++
    if (line.t <= now) continue
    if (isStarted) {
      if (!into.has(line.k)) into.set(line.k, { state: 'started', expiresAtMs: line.t })
      continue
    }
    const response = typeof line.r === 'string' ? Buffer.from(line.r, 'base64') : undefined
    into.set(line.k, { state: 'done', expiresAtMs: line.t, response, responseBytes: response?.byteLength ?? Number(line.d ?? 0) })
  }
  return {
    path,
    bytes: statSync(path).size,
    started,
    maxExpiresAtMs,
    createdAtMs: now,
    syncing: false,
    dirty: false,
    retired: true,
  }
}

/** FAILED_PRECONDITION: the journal directory (or a segment in it) is unusable, naming the flags that move it. */
function unusableDirectory(dir: string, what: string, err: unknown): StargateError {
  return new StargateError(
    Code.FailedPrecondition,
    `cannot use the request journal directory ${dir} (set it with --request-journal or --state-dir, or turn the journal off with --request-journal off): ${what}${messageOf(err)}`,
    { cause: err },
  )
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** A write failure as the status of the request that could not be journaled (so was not run). */
function journalError(err: unknown, dir: string): StargateError {
  const e = StargateError.from(err, Code.Unavailable)
  return new StargateError(e.code, `cannot write the request journal in ${dir} (${e.rawMessage}); the request was not run`, {
    cause: err,
  })
}
