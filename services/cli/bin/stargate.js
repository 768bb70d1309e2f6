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
process.exitCode = await main(process.argv.slice(2))
