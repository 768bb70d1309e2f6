import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { describe, it } from 'node:test'
import { assertTestbedAddress, NETNS_PREFIX, netnsUnsupported, sweepStaleNamespaces, Testbed } from '../netns/testbed.ts'

const unsupported = netnsUnsupported()

describe('netns testbed', () => {
  it('testbed - refuses addresses outside 198.18.0.0/15 and 100.64.0.0/10', () => {
    for (const ok of ['198.18.0.1', '198.19.255.254', '100.64.0.1', '100.127.255.254']) assertTestbedAddress(ok)
    for (const bad of ['198.20.0.1', '198.17.255.255', '100.128.0.1', '10.0.0.1', '192.168.1.1', '8.8.8.8', '127.0.0.1', 'x']) {
      assert.throws(() => assertTestbedAddress(bad), /outside/, bad)
    }
  })

  it('testbed - close removes every namespace and stops every process', { skip: unsupported ?? false, timeout: 60_000 }, async () => {
    const tb = await Testbed.create()
    let names: string[] = []
    try {
      const h = await tb.host('pub', 'public')
      const n = await tb.host('nat', 'nat')
      names = tb.namespaceNames
      assert.equal(names.length, 4) // inet, pub, nat, nat's router
      for (const ns of names) assert.ok(ns.startsWith(`${tb.id}-`), ns)
      // NATed host reaches the public host through its router, and the public host sees the router's address.
      const listener = tb.spawn(h, [
        process.execPath,
        '-e',
        `require('node:net').createServer((s) => { console.log('from ' + s.remoteAddress); s.end() }).listen(7000, '${h.ip}', () => console.log('listening'))`,
      ])
      await listener.waitFor(/^listening$/)
      assert.equal(await tb.tcpProbe(n, h.ip, 7000, 5_000), 'connected')
      await listener.waitFor(new RegExp(`^from ${n.publicIp.replaceAll('.', '\\.')}$`))
      // dropBetween cuts the path silently, and its restore function brings it back.
      const restore = await tb.dropBetween(n, h)
      assert.equal(await tb.tcpProbe(n, h.ip, 7000, 1_000), 'timeout')
      await restore()
      assert.equal(await tb.tcpProbe(n, h.ip, 7000, 5_000), 'connected')
      // nats-server runs inside a namespace too and is reachable from behind the NAT.
      const nats = await tb.nats(h)
      assert.equal(nats.url, `nats://${h.ip}:4222`)
      assert.equal(await tb.tcpProbe(n, h.ip, 4222, 5_000), 'connected')
      const addr = await tb.exec(n, ['ip', '-4', '-o', 'addr', 'show', 'eth0'])
      assert.match(addr.stdout, /inet 100\.64\.\d+\.2\/24/)
    } finally {
      await tb.close()
    }
    const listed = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    for (const ns of names) {
      assert.ok(!listed.includes(ns), `${ns} still exists`)
      assert.ok(!existsSync(`/run/netns/${ns}`))
    }
    assert.ok(tb.procs.every((p) => !p.running))
  })

  it('testbed - SIGINT to the test process removes its namespaces', { skip: unsupported ?? false, timeout: 60_000 }, async () => {
    const script = `import { Testbed } from ${JSON.stringify(join(import.meta.dirname, '../netns/testbed.ts'))}
const tb = await Testbed.create()
await tb.host('a', 'symmetric')
console.log(JSON.stringify(tb.namespaceNames))
setInterval(() => {}, 1000)`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string]
    const names = JSON.parse(line) as string[]
    assert.equal(names.length, 3)
    for (const ns of names) assert.ok(existsSync(`/run/netns/${ns}`), ns)
    const exited = once(child, 'exit')
    child.kill('SIGINT')
    const [code] = (await exited) as [number | null]
    assert.equal(code, 130)
    for (const ns of names) assert.ok(!existsSync(`/run/netns/${ns}`), `${ns} still exists`)
  })

  it('testbed - the sweep removes namespaces of dead runs only', { skip: unsupported ?? false }, () => {
    // Above the largest possible pid_max (2^22), so never a live process.
    const dead = `${NETNS_PREFIX}-4194305-dead00-x`
    const alive = `${NETNS_PREFIX}-${process.ppid}-live00-x`
    execFileSync('ip', ['netns', 'add', dead])
    execFileSync('ip', ['netns', 'add', alive])
    try {
      const swept = sweepStaleNamespaces(new Date(Date.now() + 60_000))
      assert.ok(swept.includes(dead))
      assert.ok(!swept.includes(alive))
      assert.ok(!existsSync(`/run/netns/${dead}`))
      assert.ok(existsSync(`/run/netns/${alive}`))
      // Namespaces created after the run started are left alone even when their owner is gone.
      execFileSync('ip', ['netns', 'add', dead])
      assert.deepEqual(sweepStaleNamespaces(new Date(Date.now() - 60_000)), [])
    } finally {
      for (const ns of [dead, alive]) {
        try {
          execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
        } catch {
          // already gone
        }
      }
    }
  })
})
