import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { UsageError } from '@stargate/shared/options'
import { resolveStatePaths, type WritableCheck } from './state.ts'

const PEER = '12D3KooWExample'

/** A writability check where only the given directories can be written. */
function only(...dirs: string[]): WritableCheck & { checked: string[] } {
  const checked: string[] = []
  const check = (dir: string): void => {
    checked.push(dir)
    if (!dirs.includes(dir)) throw Object.assign(new Error(`EROFS: read-only file system, access '${dir}'`), { code: 'EROFS' })
  }
  return Object.assign(check, { checked })
}

describe('state paths', () => {
  it('state - defaults to the identity directory when it is writable; the journal is named after the peer id', () => {
    const p = resolveStatePaths({ identityFile: '/var/lib/stargate/gateway.key', peerId: PEER }, only('/var/lib/stargate'))
    assert.deepEqual(p, { stateDir: '/var/lib/stargate', requestJournalDir: `/var/lib/stargate/${PEER}.journal` })
  })

  it('state - a read-only identity directory without --state-dir stops start-up with a message naming --state-dir', () => {
    assert.throws(
      () => resolveStatePaths({ identityFile: '/keys/gateway.key', peerId: PEER }, only()),
      (err: unknown) =>
        err instanceof UsageError && /\/keys is not writable \(EROFS.*\): pass --state-dir DIR .*--request-journal off/.test(err.message),
    )
  })

  it('state - --state-dir holds the journal when the identity is read-only; a bad --state-dir is named', () => {
    const p = resolveStatePaths({ identityFile: '/keys/gateway.key', stateDir: '/data', peerId: PEER }, only('/data'))
    assert.deepEqual(p, { stateDir: '/data', requestJournalDir: `/data/${PEER}.journal` })
    assert.throws(
      () => resolveStatePaths({ identityFile: '/keys/gateway.key', stateDir: '/nope', peerId: PEER }, only()),
      (err: unknown) => err instanceof UsageError && /^--state-dir \/nope is not a writable directory: EROFS/.test(err.message),
    )
  })

  it('state - --request-journal moves the journal or turns it off; then nothing needs the identity directory', () => {
    const check = only()
    assert.deepEqual(resolveStatePaths({ identityFile: '/keys/k', requestJournal: 'off', peerId: PEER }, check), { stateDir: undefined })
    assert.deepEqual(resolveStatePaths({ identityFile: '/keys/k', requestJournal: '/j', peerId: PEER }, check), {
      stateDir: undefined,
      requestJournalDir: '/j',
    })
    assert.deepEqual(check.checked, [])
  })
})
