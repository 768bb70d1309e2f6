/**
 * Renders the values table of the chart README (helm/stargate/README.md) from values.schema.json (types and
 * descriptions) and values.yaml (defaults). `node scripts/chart-readme.ts --write` rewrites the README between
 * the VALUES markers; test/deploy/helm.test.ts fails when README, schema and values disagree.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'

export const CHART = join(import.meta.dirname, '../helm/stargate')
export const CHART_README = join(CHART, 'README.md')

/** The parts of a JSON schema node the table reads. */
export interface SchemaNode {
  type?: string | string[]
  enum?: unknown[]
  oneOf?: SchemaNode[]
  description?: string
  properties?: Record<string, SchemaNode>
  items?: SchemaNode
}

export interface ValueRow {
  key: string
  type: string
  default: unknown
  description: string
}

function typeOf(node: SchemaNode): string {
  if (node.enum != null) return node.enum.map((v) => JSON.stringify(v)).join(' \\| ')
  if (node.oneOf != null) return node.oneOf.map(typeOf).join(' \\| ')
  if (Array.isArray(node.type)) return node.type.join(' \\| ')
  return node.type ?? 'any'
}

/**
 * One row per value: objects whose default in values.yaml has keys are opened up (relay.service.type, ...);
 * maps and free-form objects (config, resources given as a whole, podSecurityContext) are one row each.
 */
export function valueRows(schema: SchemaNode, values: Record<string, unknown>, prefix = ''): ValueRow[] {
  const rows: ValueRow[] = []
  for (const [name, node] of Object.entries(schema.properties ?? {})) {
    const key = `${prefix}${name}`
    const value = values[name]
    const open =
      node.properties != null && value != null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0
    if (open && !key.endsWith('Context') && !key.endsWith('.resources')) {
      rows.push(...valueRows(node, value as Record<string, unknown>, `${key}.`))
    } else {
      rows.push({ key, type: typeOf(node), default: value, description: node.description ?? '' })
    }
  }
  return rows
}

export function readChart(): { schema: SchemaNode; values: Record<string, unknown> } {
  return {
    schema: JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as SchemaNode,
    values: parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>,
  }
}

function table(rows: ValueRow[]): string {
  const cells = rows.map((r) => [
    `\`${r.key}\``,
    r.type,
    r.default === undefined ? '' : `\`${JSON.stringify(r.default)}\``.replaceAll('|', '\\|'),
    r.description.replaceAll('|', '\\|'),
  ])
  const head = ['value', 'type', 'default', '']
  const widths = head.map((h, i) => Math.max(3, h.length, ...cells.map((r) => r[i]!.length)))
  const line = (c: string[]): string => `| ${c.map((x, i) => x.padEnd(widths[i]!)).join(' | ')} |`
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n')
}

export function renderChartReadme(text: string): string {
  const { schema, values } = readChart()
  return text.replace(
    /(<!-- VALUES -->)[\s\S]*?(<!-- \/VALUES -->)/,
    (_all, open: string, close: string) => `${open}\n${table(valueRows(schema, values))}\n${close}`,
  )
}

if (process.argv.includes('--write')) {
  writeFileSync(CHART_README, renderChartReadme(readFileSync(CHART_README, 'utf8')))
}
