/**
 * Memory figures of another process: its resident set size, and its live JavaScript heap measured from a V8
 * heap snapshot (the process must run with NODE_OPTIONS=--heapsnapshot-signal=SIGUSR2; it writes the
 * snapshot into its working directory). RSS keeps the pages V8 grew into; the live heap is what is held.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { eventually } from './eventually.ts'

/** Resident set size of a process, from /proc. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m != null ? Number(m[1]) / 1024 : 0
}

/**
 * Live heap (MB) of a process started with --heapsnapshot-signal=SIGUSR2 in `dir`. `answered` is an RPC to
 * it: the snapshot is written on its main thread, so once it answers, the file is complete.
 */
export async function liveHeapMB(pid: number, dir: string, answered: () => Promise<unknown>): Promise<number> {
  const snapshots = (): string[] => readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot'))
  const before = new Set(snapshots())
  process.kill(pid, 'SIGUSR2')
  const file = await eventually('the process wrote a heap snapshot', () => snapshots().find((f) => !before.has(f)), {
    timeoutMs: 60_000,
    intervalMs: 100,
  })
  await answered()
  const path = join(dir, file)
  const snap = JSON.parse(readFileSync(path, 'utf8')) as { snapshot: { meta: { node_fields: string[] } }; nodes: number[] }
  rmSync(path)
  const fields = snap.snapshot.meta.node_fields
  const at = fields.indexOf('self_size')
  let bytes = 0
  for (let i = at; i < snap.nodes.length; i += fields.length) bytes += snap.nodes[i]!
  return bytes / 1e6
}
