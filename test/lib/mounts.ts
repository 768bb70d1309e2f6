/**
 * Small tmpfs mounts for tests that need a full disk or a read-only path (root can write through file
 * permissions, so only a read-only mount stops it). Needs root and mount(8); a test that cannot get a mount
 * says why and is skipped, except under CI=true, where it fails.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'

export class Mounts {
  readonly root = mkdtempSync(join(tmpdir(), 'stargate-mounts-'))
  private readonly mounted: string[] = []

  /** Mounts a tmpfs of `sizeBytes` at root/name; returns its path, or why it cannot. */
  tmpfs(name: string, sizeBytes: number): { path: string } | { reason: string } {
    const path = join(this.root, name)
    mkdirSync(path, { recursive: true })
    if (process.getuid?.() !== 0) return { reason: `mounting a tmpfs needs root (running as uid ${process.getuid?.()})` }
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'tmpfs', path], { encoding: 'utf8' })
    if (r.status !== 0) return { reason: `mount -t tmpfs failed: ${r.error?.message ?? r.stderr.trim()}` }
    this.mounted.push(path)
    return { path }
  }

  /** Remounts a tmpfs made by tmpfs() read-only. */
  readOnly(path: string): void {
    const r = spawnSync('mount', ['-o', 'remount,ro', path], { encoding: 'utf8' })
    assert.equal(r.status, 0, `remount ${path} read-only: ${r.stderr}`)
  }

  /** Unmounts everything (after the processes using it stopped) and removes the directories. */
  close(): void {
    for (const path of this.mounted.splice(0).reverse()) spawnSync('umount', ['-l', path])
    rmSync(this.root, { recursive: true, force: true })
  }
}

/** For a test whose environment cannot be set up: fails under CI=true, else skips it saying why. */
export function cannotRun(t: TestContext, reason: string): void {
  if (process.env.CI === 'true') assert.fail(`cannot run: ${reason}`)
  process.stderr.write(`${t.name}: cannot run here: ${reason}\n`)
  t.skip(reason)
}
