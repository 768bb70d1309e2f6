import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { describe, it } from 'node:test'

const ROOT = join(import.meta.dirname, '../..')
const SERVICES = join(ROOT, 'services')

/** Every TypeScript source under services/ (tests and generated code excluded). */
function sources(dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) {
      if (e.name !== 'node_modules' && e.name !== 'gen') out.push(...sources(p))
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) out.push(p)
  }
  return out
}

/** Maps `@stargate/<pkg>/<export>` to its file through the workspace packages' exports. */
function workspaceExports(): Map<string, string> {
  const map = new Map<string, string>()
  for (const pkg of readdirSync(SERVICES)) {
    const dir = join(SERVICES, pkg)
    let manifest: { name?: string; exports?: Record<string, string> }
    try {
      manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    } catch {
      continue
    }
    for (const [key, target] of Object.entries(manifest.exports ?? {})) {
      map.set(key === '.' ? manifest.name! : `${manifest.name}/${key.slice(2)}`, resolve(dir, target))
    }
  }
  return map
}

/** The import graph (type-only imports included: a cycle of types is still a cycle of modules). */
function graph(): Map<string, string[]> {
  const exportsMap = workspaceExports()
  const edges = new Map<string, string[]>()
  for (const file of sources(SERVICES)) {
    const text = readFileSync(file, 'utf8')
    const targets: string[] = []
    for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]/g)) {
      const spec = m[1]!
      if (spec.startsWith('.')) targets.push(resolve(dirname(file), spec))
      else if (exportsMap.has(spec)) targets.push(exportsMap.get(spec)!)
    }
    edges.set(
      file,
      targets.filter((t) => t.endsWith('.ts')),
    )
  }
  return edges
}

function cycles(edges: Map<string, string[]>): string[][] {
  const found: string[][] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const stack: string[] = []
  const visit = (n: string): void => {
    state.set(n, 'visiting')
    stack.push(n)
    for (const m of edges.get(n) ?? []) {
      if (state.get(m) === 'visiting') found.push([...stack.slice(stack.indexOf(m)), m])
      else if (state.get(m) == null) visit(m)
    }
    stack.pop()
    state.set(n, 'done')
  }
  for (const n of edges.keys()) if (state.get(n) == null) visit(n)
  return found
}

describe('module structure', () => {
  it('imports - no import cycle in services/ (type-only imports count)', () => {
    const edges = graph()
    assert.ok(edges.size > 50, `found the sources (${edges.size})`)
    const found = cycles(edges).map((c) => c.map((f) => relative(ROOT, f)).join(' → '))
    assert.deepEqual(found, [])
  })

  it('imports - the checker sees a cycle when there is one', () => {
    const a = join(SERVICES, 'a.ts')
    const b = join(SERVICES, 'b.ts')
    assert.equal(
      cycles(
        new Map([
          [a, [b]],
          [b, [a]],
        ]),
      ).length,
      1,
    )
  })
})
