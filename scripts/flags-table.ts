/**
 * Renders the CLI flag tables of the README from the flag definitions (the single source of truth).
 * `node scripts/flags-table.ts --write` rewrites README.md between the FLAGS markers; the README test fails
 * when the README and the code disagree.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GATEWAY_FLAGS } from '@stargate/gateway/cli'
import { RELAY_FLAGS } from '@stargate/relay/cli'
import { envName, type FlagSpec } from '@stargate/shared/options'

export const README = join(import.meta.dirname, '../README.md')

/** A markdown table with left-aligned, padded columns: exactly what the repository's formatter (biome) keeps. */
function table(flags: FlagSpec[]): string {
  const rows = flags.map((f) => [
    `\`--${f.name}\`${f.multiple === true ? ' (repeatable)' : ''}`,
    `\`${envName(f.name)}\``,
    f.defaultText != null ? `\`${f.defaultText}\`` : '',
    f.description.replaceAll('|', '\\|'),
  ])
  const head = ['flag', 'environment', 'default', '']
  const widths = head.map((h, i) => Math.max(3, h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

export function flagSection(name: 'relay' | 'gateway'): string {
  return table(name === 'relay' ? RELAY_FLAGS : GATEWAY_FLAGS)
}

export function renderReadme(text: string): string {
  let out = text
  for (const name of ['relay', 'gateway'] as const) {
    const re = new RegExp(`(<!-- FLAGS:${name} -->)[\\s\\S]*?(<!-- /FLAGS:${name} -->)`)
    // A replacer function: flag descriptions must never be read as `$n` replacement patterns.
    out = out.replace(re, (_all, open: string, close: string) => `${open}\n${flagSection(name)}\n${close}`)
  }
  return out
}

if (process.argv.includes('--write')) {
  writeFileSync(README, renderReadme(readFileSync(README, 'utf8')))
}
