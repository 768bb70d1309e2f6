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

function table(flags: FlagSpec[]): string {
  const rows = flags.map((f) => {
    const flag = `\`--${f.name}\`${f.multiple === true ? ' (repeatable)' : ''}`
    return `| ${flag} | \`${envName(f.name)}\` | ${f.defaultText != null ? `\`${f.defaultText}\`` : ''} | ${f.description} |`
  })
  return ['| flag | environment | default | |', '| --- | --- | --- | --- |', ...rows].join('\n')
}

export function flagSection(name: 'relay' | 'gateway'): string {
  return table(name === 'relay' ? RELAY_FLAGS : GATEWAY_FLAGS)
}

export function renderReadme(text: string): string {
  let out = text
  for (const name of ['relay', 'gateway'] as const) {
    const re = new RegExp(`(<!-- FLAGS:${name} -->\\n)[\\s\\S]*?(\\n<!-- /FLAGS:${name} -->)`)
    out = out.replace(re, `$1${flagSection(name)}$2`)
  }
  return out
}

if (process.argv.includes('--write')) {
  writeFileSync(README, renderReadme(readFileSync(README, 'utf8')))
}
