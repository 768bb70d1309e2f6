import type { Logger } from './log.ts'

/**
 * Runs `stop` once on the first SIGTERM/SIGINT, then exits 0 (1 if stopping failed).
 * A second signal exits at once.
 */
export function stopOnSignals(stop: () => Promise<void>, log: Logger): void {
  let stopping = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn('second signal, exiting now', { signal })
      process.exit(130)
    }
    stopping = true
    log.info('shutting down', { signal })
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { err })
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
}

/** Exit code after an uncaught exception or unhandled rejection (EX_SOFTWARE: an internal software error). */
export const FAULT_EXIT_CODE = 70

/** The parts of `process` the fault handler uses (a test passes its own). */
export interface FaultTarget {
  on(event: 'uncaughtException' | 'unhandledRejection', listener: (err: unknown) => void): unknown
  exit(code: number): void
}

/**
 * The one handler for process faults: after an uncaught exception or an unhandled rejection the state of
 * the process is unknown, so it logs the error with its stack and exits with FAULT_EXIT_CODE at once, and
 * its supervisor restarts it. Nothing is lost that the gateway promised to keep: requests handed to
 * handlers are in the request journal, written before the handler saw them, and a restarted gateway
 * answers their retries from it (ABORTED when they had not finished), never running one twice.
 */
export function exitOnProcessFaults(log: Logger, target: FaultTarget = process): void {
  let faulted = false
  const fault = (kind: string) => (err: unknown) => {
    if (faulted) return
    faulted = true
    log.error(`${kind}: exiting with code ${FAULT_EXIT_CODE}`, {
      err: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err),
    })
    target.exit(FAULT_EXIT_CODE)
  }
  target.on('uncaughtException', fault('uncaught exception'))
  target.on('unhandledRejection', fault('unhandled rejection'))
}
