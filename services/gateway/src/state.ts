import { accessSync, constants, mkdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { messageOf } from '@stargate/shared/errors'
import { UsageError } from '@stargate/shared/options'
import { GATEWAY_DEFAULTS as D } from './defaults.ts'

/** Where a gateway writes (everything it writes lives in its state directory, unless a flag moves it). */
export interface StatePaths {
  /** The state directory, when the gateway writes anything. */
  stateDir?: string
  /** The request journal's directory; undefined when the journal is off. */
  requestJournalDir?: string
}

export interface StateFlags {
  identityFile: string
  /** --state-dir */
  stateDir?: string
  /** --request-journal: a directory, or D.requestJournalOff */
  requestJournal?: string
  peerId: string
}

/** Throws when `dir` cannot be written (created first when `create`). */
export type WritableCheck = (dir: string, create: boolean) => void

const checkWritable: WritableCheck = (dir, create) => {
  if (create) mkdirSync(dir, { recursive: true, mode: 0o700 })
  accessSync(dir, constants.W_OK)
}

/**
 * Resolves the state directory and the request journal. The state directory is --state-dir, else the
 * identity file's directory when that is writable (the identity itself is only read); when it is not, the
 * gateway does not start and says to pass --state-dir. The journal defaults to `<state dir>/<peer id>.journal`
 * (one per identity, so gateways may share a directory); --request-journal off turns it off.
 */
export function resolveStatePaths(flags: StateFlags, writable: WritableCheck = checkWritable): StatePaths {
  const journalOff = flags.requestJournal === D.requestJournalOff
  let stateDir: string | undefined
  if (flags.stateDir != null) {
    stateDir = resolve(flags.stateDir)
    try {
      writable(stateDir, true)
    } catch (err: unknown) {
      throw new UsageError(`--state-dir ${stateDir} is not a writable directory: ${messageOf(err)}`)
    }
  } else if (!journalOff && flags.requestJournal == null) {
    stateDir = resolve(dirname(flags.identityFile))
    try {
      writable(stateDir, false)
    } catch (err: unknown) {
      throw new UsageError(
        `the gateway needs a writable state directory for its request journal, and the identity file's directory ${stateDir} is not writable (${messageOf(err)}): pass --state-dir DIR (STARGATE_STATE_DIR), or --request-journal ${D.requestJournalOff} to run without a journal`,
      )
    }
  }
  if (journalOff) return { stateDir }
  if (flags.requestJournal != null) return { stateDir, requestJournalDir: resolve(flags.requestJournal) }
  return { stateDir, requestJournalDir: join(stateDir!, `${flags.peerId}${D.requestJournalSuffix}`) }
}
