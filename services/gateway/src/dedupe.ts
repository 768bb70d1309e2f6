/**
 * The duplicate-request memory: which request ids each caller has sent here, and what they returned, so a
 * duplicate (a retry, on any tier) is answered instead of run again.
 *
 * It fails closed. An entry is kept for its whole window, whether its request is still running or has
 * settled, and a request still running when its window ends is kept until it settles (then dropped at
 * once); when a limit is reached the memory refuses new requests (the caller gets RESOURCE_EXHAUSTED
 * naming the limit) instead of forgetting an old one, because a forgotten id would run a second time when
 * its retry arrives. The limits are per caller, so one caller cannot take every slot, and overall.
 *
 * Bytes count the request ids and the remembered responses. Responses can be given up without forgetting
 * their id: over a byte limit the oldest responses are dropped first and their duplicates are told the
 * request already ran (never run again). Only when ids alone fill a limit are new requests refused.
 */

import { GATEWAY_DEFAULTS } from './defaults.ts'

/** Limits of the memory (GATEWAY_DEFAULTS has the defaults; each names its flag in refusals). */
export interface DedupeLimits {
  /** How long an entry is kept after its request arrived (--dedupe-window-ms). */
  windowMs: number
  /** Entries of all callers (--dedupe-max-entries). */
  maxEntries: number
  /** Entries of one caller (--dedupe-caller-max-entries). */
  maxEntriesPerCaller: number
  /** Bytes of ids and responses of all callers (--dedupe-max-bytes). */
  maxBytes: number
  /** Bytes of ids and responses of one caller (--dedupe-caller-max-bytes). */
  maxBytesPerCaller: number
}

/** What the memory recalls for a duplicate. */
export type Recalled<T> =
  /** The remembered response. */
  | { kind: 'response'; value: T }
  /** The request already ran, but its response (of `bytes` bytes) was given up to stay within a byte limit. */
  | { kind: 'ran'; bytes: number }

/** The outcome of offering a request to the memory. */
export type Admission<T> =
  /** A new request: run it, then settle its ticket. */
  | { kind: 'new'; ticket: Ticket }
  /** A duplicate: its original's answer (awaited while the original still runs). */
  | { kind: 'duplicate'; recalled: Promise<Recalled<T>> }
  /** The memory is full: refuse the request (RESOURCE_EXHAUSTED) with this message. */
  | { kind: 'full'; message: string }

/** A new request's place in the memory, held until it settles. */
export interface Ticket {
  readonly callerPeerId: string
  readonly requestId: string
  /** When the entry leaves the memory (epoch ms). */
  readonly expiresAtMs: number
}

interface Entry<T> extends Ticket {
  readonly caller: CallerMemory<T>
  running: boolean
  /** Still running when its window ended: out of the arrival queue, dropped when it settles. */
  parked: boolean
  removed: boolean
  value?: T
  /** Bytes of the remembered response (0 while running, once given up, or when none is kept). */
  responseBytes: number
  /** Bytes of the response given up, for the "already ran" answer. */
  droppedBytes: number
  /** Duplicates waiting for a running entry. */
  waiters?: Array<(r: Recalled<T>) => void>
}

interface CallerMemory<T> {
  readonly peerId: string
  readonly entries: Map<string, Entry<T>>
  /** Entries of this caller holding a response, oldest first (lazily cleaned). */
  readonly holding: Fifo<Entry<T>>
  bytes: number
}

/** A FIFO queue of objects with O(1) amortised push / shift, compacted past GATEWAY_DEFAULTS.dedupeCompactMinDeadEntries dead slots. */
class Fifo<E> {
  private items: E[] = []
  private head = 0

  push(e: E): void {
    this.items.push(e)
  }

  peek(): E | undefined {
    return this.items[this.head]
  }

  shift(): E | undefined {
    if (this.head >= this.items.length) return undefined
    const e = this.items[this.head]
    this.items[this.head++] = undefined as E
    if (this.head > GATEWAY_DEFAULTS.dedupeCompactMinDeadEntries && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return e
  }

  get length(): number {
    return this.items.length - this.head
  }
}

/** Counters of the memory. */
export interface DedupeStats {
  /** Requests refused because a limit was reached. */
  refused: number
  /** Responses given up (kept as "already ran") to stay within a byte limit. */
  reduced: number
}

/** Bytes an id costs (its UTF-16 length: what V8 holds at most twice of; ids are bounded in length). */
function idBytes(id: string): number {
  return id.length
}

/** The duplicate-request memory (see the module comment). Pure: time comes from the injected clock. */
export class DuplicateMemory<T> {
  readonly stats: DedupeStats = { refused: 0, reduced: 0 }
  private readonly limits: DedupeLimits
  private readonly now: () => number
  private readonly callers = new Map<string, CallerMemory<T>>()
  /** Every entry in arrival (= expiry) order, for the sweep; an entry running past its window leaves it (parked). */
  private readonly arrivals = new Fifo<Entry<T>>()
  /** Entries holding a response, oldest first (lazily cleaned: removed and given-up ones leave from the front). */
  private readonly holding = new Fifo<Entry<T>>()
  private entryCount = 0
  private byteCount = 0

  constructor(limits: DedupeLimits, now: () => number = Date.now) {
    for (const [k, v] of Object.entries(limits)) {
      if (!(Number.isSafeInteger(v) && v > 0)) throw new RangeError(`dedupe ${k} must be a positive integer, got ${v}`)
    }
    this.limits = limits
    this.now = now
  }

  /** Entries held now (running and settled). */
  get entries(): number {
    return this.entryCount
  }

  /** Bytes of ids and responses held now. */
  get bytes(): number {
    return this.byteCount
  }

  /** Offers a request: a duplicate is recalled, a new one admitted if every limit allows it. */
  begin(callerPeerId: string, requestId: string): Admission<T> {
    this.sweep()
    const caller = this.callers.get(callerPeerId)
    const seen = caller?.entries.get(requestId)
    if (seen != null) return { kind: 'duplicate', recalled: this.recall(seen) }
    const full = this.makeRoom(caller, callerPeerId, idBytes(requestId))
    if (full != null) {
      this.stats.refused++
      return { kind: 'full', message: full }
    }
    return { kind: 'new', ticket: this.insert(callerPeerId, requestId, this.now() + this.limits.windowMs, true) }
  }

  /**
   * Settles a running request. With `keep`, its response is remembered for duplicates (given up first when
   * a byte limit needs room); without, the entry is dropped (the request never reached a handler, so a
   * retry may run it). Duplicates that joined while it ran get `value` either way. A request that ran
   * past its window is dropped now: its window is over.
   */
  settle(ticket: Ticket, value: T, responseBytes: number, keep: boolean): void {
    const entry = ticket as Entry<T>
    if (!entry.running) return
    entry.running = false
    const waiters = entry.waiters
    entry.waiters = undefined
    for (const w of waiters ?? []) w({ kind: 'response', value })
    if (!keep || entry.parked) {
      this.remove(entry)
      return
    }
    this.hold(entry, value, responseBytes)
  }

  /**
   * Puts back an entry recovered after a restart (from the request journal), whatever the limits: a
   * restart must not forget. `value` undefined means "ran, response not kept".
   */
  restore(callerPeerId: string, requestId: string, expiresAtMs: number, value: T | undefined, responseBytes: number): void {
    if (expiresAtMs <= this.now() || this.callers.get(callerPeerId)?.entries.has(requestId) === true) return
    const entry = this.insert(callerPeerId, requestId, expiresAtMs, false)
    if (value != null) this.hold(entry, value, responseBytes)
    else entry.droppedBytes = responseBytes
    this.reduce(entry.caller)
  }

  private recall(entry: Entry<T>): Promise<Recalled<T>> {
    if (!entry.running) {
      return Promise.resolve(
        entry.value !== undefined ? { kind: 'response', value: entry.value } : { kind: 'ran', bytes: entry.droppedBytes },
      )
    }
    return new Promise((resolve) => {
      entry.waiters ??= []
      entry.waiters.push(resolve)
    })
  }

  private insert(callerPeerId: string, requestId: string, expiresAtMs: number, running: boolean): Entry<T> {
    let caller = this.callers.get(callerPeerId)
    if (caller == null) {
      caller = { peerId: callerPeerId, entries: new Map(), holding: new Fifo(), bytes: 0 }
      this.callers.set(callerPeerId, caller)
    }
    const entry: Entry<T> = {
      callerPeerId,
      requestId,
      expiresAtMs,
      caller,
      running,
      parked: false,
      removed: false,
      responseBytes: 0,
      droppedBytes: 0,
    }
    caller.entries.set(requestId, entry)
    this.arrivals.push(entry)
    const bytes = idBytes(requestId)
    caller.bytes += bytes
    this.byteCount += bytes
    this.entryCount++
    return entry
  }

  private hold(entry: Entry<T>, value: T, responseBytes: number): void {
    entry.value = value
    entry.responseBytes = responseBytes
    entry.caller.bytes += responseBytes
    this.byteCount += responseBytes
    if (responseBytes > 0) {
      entry.caller.holding.push(entry)
      this.holding.push(entry)
    }
    this.reduce(entry.caller)
  }

  /** Gives up the oldest responses while a byte limit is exceeded. */
  private reduce(caller: CallerMemory<T>): void {
    while (caller.bytes > this.limits.maxBytesPerCaller && this.dropOldest(caller.holding)) {}
    while (this.byteCount > this.limits.maxBytes && this.dropOldest(this.holding)) {}
  }

  /** Gives up the oldest response still held in `queue`; false when there is none. */
  private dropOldest(queue: Fifo<Entry<T>>): boolean {
    for (let e = queue.shift(); e != null; e = queue.shift()) {
      if (e.removed || e.responseBytes === 0) continue
      e.caller.bytes -= e.responseBytes
      this.byteCount -= e.responseBytes
      e.droppedBytes = e.responseBytes
      e.responseBytes = 0
      e.value = undefined
      this.stats.reduced++
      return true
    }
    return false
  }

  /** Makes room for a new id of `bytes` bytes; returns why there is none (naming the limit's flag). */
  private makeRoom(caller: CallerMemory<T> | undefined, callerPeerId: string, bytes: number): string | undefined {
    const l = this.limits
    const window = `each is kept for --dedupe-window-ms ${l.windowMs} ms, so a retry is never run twice; retry later`
    const callerEntries = caller?.entries.size ?? 0
    if (callerEntries >= l.maxEntriesPerCaller) {
      return `duplicate-request memory full for caller ${callerPeerId}: it has ${callerEntries} requests remembered (limit --dedupe-caller-max-entries ${l.maxEntriesPerCaller}; ${window})`
    }
    if (this.entryCount >= l.maxEntries) {
      return `duplicate-request memory full: ${this.entryCount} requests remembered (limit --dedupe-max-entries ${l.maxEntries}; ${window})`
    }
    if (caller != null) while (caller.bytes + bytes > l.maxBytesPerCaller && this.dropOldest(caller.holding)) {}
    const callerBytes = caller?.bytes ?? 0
    if (callerBytes + bytes > l.maxBytesPerCaller) {
      return `duplicate-request memory full for caller ${callerPeerId}: its request ids take ${callerBytes} bytes (limit --dedupe-caller-max-bytes ${l.maxBytesPerCaller}; ${window})`
    }
    while (this.byteCount + bytes > l.maxBytes && this.dropOldest(this.holding)) {}
    if (this.byteCount + bytes > l.maxBytes) {
      return `duplicate-request memory full: request ids take ${this.byteCount} bytes (limit --dedupe-max-bytes ${l.maxBytes}; ${window})`
    }
    return undefined
  }

  private remove(entry: Entry<T>): void {
    if (entry.removed) return
    entry.removed = true
    const caller = entry.caller
    caller.entries.delete(entry.requestId)
    const bytes = idBytes(entry.requestId) + entry.responseBytes
    caller.bytes -= bytes
    this.byteCount -= bytes
    this.entryCount--
    entry.value = undefined
    entry.responseBytes = 0
    if (caller.entries.size === 0) this.callers.delete(caller.peerId)
    // Let go of what leads the holding queues and holds nothing any more, so they never outgrow the entries
    // of about two windows (their fronts are alive or within their windows).
    trimFront(this.holding)
    trimFront(caller.holding)
  }

  /**
   * Drops entries past their window, oldest first. A request still running is kept until it settles, out
   * of the queue (parked), so it does not hold back the expiry of the entries behind it.
   */
  private sweep(): void {
    const now = this.now()
    for (let e = this.arrivals.peek(); e != null; e = this.arrivals.peek()) {
      if (!e.removed) {
        if (e.expiresAtMs > now) return
        if (e.running) e.parked = true
        else this.remove(e)
      }
      this.arrivals.shift()
    }
  }
}

/** Drops the front entries of a holding queue that were removed or gave up their response. */
function trimFront<T>(queue: Fifo<Entry<T>>): void {
  for (let e = queue.peek(); e != null && (e.removed || e.responseBytes === 0); e = queue.peek()) queue.shift()
}
