#!/usr/bin/env node
// Entry point of the `stargate` command. Node >= 22.18 runs the TypeScript sources directly.
import module from 'node:module'

const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `stargate needs Node.js >= 22.18 (found ${process.version}); run it through npm/npx in the repo, which provides Node 24\n`,
  )
  process.exit(2)
}

// V8 settings of the long-running commands, chosen by measurement (BENCHMARKS.md, "Memory"). V8 sizes the young
// generation from the machine's memory (on a 24 GiB host its semi-spaces grow to tens of MiB) and keeps it
// grown: most of a gateway's RSS beyond its live objects, and most of the RSS per pooled peer and per relay
// reservation. 8 MiB semi-spaces cost no CPU per call measurable on a shared machine (bench/ab.ts). A flag the
// operator gives (node command line or NODE_OPTIONS) wins. V8 reads these flags only at start, so the launcher
// replaces itself with `node <flags> <this script>` (same pid, same environment) where process.execve exists.
const V8_FLAGS = ['--max-semi-space-size=8']
const SERVERS = new Set(['gateway', 'relay'])
// V8 reads `--max_semi_space_size` as `--max-semi-space-size`
const given = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`.replaceAll('_', '-')
const missing = V8_FLAGS.filter((f) => !given.includes(f.slice(0, f.indexOf('='))))
if (SERVERS.has(process.argv[2] ?? '') && missing.length > 0 && typeof process.execve === 'function') {
  try {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...missing, ...process.argv.slice(1)], process.env)
  } catch {
    // Not allowed here (e.g. under the permission model): run with V8's defaults.
  }
}

// Compiled code and stripped TypeScript are cached on disk (NODE_COMPILE_CACHE, else <os temp dir>/node-compile-cache):
// a start with a warm cache leaves about 15 MB less RSS in a gateway or relay (measured; most likely the TypeScript
// stripper's WebAssembly memory, not needed then). Where no cache directory can be made (read-only, not a
// directory) it is silently off.
module.enableCompileCache?.()

const { main } = await import('../src/main.ts')
const code = await main(process.argv.slice(2))
// A command that failed exits now: a gateway or relay that failed half-way through starting may hold
// sockets and timers that would keep the process alive.
if (code !== 0) process.exit(code)
