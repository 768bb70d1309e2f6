import assert from 'node:assert/strict'
import { appendFileSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { createLogger } from '@stargate/shared/log'
import { RequestJournal } from './journal.ts'

const log = createLogger('test', { level: 'silent' })

describe('request journal', () => {
  it('journal - started and finished requests survive a reopen; expired entries and a torn line are ignored', () => {
    const dir = mkdtempSync(join(tmpdir(), 'journal-'))
    try {
      const path = join(dir, 'requests')
      const now = Date.now()
      const j = new RequestJournal(path, log)
      j.started('peer/a', now + 60_000)
      j.started('peer/b', now + 60_000)
      j.done('peer/b', now + 60_000, new Uint8Array([1, 2, 3]))
      j.started('peer/old', now - 1)
      j.close()
      appendFileSync(path, '{"k":"peer/torn","t":')
      const loaded = RequestJournal.load(path, now)
      assert.deepEqual(loaded.get('peer/a'), { state: 'started', expiresAt: now + 60_000 })
      const b = loaded.get('peer/b')
      assert.equal(b?.state, 'done')
      assert.deepEqual(b?.state === 'done' ? [...b.response] : [], [1, 2, 3])
      assert.equal(loaded.has('peer/old'), false)
      assert.equal(loaded.has('peer/torn'), false)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('journal - compaction keeps only live entries and bounds the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'journal-'))
    try {
      const path = join(dir, 'requests')
      const now = Date.now()
      const j = new RequestJournal(path, log, 4096)
      for (let i = 0; i < 200; i++) j.started(`peer/expired-${i}`, now - 1)
      j.started('peer/live', now + 60_000)
      j.close()
      assert.ok(statSync(path).size < 4096 + 200)
      const loaded = RequestJournal.load(path, now)
      assert.equal(loaded.size, 1)
      assert.ok(loaded.has('peer/live'))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
