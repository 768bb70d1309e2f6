import assert from 'node:assert/strict'
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { Code, StargateError } from '@stargate/shared/errors'
import { createLogger } from '@stargate/shared/log'
import { RequestJournal, type RequestJournalOptions } from './journal.ts'

const log = createLogger('test', { level: 'silent' })
const WINDOW = 60_000

/** A journal key with the longest request id a gateway accepts. */
const key = (i: number): string => `12D3KooWcaller/${String(i).padStart(128, 'x')}`

function setup(o: Partial<RequestJournalOptions> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'journal-'))
  let t = 1_000_000
  const clock = {
    now: () => t,
    advance: (ms: number) => {
      t += ms
    },
  }
  const options = (): RequestJournalOptions => ({
    dir,
    maxBytes: 1 << 20,
    maxEntries: 100_000,
    windowMs: WINDOW,
    syncIntervalMs: 10,
    log,
    now: clock.now,
    ...o,
  })
  const open = () => RequestJournal.open(options())
  const files = () => readdirSync(dir).sort()
  const diskBytes = () => files().reduce((n, f) => n + statSync(join(dir, f)).size, 0)
  return { dir, clock, open, files, diskBytes, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

function code(fn: () => void): { code: Code; message: string } {
  try {
    fn()
  } catch (err: unknown) {
    assert.ok(err instanceof StargateError, String(err))
    return { code: err.code, message: err.rawMessage }
  }
  assert.fail('expected a StargateError')
}

describe('request journal', () => {
  it('journal - started and finished requests survive a reopen; expired records and a torn line are ignored', () => {
    const s = setup()
    try {
      const now = s.clock.now()
      const { journal: j } = s.open()
      j.started('peer/a', now + WINDOW)
      j.started('peer/b', now + WINDOW)
      j.done('peer/b', now + WINDOW, new Uint8Array([1, 2, 3]))
      j.started('peer/old', now + 10)
      j.close()
      appendFileSync(join(s.dir, s.files().at(-1)!), '{"k":"peer/torn","t":')
      s.clock.advance(10)
      const { journal: j2, recovered } = s.open()
      assert.deepEqual(recovered.get('peer/a'), { state: 'started', expiresAtMs: now + WINDOW })
      const b = recovered.get('peer/b')
      assert.equal(b?.state, 'done')
      assert.deepEqual(b?.state === 'done' ? [...(b.response ?? [])] : [], [1, 2, 3])
      assert.equal(recovered.has('peer/old'), false)
      assert.equal(recovered.has('peer/torn'), false)
      // a reopened journal writes a new segment: the torn line cannot glue onto a new record
      j2.started('peer/c', now + WINDOW)
      j2.close()
      assert.equal(s.files().length, 2)
      assert.equal(s.open().recovered.get('peer/c')?.state, 'started')
    } finally {
      s.cleanup()
    }
  })

  it('journal - stays within its byte bound under a flood of long keys; refuses naming the flag; frees whole segments after the window', () => {
    const maxBytes = 64 * 1024
    const s = setup({ maxBytes })
    try {
      const { journal: j } = s.open()
      let refused: { code: Code; message: string } | undefined
      let accepted = 0
      for (let i = 0; i < 10_000 && refused == null; i++) {
        try {
          j.started(key(i), s.clock.now() + WINDOW)
          j.done(key(i), s.clock.now() + WINDOW, new Uint8Array(2_000))
          accepted++
        } catch (err: unknown) {
          refused = { code: (err as StargateError).code, message: (err as StargateError).rawMessage }
        }
        assert.ok(s.diskBytes() <= maxBytes, `${s.diskBytes()} bytes on disk`)
        assert.equal(j.bytes, s.diskBytes())
        s.clock.advance(1)
      }
      assert.ok(refused != null && accepted > 100, `${accepted} accepted`)
      assert.equal(refused.code, Code.ResourceExhausted)
      assert.match(refused.message, /request journal full: .* \(limit --request-journal-max-bytes 65536\); the request was not run/)
      // responses were kept only while the journal was under half full
      const { recovered } = s.open()
      const kept = [...recovered.values()].filter((e) => e.state === 'done' && e.response != null).length
      assert.ok(kept > 0 && kept < accepted, `${kept} of ${accepted} responses kept`)
      // closed segments are never rewritten; after the window they are deleted whole
      const sizes = new Map(s.files().map((f) => [f, statSync(join(s.dir, f)).size]))
      s.clock.advance(WINDOW)
      j.started(key(99_999), s.clock.now() + WINDOW)
      for (const f of s.files()) if (sizes.has(f)) assert.equal(statSync(join(s.dir, f)).size, sizes.get(f), `${f} unchanged`)
      assert.ok(s.diskBytes() < maxBytes / 4, `expired segments deleted: ${s.diskBytes()} bytes left`)
      j.close()
    } finally {
      s.cleanup()
    }
  })

  it('journal - requests started together and finished later cannot take it past its bound', () => {
    const maxBytes = 64 * 1024
    const s = setup({ maxBytes })
    try {
      const { journal: j } = s.open()
      const t = s.clock.now() + WINDOW
      let next = 0
      for (let batch = 0; batch < 20; batch++) {
        const running: number[] = []
        for (let n = 0; n < 50; n++) {
          try {
            j.started(key(next), t)
            running.push(next++)
          } catch (err: unknown) {
            assert.equal((err as StargateError).code, Code.ResourceExhausted)
            break
          }
        }
        for (const i of running) j.done(key(i), t, new Uint8Array(i % 2 === 0 ? 2_000 : 10))
        assert.ok(s.diskBytes() <= maxBytes, `${s.diskBytes()} bytes on disk after batch ${batch}`)
      }
      const { recovered } = s.open()
      assert.equal(recovered.size, next)
      assert.ok(
        [...recovered.values()].every((e) => e.state === 'done'),
        'every started request has its done record',
      )
      j.close()
    } finally {
      s.cleanup()
    }
  })

  it('journal - at most maxEntries requests within the window (refused naming --dedupe-max-entries)', () => {
    const s = setup({ maxEntries: 3 })
    try {
      const { journal: j } = s.open()
      for (let i = 0; i < 3; i++) j.started(`p/${i}`, s.clock.now() + WINDOW)
      const r = code(() => j.started('p/3', s.clock.now() + WINDOW))
      assert.equal(r.code, Code.ResourceExhausted)
      assert.match(r.message, /3 requests journaled .*limit --dedupe-max-entries 3/)
      j.close()
    } finally {
      s.cleanup()
    }
  })

  it('journal - once closed, nothing more is written and new requests are refused as not run', () => {
    const s = setup()
    try {
      const { journal: j } = s.open()
      j.started('p/running', s.clock.now() + WINDOW)
      j.close()
      j.done('p/running', s.clock.now() + WINDOW, new Uint8Array([9]))
      const r = code(() => j.started('p/late', s.clock.now() + WINDOW))
      assert.equal(r.code, Code.Unavailable)
      assert.match(r.message, /shutting down; the request was not run/)
      const { recovered } = s.open()
      assert.deepEqual(recovered.get('p/running'), { state: 'started', expiresAtMs: s.clock.now() + WINDOW }, 'not journaled as done')
      assert.equal(recovered.has('p/late'), false)
    } finally {
      s.cleanup()
    }
  })

  it('journal - a directory that cannot be created is a clear error naming the flags', () => {
    const s = setup()
    try {
      appendFileSync(join(s.dir, 'a-file'), 'x')
      const r = code(() =>
        RequestJournal.open({ dir: join(s.dir, 'a-file', 'journal'), maxBytes: 1, maxEntries: 1, windowMs: 1, syncIntervalMs: 1, log }),
      )
      assert.equal(r.code, Code.FailedPrecondition)
      assert.match(r.message, /--request-journal or --state-dir/)
    } finally {
      s.cleanup()
    }
  })

  it('journal - a segment that cannot be read is a clear error naming the flags', () => {
    const s = setup()
    try {
      // A directory where a segment file should be: reading it fails (EISDIR), as an unreadable file would.
      mkdirSync(join(s.dir, '000000000001.log'))
      const r = code(() => s.open())
      assert.equal(r.code, Code.FailedPrecondition)
      assert.match(
        r.message,
        /request journal directory .* \(set it with --request-journal or --state-dir.*\): segment 000000000001\.log: EISDIR/,
      )
    } finally {
      s.cleanup()
    }
  })
})
