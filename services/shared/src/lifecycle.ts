import type { Logger } from './log.ts'

/** Something with a start/stop life. */
export interface Stoppable {
  stop(): Promise<void>
}

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

/**
 * The one handler for background failures: an unhandled rejection or uncaught exception from a library
 * callback is logged with its stack and counted, and the process stays up (a gateway or relay must not
 * die because one peer's stream failed in an unexpected way).
 */
export function logBackgroundFailures(log: Logger): { count: () => number } {
  let n = 0
  const report = (kind: string) => (err: unknown) => {
    n++
    log.error(`${kind} (process stays up)`, { err: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err) })
  }
  process.on('unhandledRejection', report('unhandled rejection'))
  process.on('uncaughtException', report('uncaught exception'))
  return { count: () => n }
}
