import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import fc from 'fast-check'
import { type Admission, type DedupeLimits, DuplicateMemory, type Ticket } from './dedupe.ts'
import { GATEWAY_DEFAULTS } from './defaults.ts'

setFlagsFromString('--expose-gc')
/** A full garbage collection (what --expose-gc gives a fresh context). */
const gc = runInNewContext('gc') as () => void

const LIMITS: DedupeLimits = {
  windowMs: 60_000,
  maxEntries: 100,
  maxEntriesPerCaller: 50,
  maxBytes: 1_000_000,
  maxBytesPerCaller: 1_000_000,
}

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start
  return {
    now: () => t,
    advance: (ms) => {
      t += ms
    },
  }
}

function ticket(a: Admission<string>): Ticket {
  assert.equal(a.kind, 'new', `expected a new request, got ${a.kind}${a.kind === 'full' ? `: ${a.message}` : ''}`)
  return (a as Extract<Admission<string>, { kind: 'new' }>).ticket
}

async function recalled(a: Admission<string>): Promise<unknown> {
  assert.equal(a.kind, 'duplicate')
  return (a as Extract<Admission<string>, { kind: 'duplicate' }>).recalled
}

function fullMessage(a: Admission<string>): string {
  assert.equal(a.kind, 'full')
  return (a as Extract<Admission<string>, { kind: 'full' }>).message
}

describe('duplicate-request memory', () => {
  it('dedupe - its queues compact past GATEWAY_DEFAULTS.dedupeCompactMinDeadEntries dead slots losing no live entry', async () => {
    const dead = GATEWAY_DEFAULTS.dedupeCompactMinDeadEntries * 2 + 1
    const live = GATEWAY_DEFAULTS.dedupeCompactMinDeadEntries * 2
    const c = clock()
    const limits = { ...LIMITS, windowMs: 1_000, maxEntries: 10_000, maxEntriesPerCaller: 10_000 }
    const m = new DuplicateMemory<string>(limits, c.now)
    for (let i = 0; i < dead; i++) m.settle(ticket(m.begin('alice', `old-${i}`)), 'x', 1, true)
    c.advance(600)
    for (let i = 0; i < live; i++) m.settle(ticket(m.begin('alice', `new-${i}`)), `v${i}`, 2, true)
    c.advance(500) // the old ones expire: more than half of each queue is dead slots, so it compacts
    m.settle(ticket(m.begin('bob', 'probe-1')), 'x', 1, true)
    assert.equal(m.entries, live + 1)
    for (const i of [0, 1, live - 1]) assert.deepEqual(await recalled(m.begin('alice', `new-${i}`)), { kind: 'response', value: `v${i}` })
    c.advance(1_000) // every entry left expires: each must still be in its queue, in order
    m.settle(ticket(m.begin('bob', 'probe-2')), 'x', 1, true)
    assert.equal(m.entries, 1)
    assert.equal(m.bytes, 'probe-2'.length + 1, "only the last probe's id and response")
  })

  it('dedupe - a duplicate joins the running original, then is answered from memory', async () => {
    const m = new DuplicateMemory<string>(LIMITS, clock().now)
    const t = ticket(m.begin('alice', 'r1'))
    const joined = recalled(m.begin('alice', 'r1'))
    m.settle(t, 'answer', 6, true)
    assert.deepEqual(await joined, { kind: 'response', value: 'answer' })
    assert.deepEqual(await recalled(m.begin('alice', 'r1')), { kind: 'response', value: 'answer' })
    assert.equal(ticket(m.begin('bob', 'r1')).callerPeerId, 'bob', 'ids are per caller')
  })

  it('dedupe - when a caller is full its new requests are refused, naming the flag; nothing it sent is forgotten', async () => {
    const c = clock()
    const m = new DuplicateMemory<string>(LIMITS, c.now)
    const first = ticket(m.begin('mallory', 'id-0'))
    for (let i = 1; i < LIMITS.maxEntriesPerCaller; i++) m.settle(ticket(m.begin('mallory', `id-${i}`)), 'x', 1, true)
    const msg = fullMessage(m.begin('mallory', 'one-more'))
    assert.match(msg, /caller mallory: it has 50 requests remembered \(limit --dedupe-caller-max-entries 50; .*--dedupe-window-ms 60000/)
    assert.equal(m.stats.refused, 1)
    // still running and still settled entries are both kept
    const joined = recalled(m.begin('mallory', 'id-0'))
    m.settle(first, 'first', 5, true)
    assert.deepEqual(await joined, { kind: 'response', value: 'first' })
    assert.deepEqual(await recalled(m.begin('mallory', 'id-1')), { kind: 'response', value: 'x' })
    // other callers are not affected by one caller's limit
    ticket(m.begin('alice', 'a-1'))
    // once the window has passed, the caller may send again
    c.advance(LIMITS.windowMs)
    ticket(m.begin('mallory', 'one-more'))
    assert.equal(m.entries, 2, 'expired entries were dropped')
  })

  it('dedupe - when all callers together fill it, new requests are refused naming --dedupe-max-entries', () => {
    const m = new DuplicateMemory<string>({ ...LIMITS, maxEntries: 10, maxEntriesPerCaller: 4 }, clock().now)
    for (let i = 0; i < 10; i++) ticket(m.begin(`caller-${i % 3}`, `r${i}`))
    assert.match(
      fullMessage(m.begin('fresh-identity', 'r')),
      /^duplicate-request memory full: 10 requests remembered \(limit --dedupe-max-entries 10;/,
    )
  })

  it('dedupe - a request still running past its window is kept until it settles', async () => {
    const c = clock()
    const m = new DuplicateMemory<string>(LIMITS, c.now)
    const slow = ticket(m.begin('alice', 'slow'))
    c.advance(LIMITS.windowMs * 2)
    const joined = recalled(m.begin('alice', 'slow'))
    m.settle(slow, 'done', 4, true)
    assert.deepEqual(await joined, { kind: 'response', value: 'done' })
    ticket(m.begin('alice', 'next'))
    assert.equal(m.entries, 1, 'settled past its window: dropped at the next sweep')
  })

  it('dedupe - a request running past its window does not hold back the expiry of entries behind it', () => {
    const c = clock()
    const limits = { ...LIMITS, maxEntries: 10, maxEntriesPerCaller: 10 }
    const m = new DuplicateMemory<string>(limits, c.now)
    // a long-running call (a tunnelled bidi stream without deadline) arrives first...
    const stream = ticket(m.begin('streamer', 'bidi'))
    // ...then other callers fill the memory with calls that settle at once
    for (let i = 1; i < limits.maxEntries; i++) m.settle(ticket(m.begin(`caller-${i % 3}`, `r${i}`)), 'ok', 2, true)
    fullMessage(m.begin('fresh', 'r'))
    c.advance(limits.windowMs * 3)
    // every settled entry is past its window: a new caller is admitted though the stream still runs
    ticket(m.begin('fresh', 'r'))
    assert.equal(m.entries, 2, 'the settled entries expired; the running one stays')
    assert.equal(m.begin('streamer', 'bidi').kind, 'duplicate', 'the running request is still remembered')
    m.settle(stream, 'closed', 6, true)
    ticket(m.begin('streamer', 'bidi-2'))
    assert.equal(m.entries, 2, 'once settled past its window, the stream is dropped too')
  })

  it('dedupe - an expired entry is let go: nothing keeps it once its window passed', async () => {
    const c = clock()
    const m = new DuplicateMemory<string>(LIMITS, c.now)
    // A settled entry holding a response, referenced from here only through a WeakRef.
    const held = ((): WeakRef<Ticket> => {
      const t = ticket(m.begin('alice', 'r1'))
      m.settle(t, 'response', 8, true)
      return new WeakRef(t)
    })()
    c.advance(LIMITS.windowMs / 2)
    ticket(m.begin('alice', 'r2')) // alice stays known
    c.advance(LIMITS.windowMs / 2)
    ticket(m.begin('bob', 'r3')) // sweeps r1
    await new Promise((resolve) => setImmediate(resolve))
    gc()
    assert.equal(held.deref(), undefined, 'the memory still references an expired entry')
  })

  it('dedupe - over a byte limit the oldest responses are given up, never the ids', async () => {
    const m = new DuplicateMemory<string>({ ...LIMITS, maxBytesPerCaller: 2_500, maxBytes: 4_000 }, clock().now)
    for (const id of ['a', 'b', 'c']) m.settle(ticket(m.begin('alice', id)), id.repeat(1000), 1000, true)
    // alice: 3 ids + 3000 response bytes > 2500: her oldest response went
    assert.deepEqual(await recalled(m.begin('alice', 'a')), { kind: 'ran', bytes: 1000 })
    assert.deepEqual(await recalled(m.begin('alice', 'c')), { kind: 'response', value: 'c'.repeat(1000) })
    assert.equal(m.bytes, 2003)
    for (const id of ['x', 'y']) m.settle(ticket(m.begin('bob', id)), id.repeat(1000), 1000, true)
    // overall 4005 > 4000: the oldest response of anyone (alice's b) went
    assert.deepEqual(await recalled(m.begin('alice', 'b')), { kind: 'ran', bytes: 1000 })
    assert.deepEqual(await recalled(m.begin('bob', 'x')), { kind: 'response', value: 'x'.repeat(1000) })
    assert.equal(m.stats.reduced, 2)
  })

  it('dedupe - when ids alone fill a byte limit, new requests are refused naming the flag', () => {
    const m = new DuplicateMemory<string>({ ...LIMITS, maxBytesPerCaller: 100, maxBytes: 150 }, clock().now)
    m.settle(ticket(m.begin('alice', 'i'.repeat(40))), 'resp', 50, true)
    ticket(m.begin('alice', 'j'.repeat(40))) // the response goes to make room
    assert.match(
      fullMessage(m.begin('alice', 'k'.repeat(40))),
      /caller alice: its request ids take 80 bytes \(limit --dedupe-caller-max-bytes 100;/,
    )
    ticket(m.begin('bob', 'l'.repeat(60)))
    assert.match(fullMessage(m.begin('carol', 'm'.repeat(20))), /request ids take 140 bytes \(limit --dedupe-max-bytes 150;/)
  })

  it('dedupe - a request that never reached a handler is dropped: its retry is new', async () => {
    const m = new DuplicateMemory<string>(LIMITS, clock().now)
    const t = ticket(m.begin('alice', 'r'))
    const joined = recalled(m.begin('alice', 'r'))
    m.settle(t, 'busy', 4, false)
    assert.deepEqual(await joined, { kind: 'response', value: 'busy' }, 'a duplicate that joined gets the same answer')
    ticket(m.begin('alice', 'r'))
    assert.equal(m.entries, 1)
    assert.equal(m.bytes, 1)
  })

  it('dedupe - restored entries are kept whatever the limits; expired ones are not', async () => {
    const c = clock()
    const m = new DuplicateMemory<string>({ ...LIMITS, maxEntriesPerCaller: 2 }, c.now)
    m.restore('alice', 'r1', c.now() + 1000, 'aborted', 0)
    m.restore('alice', 'r2', c.now() + 1000, undefined, 77)
    m.restore('alice', 'r3', c.now() + 1000, 'resp', 4)
    m.restore('alice', 'old', c.now(), 'resp', 4)
    assert.deepEqual(await recalled(m.begin('alice', 'r1')), { kind: 'response', value: 'aborted' })
    assert.deepEqual(await recalled(m.begin('alice', 'r2')), { kind: 'ran', bytes: 77 })
    assert.deepEqual(await recalled(m.begin('alice', 'r3')), { kind: 'response', value: 'resp' })
    assert.equal(m.entries, 3, 'the expired one was not restored')
    fullMessage(m.begin('alice', 'new')) // restored entries count toward the limits
  })

  it('dedupe - property: an id admitted and kept is never admitted again within its window; limits hold; expired entries go', () => {
    const limits: DedupeLimits = { windowMs: 1000, maxEntries: 12, maxEntriesPerCaller: 5, maxBytes: 300, maxBytesPerCaller: 120 }
    const op = fc.oneof(
      fc.record({ kind: fc.constant('begin' as const), caller: fc.integer({ min: 0, max: 3 }), id: fc.integer({ min: 0, max: 15 }) }),
      fc.record({
        kind: fc.constant('settle' as const),
        pick: fc.nat(),
        bytes: fc.integer({ min: 0, max: 80 }),
        keep: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 600 }) }),
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const c = clock()
        const m = new DuplicateMemory<string>(limits, c.now)
        const running: Ticket[] = []
        /** Kept ids and when they were admitted: readmitting one within the window would run it twice. */
        const kept = new Map<string, number>()
        const admittedAt = new Map<string, number>()
        for (const o of ops) {
          if (o.kind === 'advance') c.advance(o.ms)
          else if (o.kind === 'begin') {
            const key = `c${o.caller}/r${o.id}`
            const a = m.begin(`c${o.caller}`, `r${o.id}`)
            if (a.kind === 'new') {
              const since = kept.get(key)
              assert.ok(since == null || c.now() - since >= limits.windowMs, `${key} admitted twice within its window`)
              running.push(a.ticket)
              admittedAt.set(key, c.now())
            }
          } else if (running.length > 0) {
            const t = running.splice(o.pick % running.length, 1)[0]!
            const key = `${t.callerPeerId}/${t.requestId}`
            m.settle(t, 'v'.repeat(o.bytes), o.bytes, o.keep)
            if (o.keep) kept.set(key, admittedAt.get(key)!)
          }
          assert.ok(m.entries <= limits.maxEntries)
          assert.ok(m.bytes <= limits.maxBytes)
        }
        // Once every window has passed, only the requests still running are remembered: a new caller gets in.
        c.advance(limits.windowMs)
        if (running.length < limits.maxEntries) ticket(m.begin('probe', 'p'))
        assert.equal(m.entries, Math.min(running.length + 1, limits.maxEntries))
      }),
      { seed: 20261123, numRuns: 300 },
    )
  })
})
