import { context, isSpanContextValid, trace } from '@opentelemetry/api'

/** Log levels in increasing severity. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 }

/**
 * The trace and span of the active OpenTelemetry span, if any. Without a started SDK the API's context is the
 * no-op root context, so this is one lookup that finds nothing; a non-recording span that only carries a remote
 * context (sampled out) still names its trace.
 */
function activeSpanIds(): { trace_id: string; span_id: string } | undefined {
  const sc = trace.getSpanContext(context.active())
  return sc != null && isSpanContextValid(sc) ? { trace_id: sc.traceId, span_id: sc.spanId } : undefined
}

/**
 * A namespaced logger writing JSON lines to stderr. A line written while an OpenTelemetry span is active
 * carries its `trace_id` and `span_id` (lowercase hex, as in W3C traceparent and OTLP), so logs and traces join.
 */
export interface Logger {
  readonly namespace: string
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
  child(suffix: string): Logger
}

export interface LoggerOptions {
  level?: LogLevel
  write?: (line: string) => void
}

function serialise(value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message }
  if (typeof value === 'bigint') return value.toString()
  return value
}

/** Creates a logger; the level comes from the option, else STARGATE_LOG_LEVEL, else info. */
export function createLogger(namespace: string, options: LoggerOptions = {}): Logger {
  const envLevel = process.env.STARGATE_LOG_LEVEL as LogLevel | undefined
  const level = options.level ?? (envLevel != null && envLevel in LEVELS ? envLevel : 'info')
  const threshold = LEVELS[level]
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`))
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (LEVELS[lvl] < threshold) return
    const record: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, ns: namespace, msg }
    const ids = activeSpanIds()
    if (ids != null) {
      record.trace_id = ids.trace_id
      record.span_id = ids.span_id
    }
    if (fields != null) for (const [k, v] of Object.entries(fields)) record[k] = serialise(v)
    write(JSON.stringify(record))
  }
  return {
    namespace,
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (suffix) => createLogger(`${namespace}:${suffix}`, { level, write }),
  }
}

/** Defaults of RateLimitedLog. */
export const RATE_LIMITED_LOG_DEFAULTS = {
  /** Length of one rate-limiting window. */
  intervalMs: 10_000,
  /** Lines of one kind written per window; the rest are counted. */
  burst: 5,
} as const

/**
 * Warnings about things a remote party controls (garbage, forgeries, replays): at most `burst` lines per
 * kind per window, the rest counted and reported (`suppressed`) on the next line of that kind, so a flood
 * of bad messages cannot flood the log.
 */
export class RateLimitedLog {
  private readonly log: Logger
  private readonly intervalMs: number
  private readonly burst: number
  private readonly now: () => number
  private readonly kinds = new Map<string, { windowStartAtMs: number; written: number; suppressed: number }>()
  private suppressedTotal = 0

  constructor(log: Logger, options: { intervalMs?: number; burst?: number; now?: () => number } = {}) {
    this.log = log
    this.intervalMs = options.intervalMs ?? RATE_LIMITED_LOG_DEFAULTS.intervalMs
    this.burst = options.burst ?? RATE_LIMITED_LOG_DEFAULTS.burst
    this.now = options.now ?? Date.now
  }

  /** Lines not written so far. */
  get suppressed(): number {
    return this.suppressedTotal
  }

  /** Writes a warning of kind `msg` unless this kind used its burst in the current window. */
  warn(msg: string, fields: Record<string, unknown> = {}): void {
    const nowMs = this.now()
    let k = this.kinds.get(msg)
    if (k == null) {
      k = { windowStartAtMs: nowMs, written: 0, suppressed: 0 }
      this.kinds.set(msg, k)
    } else if (nowMs - k.windowStartAtMs >= this.intervalMs) {
      k.windowStartAtMs = nowMs
      k.written = 0
    }
    if (k.written >= this.burst) {
      k.suppressed++
      this.suppressedTotal++
      return
    }
    k.written++
    if (k.suppressed > 0) {
      this.log.warn(msg, { ...fields, suppressed: k.suppressed })
      k.suppressed = 0
    } else this.log.warn(msg, fields)
  }
}
