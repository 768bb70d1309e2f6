import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

const ensured = new Map<string, string>()

/**
 * Absolute path of a pinned external tool (grpcurl, nats-server, helm, protoc-gen-go...).
 * Runs scripts/ensure-tools.sh for that tool once per process: it installs the pinned version
 * when missing and returns at once when it is already there.
 */
export function tool(name: string): string {
  let bin = ensured.get(name)
  if (bin == null) {
    bin = execFileSync('bash', [join(import.meta.dirname, '../../scripts/ensure-tools.sh')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, TOOLS: name },
    })
      .trim()
      .split('\n')
      .at(-1)!
    ensured.set(name, bin)
  }
  return join(bin, name)
}
