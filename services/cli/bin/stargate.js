#!/usr/bin/env node
// Entry point of the `stargate` command. Node >= 22.18 runs the TypeScript sources directly.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `stargate needs Node.js >= 22.18 (found ${process.version}); run it through npm/npx in the repo, which provides Node 24\n`,
  )
  process.exit(2)
}
const { main } = await import('../src/main.ts')
const code = await main(process.argv.slice(2))
// A command that failed exits now: a gateway or relay that failed half-way through starting may hold
// sockets and timers that would keep the process alive.
if (code !== 0) process.exit(code)
