import { parseArgs } from 'node:util'

/** A CLI flag, also settable by a STARGATE_* environment variable. */
export interface FlagSpec {
  /** Long flag name without dashes, e.g. "max-connections". */
  name: string
  type: 'string' | 'boolean'
  multiple?: boolean
  /** Text shown by --help. */
  description: string
  /** Default shown by --help (the real default lives in the service DEFAULTS). */
  defaultText?: string
  short?: string
}

/** A usage error: the CLI prints it with a hint and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError'
}

/** The environment variable for a flag: --max-connections → STARGATE_MAX_CONNECTIONS. */
export function envName(flag: string): string {
  return `STARGATE_${flag.toUpperCase().replaceAll('-', '_')}`
}

export type ParsedFlags = Record<string, string | boolean | string[] | undefined>

/**
 * Parses argv strictly. Precedence: flag > environment variable > (caller's) default.
 * Repeatable flags read a comma-separated environment variable.
 */
export function parseFlags(specs: FlagSpec[], argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedFlags {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {}
  for (const s of specs) {
    options[s.name] = { type: s.type, ...(s.multiple === true ? { multiple: true } : {}), ...(s.short != null ? { short: s.short } : {}) }
  }
  let values: Record<string, unknown>
  try {
    ;({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }))
  } catch (err: unknown) {
    throw new UsageError(err instanceof Error ? err.message.replace(/\. To specify.*$/s, '') : String(err))
  }
  const out: ParsedFlags = {}
  for (const s of specs) {
    const v = values[s.name]
    if (v !== undefined) {
      out[s.name] = v as string | boolean | string[]
      continue
    }
    const e = env[envName(s.name)]
    if (e === undefined || e === '') continue
    if (s.type === 'boolean') {
      if (!/^(1|0|true|false|yes|no)$/i.test(e)) throw new UsageError(`${envName(s.name)}=${e} is not a boolean`)
      out[s.name] = /^(1|true|yes)$/i.test(e)
    } else if (s.multiple === true) {
      out[s.name] = e
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== '')
    } else {
      out[s.name] = e
    }
  }
  return out
}

/** Reads an optional string flag. */
export function str(flags: ParsedFlags, name: string): string | undefined {
  const v = flags[name]
  return typeof v === 'string' ? v : undefined
}

/** Reads a repeatable string flag. */
export function list(flags: ParsedFlags, name: string): string[] {
  const v = flags[name]
  if (Array.isArray(v)) return v
  return typeof v === 'string' ? [v] : []
}

/** Reads a boolean flag. */
export function bool(flags: ParsedFlags, name: string): boolean | undefined {
  const v = flags[name]
  return typeof v === 'boolean' ? v : undefined
}

/** Reads an integer flag within bounds, naming the flag when invalid. */
export function int(flags: ParsedFlags, name: string, min: number, max: number = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = str(flags, name)
  if (v === undefined) return undefined
  if (!/^-?\d+$/.test(v)) throw new UsageError(`--${name} must be an integer, got "${v}"`)
  const n = Number(v)
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`)
  return n
}

/** Reads a number flag (floats allowed) within bounds. */
export function num(flags: ParsedFlags, name: string, min: number, max: number = Number.MAX_VALUE): number | undefined {
  const v = str(flags, name)
  if (v === undefined) return undefined
  const n = Number(v)
  if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${v}"`)
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`)
  return n
}

/** Parses HOST:PORT (IPv6 hosts in brackets). */
export function hostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value)
  if (m == null) throw new UsageError(`--${flag} must be HOST:PORT, got "${value}"`)
  const port = Number(m[3])
  if (port > 65535) throw new UsageError(`--${flag} port must be at most 65535, got ${port}`)
  return { host: m[1] ?? m[2] ?? '', port }
}

/** Formats --help text for a command. */
export function helpText(command: string, summary: string, specs: FlagSpec[]): string {
  const lines = [`Usage: stargate ${command} [flags]`, '', summary, '', 'Flags:']
  for (const s of specs) {
    const flag = `--${s.name}${s.type === 'string' ? ' VALUE' : ''}`
    const extra = [s.multiple === true ? 'repeatable' : '', s.defaultText != null ? `default ${s.defaultText}` : '']
      .filter((x) => x !== '')
      .join('; ')
    lines.push(`  ${flag.padEnd(34)} ${s.description}${extra !== '' ? ` (${extra})` : ''}`)
    lines.push(`  ${''.padEnd(34)} env ${envName(s.name)}`)
  }
  lines.push('  --help                             show this help')
  return lines.join('\n')
}
