/**
 * Never twice under attack, bounded state and process faults, with real gateways, a real Serve client and
 * real libp2p peers in the test process (issue 13 items 2, 3, 5 and 8).
 */
import assert from 'node:assert/strict'
import { closeSync, existsSync, openSync, readdirSync, rmSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { FAULT_EXIT_CODE } from '@stargate/shared/lifecycle'
import { freePort, type GatewayHandle, Harness, type Proc } from '../lib/harness.ts'
import { cannotRun, Mounts } from '../lib/mounts.ts'
import { probeEnv } from '../lib/probe.ts'
import { outcomes, RawPeer, type RequestInit } from '../lib/raw-peer.ts'

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })

/** Runs of a request id in a Serve client (it prints "HANDLED <method> <request id> <tier>" per run). */
function runs(serve: Proc | Proc[], requestId: string): number {
  return [serve].flat().reduce((n, p) => n + p.stdout.filter((l) => l.split(' ')[2] === requestId).length, 0)
}

function loopback(g: GatewayHandle): string {
  const a = g.multiaddrs.find((x) => x.includes('/127.0.0.1/'))
  assert.ok(a != null, `a loopback multiaddr of ${g.peerId}`)
  return a
}

/** The outcome of an API call: "OK" or the gRPC code name, and the message. */
async function outcome(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p
    return { code: 'OK', message: '' }
  } catch (err: unknown) {
    const e = ConnectError.from(err)
    return { code: Code[e.code] ?? String(e.code), message: e.rawMessage }
  }
}

function dirBytes(dir: string): number {
  if (!existsSync(dir)) return 0
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0)
}

/** The exit code of a process expected to exit soon (fails instead of hanging when it stays up). */
async function exitCode(proc: Proc, timeoutMs = 60_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${proc.name} still running after ${timeoutMs} ms\n${proc.dump()}`)), timeoutMs)
  })
  try {
    return await Promise.race([proc.exited, timeout])
  } finally {
    clearTimeout(timer)
  }
}

describe('state: never twice under attack, bounded journal, process faults', () => {
  const h = new Harness()
  const mounts = new Mounts()
  const peers: RawPeer[] = []
  const rawPeer = async (): Promise<RawPeer> => {
    const p = await RawPeer.create()
    peers.push(p)
    return p
  }

  before(async () => {
    await h.tmp()
  })
  after(async () => {
    await Promise.all(peers.map((p) => p.stop()))
    await h.close()
    mounts.close()
  })

  it('dedupe - 200 000 unique pings from fresh identities, then a flood that fills the memory: a retried request still ran once', async () => {
    const b = await h.gateway(
      ['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--dedupe-max-entries', '2000', '--dedupe-caller-max-entries', '500'],
      {
        name: 'target',
      },
    )
    const serve = await h.serveClient(b.api, ['echo'])
    const a = await h.gateway(['--peer', `${b.peerId}=${loopback(b)}`], { name: 'caller' })
    const key = `kept-${Date.now()}`
    const first = await a.client.call({ peerId: b.peerId, method: 'echo', payload: json({ n: 1 }), idempotencyKey: key })
    assert.equal(runs(serve, key), 1)

    // 8 fresh identities x 25 000 pings, pipelined (at most 200 unanswered each) on /stargate/call/1.0.0
    const t0 = Date.now()
    const identities = await Promise.all(Array.from({ length: 8 }, rawPeer))
    const pings = await Promise.all(
      identities.map(async (p, i) => {
        const s = await p.open(loopback(b))
        const reqs: RequestInit[] = Array.from({ length: 25_000 }, (_, n) => ({ requestId: `ping-${i}-${n}`, method: 'ping' }))
        return outcomes(await s.callMany(reqs, 200))
      }),
    )
    const pingMs = Date.now() - t0
    for (const o of pings) assert.deepEqual([...o.counts], [['ok', 25_000]], JSON.stringify([...o.messages]))
    process.stderr.write(`200 000 pings from 8 identities answered in ${pingMs} ms\n`)

    // fresh identities flood echo with unique ids: one alone reaches its cap of 500, then four more fill the
    // memory (2000, the first call holds one); every later request is refused, never one forgotten
    const flood = async (i: number) => {
      const s = await (await rawPeer()).open(loopback(b))
      const reqs: RequestInit[] = Array.from({ length: 600 }, (_, n) => ({ requestId: `flood-${i}-${n}`, method: 'echo' }))
      return outcomes(await s.callMany(reqs, 100))
    }
    const floods = [await flood(0), ...(await Promise.all([1, 2, 3, 4].map(flood)))]
    assert.deepEqual(floods[0]!.counts.get('ok'), 500)
    const ok = floods.reduce((n, o) => n + (o.counts.get('ok') ?? 0), 0)
    const refused = floods.reduce((n, o) => n + (o.counts.get(String(Code.ResourceExhausted)) ?? 0), 0)
    assert.equal(ok + refused, 3000, JSON.stringify(floods.map((o) => [...o.counts])))
    assert.equal(ok, 1999, 'the memory took 2000 entries and refused the rest')
    const messages = floods.flatMap((o) => [...o.messages.values()]).join('\n')
    assert.match(messages, /limit --dedupe-caller-max-entries 500/)
    assert.match(messages, /limit --dedupe-max-entries 2000/)

    const retry = await a.client.call({ peerId: b.peerId, method: 'echo', payload: json({ n: 1 }), idempotencyKey: key })
    assert.deepEqual(retry.payload, first.payload)
    assert.equal(runs(serve, key), 1, 'the handler ran once')
    assert.equal(runs(serve, 'flood-0-599'), 0, 'a refused request did not run')
    assert.equal((await b.client.getStatus({})).peerId, b.peerId)
  })

  it('state - a read-only identity starts with --state-dir elsewhere; without a writable default it stops naming --state-dir', async (t) => {
    const ro = mounts.tmpfs('ro-keys', 1 << 20)
    if ('reason' in ro) return cannotRun(t, ro.reason)
    const identity = join(ro.path, 'gateway.key')
    const keygen = await h.spawnCli('keygen', ['keygen', '--out', identity])
    assert.equal(await exitCode(keygen), 0)
    mounts.readOnly(ro.path)

    const refused = await h.spawnCli('gateway-no-state', ['gateway', '--listen', '127.0.0.1:0', '--identity', identity])
    assert.equal(await exitCode(refused), 2)
    assert.match(
      refused.stderr.join('\n'),
      /identity file's directory .*ro-keys is not writable \(.*read-only file system.*\): pass --state-dir DIR/,
    )

    const stateDir = join(await h.tmp(), 'state-of-ro-gateway')
    const args = ['gateway', '--listen', '127.0.0.1:0', '--identity', identity, '--state-dir', stateDir]
    const badJournal = await h.spawnCli('gateway-ro-journal', [...args, '--request-journal', join(ro.path, 'journal')])
    assert.equal(await exitCode(badJournal), 1)
    assert.match(
      badJournal.stderr.join('\n'),
      /cannot use the request journal directory .*ro-keys\/journal \(set it with --request-journal or --state-dir/,
    )

    const g = await h.gateway(['--state-dir', stateDir], { identity, name: 'gateway-ro-identity' })
    const serve = await h.serveClient(g.api, ['echo'])
    const res = await g.client.call({ peerId: g.peerId, method: 'echo', payload: json('x'), idempotencyKey: 'ro-1' })
    assert.equal(res.requestId, 'ro-1')
    assert.equal(runs(serve, 'ro-1'), 1)
    const journal = join(stateDir, `${g.peerId}.journal`)
    assert.ok(dirBytes(journal) > 0, `the journal is written in ${journal}`)
  })

  it('journal - stays within --request-journal-max-bytes under a flood of long method names and ids', async () => {
    const maxBytes = 64 * 1024
    const metricsPort = await freePort()
    const g = await h.gateway(
      [
        '--p2p-listen',
        '/ip4/127.0.0.1/tcp/0',
        '--request-journal-max-bytes',
        String(maxBytes),
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
      ],
      { name: 'journal-flood' },
    )
    const longServed = `svc.${'m'.repeat(252)}` // 256 bytes: the longest method accepted
    const serve = await h.serveClient(g.api, [longServed])
    const journal = join(await h.tmp(), `${g.peerId}.journal`)
    const s = await (await rawPeer()).open(loopback(g))
    const seen = new Map<string, number>()
    const messages = new Map<string, string>()
    let biggest = 0
    for (let batch = 0; batch < 100 && !seen.has(String(Code.ResourceExhausted)); batch++) {
      const reqs: RequestInit[] = Array.from({ length: 100 }, (_, n) => {
        const id = `${batch}-${n}-`.padEnd(128, 'i') // the longest id accepted
        const kind = n % 4
        const method = kind === 0 ? `x.${'u'.repeat(254)}` : kind === 1 ? 'y'.repeat(10_000) : longServed
        return { requestId: id, method, payload: { case: 'data', value: new Uint8Array(kind === 3 ? 2_000 : 10) } }
      })
      const o = outcomes(await s.callMany(reqs, 100))
      for (const [k, v] of o.counts) seen.set(k, (seen.get(k) ?? 0) + v)
      for (const [k, v] of o.messages) messages.set(k, v)
      biggest = Math.max(biggest, dirBytes(journal))
      assert.ok(dirBytes(journal) <= maxBytes, `journal ${dirBytes(journal)} bytes after batch ${batch}`)
    }
    process.stderr.write(`journal flood: ${JSON.stringify([...seen])}, largest journal ${biggest} of ${maxBytes} bytes\n`)
    assert.ok((seen.get(String(Code.Unimplemented)) ?? 0) > 0 && (seen.get(String(Code.InvalidArgument)) ?? 0) > 0)
    assert.match(messages.get(String(Code.InvalidArgument)) ?? '', /method is 10000 bytes, longer than the limit of 256 bytes/)
    assert.match(
      messages.get(String(Code.ResourceExhausted)) ?? '',
      /request journal full: .*limit --request-journal-max-bytes 65536.*not run/,
    )
    assert.ok(biggest > maxBytes / 2, `the flood filled the journal (${biggest} bytes)`)
    const served = (seen.get('ok') ?? 0) + 0
    assert.equal(serve.stdout.filter((l) => l.startsWith('HANDLED ')).length, served, 'refused requests did not run')
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
    const gauge = (name: string): number => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(text)
      assert.ok(m != null, `${name} in /metrics`)
      return Number(m[1])
    }
    assert.equal(gauge('stargate_journal_max_bytes'), maxBytes)
    const bytes = gauge('stargate_journal_bytes')
    assert.ok(bytes > 0 && bytes <= maxBytes, `stargate_journal_bytes ${bytes}`)
    // every refusal for the full journal is counted as dropped, reason "full"
    const full = /^stargate_inbound_dropped_total\{[^}]*reason="full"[^}]*\} (\d+)/m.exec(text)
    assert.equal(Number(full?.[1]), seen.get(String(Code.ResourceExhausted)))
  })

  it('journal - a full disk gives calls a clear status; the gateway stays up and journals again once there is room', async (t) => {
    const disk = mounts.tmpfs('small-disk', 64 * 1024)
    if ('reason' in disk) return cannotRun(t, disk.reason)
    const b = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--state-dir', disk.path], { name: 'full-disk' })
    const serve = await h.serveClient(b.api, ['echo'])
    const a = await h.gateway(['--peer', `${b.peerId}=${loopback(b)}`], { name: 'full-disk-caller' })
    const call = (id: string) => outcome(a.client.call({ peerId: b.peerId, method: 'echo', payload: json(id), idempotencyKey: id }))
    assert.equal((await call('before-full')).code, 'OK')

    const filler = join(disk.path, 'filler')
    const fd = openSync(filler, 'w')
    try {
      for (;;) writeSync(fd, Buffer.alloc(4096, 1))
    } catch (err: unknown) {
      assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC')
    } finally {
      closeSync(fd)
    }
    // The journal's last page may still take a few records; then every new request is refused, not run.
    const results: Array<{ id: string; code: string; message: string }> = []
    for (let i = 0; i < 200 && !results.some((r) => r.code !== 'OK'); i++) results.push({ id: `full-${i}`, ...(await call(`full-${i}`)) })
    const refused = results.filter((r) => r.code !== 'OK')
    assert.ok(refused.length > 0, `a call was refused after ${results.length}`)
    for (const r of refused) {
      assert.equal(r.code, 'ResourceExhausted', r.message)
      assert.match(r.message, /cannot write the request journal .*no space left on device.*the request was not run/)
      assert.equal(runs(serve, r.id), 0, `${r.id} did not run`)
    }
    for (const r of results.filter((x) => x.code === 'OK')) assert.equal(runs(serve, r.id), 1)
    assert.equal((await call('still-full')).code, 'ResourceExhausted')
    // the gateway is up: its API answers and so does the built-in ping (never journaled)
    assert.equal((await b.client.getStatus({})).peerId, b.peerId)
    assert.equal((await outcome(a.client.call({ peerId: b.peerId, method: 'ping', payload: json(1) }))).code, 'OK')
    rmSync(filler)
    assert.equal((await call('after-space')).code, 'OK')
    assert.equal(runs(serve, 'after-space'), 1)
    assert.ok(b.proc.running)
  })

  /**
   * A call whose handler is running when the target dies: the target restarts (same identity, port and
   * state) and the retry is answered ABORTED from the journal; the handler never runs it a second time.
   */
  async function interruptAndRecover(name: string, kill: (target: GatewayHandle) => Promise<void>, env: NodeJS.ProcessEnv = {}) {
    const port = await freePort()
    const targetArgs = ['--p2p-listen', `/ip4/127.0.0.1/tcp/${port}`]
    const b = await h.gateway(targetArgs, { name, env })
    const serve = await h.serveClient(b.api, ['slow'])
    const a = await h.gateway(['--peer', `${b.peerId}=${loopback(b)}`, '--max-retries', '0'], { name: `${name}-caller` })
    const key = `${name}-${Date.now()}`
    const call = () => outcome(a.client.call({ peerId: b.peerId, method: 'slow', payload: json({ ms: 120_000 }), idempotencyKey: key }))
    const interrupted = call()
    await serve.waitFor(new RegExp(`^HANDLED slow ${key} `))
    await kill(b)
    const first = await interrupted
    assert.ok(['Unavailable', 'Aborted'].includes(first.code), `the interrupted call: ${first.code} ${first.message}`)
    const restarted = await h.gateway(targetArgs, { identity: b.identity, name: `${name}-restarted` })
    const serve2 = await h.serveClient(restarted.api, ['slow'])
    const retry = await call()
    assert.equal(retry.code, 'Aborted', retry.message)
    assert.match(retry.message, /interrupted by a restart .*may or may not have run, so it is not run again/)
    assert.equal(runs([serve, serve2], key), 1, 'the handler ran once')
  }

  it('journal - a gateway SIGKILLed mid-call restarts and answers the retry ABORTED; it never runs twice', async () => {
    await interruptAndRecover('sigkill', async (b) => {
      assert.equal(await b.proc.stop('SIGKILL'), null)
    })
  })

  it('faults - an injected uncaught exception makes the gateway exit non-zero; restarted, it recovers the call from the journal', async () => {
    await interruptAndRecover(
      'uncaught',
      async (b) => {
        process.kill(b.proc.child.pid!, 'SIGUSR2')
        assert.equal(await exitCode(b.proc), FAULT_EXIT_CODE)
        assert.match(b.proc.stderr.join('\n'), /uncaught exception: exiting with code 70.*injected fault \(test probe\)/)
      },
      probeEnv('throw'),
    )
  })

  it('faults - an unhandled rejection in a gateway and an uncaught exception in a relay: both exit non-zero', async () => {
    const g = await h.gateway([], { name: 'rejecting-gateway', env: probeEnv('reject') })
    const relay = await h.relay([], { name: 'throwing-relay', env: probeEnv('throw') })
    process.kill(g.proc.child.pid!, 'SIGUSR2')
    process.kill(relay.proc.child.pid!, 'SIGUSR2')
    assert.equal(await exitCode(g.proc), FAULT_EXIT_CODE)
    assert.match(g.proc.stderr.join('\n'), /unhandled rejection: exiting with code 70.*injected rejection/)
    assert.equal(await exitCode(relay.proc), FAULT_EXIT_CODE)
    assert.match(relay.proc.stderr.join('\n'), /uncaught exception: exiting with code 70.*injected fault/)
  })

  it('framing - a peer announcing 4 MiB frames and sending nothing of them costs no 4 MiB buffer', async () => {
    const g = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--frame-stall-timeout-ms', '600000'], {
      name: 'announced-frames',
      env: probeEnv('memory'),
    })
    let probes = 0
    const arrayBuffers = async (): Promise<number> => {
      const n = ++probes
      process.kill(g.proc.child.pid!, 'SIGUSR2')
      const lines = await g.proc.waitForLines(/^PROBE .*arrayBuffers=(\d+)/, n)
      return Number(lines[n - 1]![1])
    }
    const peer = await rawPeer()
    const addr = loopback(g)
    assert.equal((await (await peer.open(addr)).call({ requestId: 'warm', method: 'ping' })).result.case, 'json')
    const baseline = await arrayBuffers()
    const streams = 16
    const announce = new Uint8Array([0x80, 0x80, 0x80, 0x02]) // varint 4 MiB, and not one byte of the frame
    for (let i = 0; i < streams; i++) await (await peer.open(addr)).sendRaw(announce)
    // A call after them on the same connection: the announcements were read before it was answered.
    assert.equal((await (await peer.open(addr)).call({ requestId: 'after', method: 'ping' })).result.case, 'json')
    const grown = (await arrayBuffers()) - baseline
    process.stderr.write(`${streams} streams announcing 4 MiB frames: array buffers grew by ${grown} bytes\n`)
    assert.ok(grown < 4 * 1024 * 1024, `${grown} bytes for ${streams} announced 4 MiB frames`)
    assert.ok(g.proc.running)
  })
})
