/**
 * A preload for Stargate processes under test (never part of the product): `probeEnv(mode)` gives the
 * environment that loads it. On SIGUSR2 it acts inside the process:
 * - memory: collects garbage and prints `PROBE arrayBuffers=<bytes> external=<bytes>` on stderr;
 * - throw: throws an uncaught exception from a timer callback;
 * - reject: leaves a rejected promise unhandled.
 */
export type ProbeMode = 'memory' | 'throw' | 'reject'

/** Environment for a child process that should load this probe in `mode`. */
export function probeEnv(mode: ProbeMode): NodeJS.ProcessEnv {
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --expose-gc --import=${import.meta.filename}`.trim(),
    STARGATE_TEST_PROBE: mode,
  }
}

const mode = process.env.STARGATE_TEST_PROBE as ProbeMode | undefined
if (mode != null) {
  process.on('SIGUSR2', () => {
    switch (mode) {
      case 'memory': {
        const gc = (globalThis as { gc?: () => void }).gc
        gc?.()
        const m = process.memoryUsage()
        process.stderr.write(`PROBE arrayBuffers=${m.arrayBuffers} external=${m.external}\n`)
        return
      }
      case 'throw':
        setTimeout(() => {
          throw new Error('injected fault (test probe)')
        }, 0)
        return
      case 'reject':
        void Promise.reject(new Error('injected rejection (test probe)'))
        return
    }
  })
}
