/**
 * Pure helpers of the benchmark: latency histograms (HdrHistogram), bounded measurement loops,
 * ratios and plain-text tables. Unit-tested in test/unit/bench.test.ts.
 */
import hdr from 'hdr-histogram-js'

/** Latency percentiles of one measurement, in milliseconds. */
export interface LatencySummary {
  count: number
  errors: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
  meanMs: number
}

/** Throughput of one measurement at a fixed number of calls in flight. */
export interface ThroughputSummary extends LatencySummary {
  concurrency: number
  durationMs: number
  rps: number
}

/** Recorded values are microseconds; 1 µs .. 120 s with 3 significant digits. */
const HIGHEST_US = 120_000_000

/** Records latencies (ms, fractional) into an HdrHistogram with microsecond resolution. */
export class LatencyRecorder {
  private readonly h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 3 })
  errors = 0

  record(ms: number): void {
    const us = Math.min(HIGHEST_US, Math.max(1, Math.round(ms * 1000)))
    this.h.recordValue(us)
  }

  get count(): number {
    return this.h.totalCount
  }

  /** The value at percentile p (0..100), in ms. */
  percentileMs(p: number): number {
    return this.h.totalCount === 0 ? Number.NaN : this.h.getValueAtPercentile(p) / 1000
  }

  summary(): LatencySummary {
    const empty = this.h.totalCount === 0
    return {
      count: this.h.totalCount,
      errors: this.errors,
      p50Ms: round3(this.percentileMs(50)),
      p90Ms: round3(this.percentileMs(90)),
      p99Ms: round3(this.percentileMs(99)),
      maxMs: empty ? Number.NaN : round3(this.h.maxValue / 1000),
      meanMs: empty ? Number.NaN : round3(this.h.mean / 1000),
    }
  }
}

export function round3(n: number): number {
  return Number.isFinite(n) ? Math.round(n * 1000) / 1000 : n
}

/** a / b rounded to 2 decimals, or null when either side is missing or b is not positive. */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b <= 0) return null
  return Math.round((a / b) * 100) / 100
}

/** Sum of the given figures, or null when any is missing. */
export function sum(...xs: Array<number | null | undefined>): number | null {
  let s = 0
  for (const x of xs) {
    if (x == null || !Number.isFinite(x)) return null
    s += x
  }
  return round3(s)
}

/** Bounds of one measurement loop: it stops at whichever comes first. */
export interface LoopBounds {
  maxCalls: number
  maxMs: number
}

/** Runs fn sequentially (one call at a time) until a bound is hit; records each call's latency. */
export async function measureSequential(fn: () => Promise<unknown>, bounds: LoopBounds): Promise<LatencySummary> {
  const rec = new LatencyRecorder()
  const end = performance.now() + bounds.maxMs
  for (let i = 0; i < bounds.maxCalls && performance.now() < end; i++) {
    const t0 = performance.now()
    try {
      await fn()
      rec.record(performance.now() - t0)
    } catch {
      rec.errors++
      if (rec.errors > 20 && rec.errors > rec.count) break
    }
  }
  return rec.summary()
}

/** Runs fn with `concurrency` calls in flight until a bound is hit; returns calls per second and latencies. */
export async function measureThroughput(fn: () => Promise<unknown>, concurrency: number, bounds: LoopBounds): Promise<ThroughputSummary> {
  const rec = new LatencyRecorder()
  const t0 = performance.now()
  const end = t0 + bounds.maxMs
  let started = 0
  const worker = async (): Promise<void> => {
    while (started < bounds.maxCalls && performance.now() < end) {
      started++
      const s = performance.now()
      try {
        await fn()
        rec.record(performance.now() - s)
      } catch {
        rec.errors++
        if (rec.errors > 50 && rec.errors > rec.count) return
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, () => worker()))
  const durationMs = performance.now() - t0
  const s = rec.summary()
  return { ...s, concurrency, durationMs: round3(durationMs), rps: Math.round((s.count / durationMs) * 1000) }
}

/** Runs fn without recording, to warm up JIT, connections and pools. */
export async function warmup(fn: () => Promise<unknown>, bounds: LoopBounds, concurrency = 1): Promise<void> {
  await measureThroughput(fn, concurrency, bounds)
}

/** Formats a number for a table cell: '-' for missing, fixed decimals below 100. */
export function cell(v: number | string | null | undefined, decimals = 2): string {
  if (v == null) return '-'
  if (typeof v === 'string') return v
  if (!Number.isFinite(v)) return '-'
  if (Math.abs(v) >= 100 || Number.isInteger(v)) return String(Math.round(v))
  return v.toFixed(decimals)
}

/** A plain-text table with a header rule; numeric-looking cells are right-aligned. */
export function formatTable(headers: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const text = rows.map((r) => headers.map((_, i) => cell(r[i])))
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => r[i]!.length)))
  const numeric = /^-?[\d.]+(\s?[%x×]|\s?(ms|s|KB|MB|req\/s))?$|^-$/
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i > 0 && numeric.test(c) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...text.map(line)].join('\n')
}

/** The same table as GitHub markdown, aligned the way the repository's formatter (biome) prints it. */
export function formatMarkdownTable(headers: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const esc = (s: string): string => s.replaceAll('|', '\\|')
  const text = rows.map((r) => headers.map((_, i) => esc(cell(r[i]))))
  const head = headers.map(esc)
  const widths = head.map((h, i) => Math.max(3, h.length, ...text.map((r) => r[i]!.length)))
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`
  const rule = `| ${widths.map((w, i) => (i === 0 ? '-'.repeat(w) : `${'-'.repeat(w - 1)}:`)).join(' | ')} |`
  return [line(head), rule, ...text.map(line)].join('\n')
}

/** Command-line options of bench/run.ts. */
export interface BenchArgs {
  quick: boolean
  only: string[]
}

export function parseBenchArgs(argv: string[]): BenchArgs {
  const out: BenchArgs = { quick: false, only: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--quick') out.quick = true
    else if (a === '--only') out.only.push(...(argv[++i] ?? '').split(',').filter((s) => s !== ''))
    else if (a.startsWith('--only='))
      out.only.push(
        ...a
          .slice(7)
          .split(',')
          .filter((s) => s !== ''),
      )
    else throw new Error(`unknown argument ${a} (use --quick, --only SECTION[,SECTION])`)
  }
  return out
}

/** Resolves with p's value, or rejects after ms (the timer does not keep the process alive). */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms)
        timer.unref()
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}
