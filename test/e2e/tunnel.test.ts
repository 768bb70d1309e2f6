/**
 * Transparent gRPC tunnelling end to end, every part real: a relay, gateways, and ordinary EchoService
 * servers (Go, Python, Node) behind callee gateways, called by ordinary Go and Python clients pointed at
 * caller gateway A (test/interop/tunnel-stack.ts draws the topology). The clients know nothing about
 * Stargate; header routing sets the stargate-peer header, --route routing changes nothing in them. The real
 * grpcurl lists, describes and calls the servers through reflection passthrough, with no proto file.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { Tier } from '@stargate/shared/gen/gateway'
import { assertEchoed, assertMetadataIncludes, echoMetadataFor, metadataJson, statusDetails } from '../interop/echo-checks.ts'
import {
  ECHO_KINDS,
  ECHO_LANGS,
  ECHO_SERVICE,
  type EchoServerLang,
  generatedSha256,
  parseRun,
  rssBytes,
  runEchoClient,
  spawnEchoClient,
} from '../interop/echo-programs.ts'
import { lastTier, startTunnelStack, type TunnelStack } from '../interop/tunnel-stack.ts'
import { Harness, type Proc } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)

const CANCELLED = 1
const DEADLINE_EXCEEDED = 4
const FAILED_PRECONDITION = 9
const MiB = 1024 * 1024
/** Sizes every kind is called with: empty, one byte, more than one HTTP/2 DATA frame, more than a tunnel window. */
const SIZES = [0, 1, 64 * 1024 + 7, 2 * MiB]

/** The tier each callee gateway can only be reached over. */
const TIER_OF: Record<EchoServerLang, Tier> = { go: Tier.RELAY, python: Tier.RELAY, node: Tier.DIRECT }

describe('tunnel (real gateways, relay, Go/Python/Node servers, Go/Python clients)', { timeout: 900_000 }, () => {
  const h = new Harness()
  let s: TunnelStack

  before(async () => {
    tool('grpcurl')
    s = await startTunnelStack(h)
  })
  after(async () => {
    await h.close()
  })

  for (const server of ['go', 'python', 'node'] as const) {
    for (const client of ECHO_LANGS) {
      it(`header - ${client} client → A → ${Tier[TIER_OF[server]]} → B → ${server} server: every kind, bytes, headers, trailers, -bin`, async () => {
        const metadata = echoMetadataFor(server)
        const since = s.servers[server].events.length
        const run = await runEchoClient(client, s.a.api, { peer: s.b[server].peerId, sizes: SIZES, count: 3, metadata })
        assert.equal(run.results.length, ECHO_KINDS.length * SIZES.length)
        for (const r of run.results) assertEchoed(r, { count: 3, metadata })
        assert.equal(await lastTier(s.a, s.b[server].peerId), TIER_OF[server], 'the tier A used')
        // The backend got the request metadata as the client sent it, and none of Stargate's own headers.
        const calls = s.servers[server].calls('Bidi', since)
        assert.equal(calls.length, SIZES.length, h.dump())
        for (const c of calls) {
          assertMetadataIncludes(c.metadata, metadataJson(metadata), `${server} server`)
          const own = Object.keys(c.metadata).filter((k) => k.startsWith('stargate-'))
          assert.deepEqual(own, [], 'stargate-* headers are not forwarded')
        }
      })
    }
  }

  for (const [via, target] of [
    ['a', 'go'],
    ['aDirect', 'node'],
  ] as const) {
    for (const client of ECHO_LANGS) {
      it(`route - ${client} client without any Stargate header → ${via === 'a' ? 'A' : 'A-direct'} → ${Tier[TIER_OF[target]]} → the ${target} server, by --route`, async () => {
        const gateway = s[via]
        const metadata = echoMetadataFor(target)
        const before = Object.fromEntries((['go', 'python', 'node'] as const).map((l) => [l, s.servers[l].events.length]))
        const run = await runEchoClient(client, gateway.api, { sizes: [1000], count: 5, metadata })
        assert.equal(run.results.length, ECHO_KINDS.length)
        for (const r of run.results) assertEchoed(r, { count: 5, metadata })
        assert.equal(await lastTier(gateway, s.b[target].peerId), TIER_OF[target], 'the tier used')
        for (const lang of ['go', 'python', 'node'] as const) {
          const calls = s.servers[lang].events.slice(before[lang]).filter((e) => e.event === 'call').length
          assert.equal(calls, lang === target ? ECHO_KINDS.length : 0, `calls that reached the ${lang} server`)
        }
      })
    }
  }

  for (const server of ['go', 'python', 'node'] as const) {
    it(`status - a ${server} server's status code, message and details reach the Go and Python clients intact`, async () => {
      const details = statusDetails(FAILED_PRECONDITION, 'refused on purpose', 'ECHO_REFUSED')
      for (const client of ECHO_LANGS) {
        const run = await runEchoClient(client, s.a.api, {
          peer: s.b[server].peerId,
          metadata: echoMetadataFor(server),
          failure: { code: FAILED_PRECONDITION, message: 'refused on purpose', details },
        })
        for (const r of run.results) {
          assert.equal(r.code, FAILED_PRECONDITION, `${client} ${r.kind}: ${r.message}`)
          assert.equal(r.message, 'refused on purpose')
          assert.equal(r.details, Buffer.from(details).toString('base64'), `${client} ${r.kind}: grpc-status-details-bin`)
          assertMetadataIncludes(r.trailers, metadataJson(echoMetadataFor(server), 'trailer-'), `${client} ${r.kind} trailers`)
        }
      }
    })
  }

  for (const server of ['go', 'python'] as const) {
    for (const client of ECHO_LANGS) {
      it(`deadline - ${client} client, ${server} server sleeping past the deadline: DEADLINE_EXCEEDED within deadline + 1 s, the backend's context done`, async () => {
        const deadlineMs = 1500
        const startedAtMs = Date.now()
        const since = s.servers[server].events.length
        const run = await runEchoClient(client, s.a.api, {
          peer: s.b[server].peerId,
          kinds: ECHO_KINDS,
          delayMs: 60_000,
          timeoutMs: deadlineMs,
        })
        for (const r of run.results) {
          console.log(`${client} → ${server} ${r.kind}: status ${r.code} after ${r.elapsed_ms} ms (deadline ${deadlineMs} ms)`)
          assert.equal(r.code, DEADLINE_EXCEEDED, `${r.kind}: ${r.code} ${r.message}`)
          assert.ok(r.elapsed_ms <= deadlineMs + 1000, `${r.kind}: ${r.elapsed_ms} ms`)
        }
        const methods = ['Unary', 'ServerStream', 'ClientStream', 'Bidi']
        for (const method of methods) {
          const done = await s.servers[server].waitForEvent(
            'cancelled',
            (e) => e.method === method && s.servers[server].events.indexOf(e) >= since,
          )
          console.log(`  ${server} ${method}: context done (${done.reason}) ${done.at_ms - startedAtMs} ms after the first call started`)
        }
      })

      it(`cancel - ${client} client cancels mid-call: the ${server} backend sees it within 1 s, on every kind`, async () => {
        const since = s.servers[server].events.length
        const run = await runEchoClient(client, s.a.api, {
          peer: s.b[server].peerId,
          kinds: ECHO_KINDS,
          delayMs: 60_000,
          cancelAfterMs: 1000,
        })
        assert.deepEqual(
          run.results.map((r) => r.code),
          ECHO_KINDS.map(() => CANCELLED),
        )
        const cancelling = run.events.filter((e) => e.event === 'cancelling')
        for (const [i, method] of ['Unary', 'ServerStream', 'ClientStream', 'Bidi'].entries()) {
          const seen = await s.servers[server].waitForEvent(
            'cancelled',
            (e) => e.method === method && s.servers[server].events.indexOf(e) >= since,
          )
          const afterMs = seen.at_ms - cancelling[i]!.at_ms
          console.log(`${client} → ${server} ${method}: the backend saw the cancel ${afterMs} ms after the client cancelled`)
          assert.equal(seen.reason, 'cancelled')
          assert.ok(afterMs <= 1000, `${method}: ${afterMs} ms`)
        }
      })
    }
  }

  describe('grpcurl through reflection passthrough (no proto files)', () => {
    /** Real grpcurl against gateway A with the stargate-peer header; resolves to stdout, fails with stderr. */
    async function grpcurl(peer: string, args: string[], flags: string[] = []): Promise<string> {
      const argv = ['-plaintext', '-H', `stargate-peer: ${peer}`, ...flags, s.a.api, ...args]
      try {
        return (await run(tool('grpcurl'), argv, { timeout: 60_000 })).stdout
      } catch (err: unknown) {
        const e = err as { stdout?: string; stderr?: string }
        throw new Error(`grpcurl ${argv.join(' ')}: ${e.stderr ?? ''}${e.stdout ?? ''}\n${h.dump()}`)
      }
    }

    // Go serves reflection v1 and v1alpha, Python v1alpha only (grpcurl falls back to it), Node both.
    for (const server of ['go', 'python', 'node'] as const) {
      it(`grpcurl - list, describe and a streaming call of the ${server} server's EchoService through A`, async () => {
        const peer = s.b[server].peerId
        const services = (await grpcurl(peer, ['list'])).trim().split('\n')
        assert.ok(services.includes(ECHO_SERVICE), `${ECHO_SERVICE} listed: ${services.join(' ')}`)
        assert.ok(!services.includes('stargate.v1.GatewayService'), "the list is the backend's, not gateway A's")
        const described = await grpcurl(peer, ['describe', ECHO_SERVICE])
        assert.match(described, /stargate\.test\.v1\.EchoService is a service:/)
        // protoc-gen-go and grpcio-tools embed descriptors without comments; the Node server's come from buf
        // with them, and reach grpcurl as its server sent them.
        if (server === 'node') assert.match(described, /\/\/ Bidi answers each request as it arrives, echoing its payload\./)
        assert.match(
          described,
          /rpc ClientStream \( stream \.stargate\.test\.v1\.ClientStreamRequest \) returns \( \.stargate\.test\.v1\.ClientStreamResponse \);/,
        )
        const message = await grpcurl(peer, ['describe', 'stargate.test.v1.Failure'])
        assert.match(message, /bytes details = 3;/)
        const since = s.servers[server].events.length
        const out = await grpcurl(peer, [`${ECHO_SERVICE}/ServerStream`], ['-d', '{"payload":"c3RhcmdhdGU=","response_count":2}'])
        assert.deepEqual(
          out
            .trim()
            .split(/\n(?=\{)/)
            .map((j) => JSON.parse(j)),
          [{ payload: 'c3RhcmdhdGU=' }, { index: 1, payload: 'c3RhcmdhdGU=' }],
        )
        assert.equal(s.servers[server].calls('ServerStream', since).length, 1, 'the call reached that server')
      })
    }
  })

  describe('100 MB through the relay, bounded memory', () => {
    const COUNT = 1600
    const SIZE = 64 * 1024
    const TOTAL = COUNT * SIZE
    /**
     * RSS growth allowed per process while 100 MiB passes: a quarter of the stream, so a hop that buffered it
     * would fail, with room for the garbage collector's swings on a loaded machine (measured: under 6 MiB).
     */
    const RSS_GROWTH_MAX = 24 * MiB
    /**
     * What the backend may send after its client stopped reading: the flow-control windows on the way (the
     * Go client's, gateway A's HTTP/2 stream, the tunnel's, gateway B's to the backend, the Go server's),
     * a few MiB; measured: under 2 MiB. A hop that did not pass backpressure on lets it send all 100 MiB.
     */
    const STALLED_SEND_MAX = 8 * MiB
    /** RSS growth allowed per process while the client is stalled (measured: under 0.1 MiB). */
    const STALLED_RSS_GROWTH_MAX = 8 * MiB

    const procs = (): Array<[string, Proc]> => [
      ['gateway A', s.a.proc],
      ['relay', s.relay.proc],
      ['gateway B-go', s.b.go.proc],
    ]

    before(async () => {
      // A fresh Node process grows its heap to a working size on its first traffic (young-generation
      // semi-spaces, code), whatever the traffic: 16 MiB each way first, so that what is measured below is
      // what 100 MiB adds, not the heap's first growth.
      const rss0 = procs().map(([n, p]): [string, number] => [n, rssBytes(p.child.pid!)])
      const warm = { peer: s.b.go.peerId, sizes: [SIZE], count: 256, responseBytes: SIZE } as const
      await runEchoClient('go', s.a.api, { ...warm, kinds: ['server_stream', 'client_stream'] })
      for (const [n, rss] of rss0) {
        console.log(
          `warm-up (16 MiB each way): ${n} RSS ${(rss / MiB).toFixed(1)} → ${(rssBytes(procs().find(([m]) => m === n)![1].child.pid!) / MiB).toFixed(1)} MiB`,
        )
      }
    })

    async function measured(what: string, run: () => Promise<void>): Promise<void> {
      const before = new Map(procs().map(([n, p]) => [n, rssBytes(p.child.pid!)]))
      const peak = new Map(before)
      const timer = setInterval(() => {
        for (const [n, p] of procs()) peak.set(n, Math.max(peak.get(n)!, rssBytes(p.child.pid!)))
      }, 100)
      try {
        await run()
      } finally {
        clearInterval(timer)
      }
      for (const [n] of procs()) {
        const growth = peak.get(n)! - before.get(n)!
        console.log(
          `${what}: ${n} RSS ${(before.get(n)! / MiB).toFixed(1)} MiB → peak ${(peak.get(n)! / MiB).toFixed(1)} MiB (+${(growth / MiB).toFixed(1)} MiB)`,
        )
        assert.ok(growth < RSS_GROWTH_MAX, `${n} RSS grew ${(growth / MiB).toFixed(1)} MiB while ${TOTAL / MiB} MiB passed`)
      }
    }

    it('server stream - 100 MiB from the Go server to the Go client, through the relay, every byte in order', async () => {
      const stats0 = await s.relay.client.getRelayStats({})
      await measured('server stream 100 MiB', async () => {
        const run = await runEchoClient('go', s.a.api, {
          peer: s.b.go.peerId,
          kinds: ['server_stream'],
          sizes: [0],
          count: COUNT,
          responseBytes: SIZE,
        })
        const r = run.results[0]!
        assert.equal(r.code, 0, `${r.message}\n${h.dump()}`)
        assert.equal(r.received_bytes, TOTAL)
        assert.equal(r.received_sha256, generatedSha256(COUNT, SIZE))
        assert.ok(r.in_order)
        console.log(
          `server stream: ${TOTAL / MiB} MiB in ${(r.elapsed_ms / 1000).toFixed(1)} s (${(TOTAL / MiB / (r.elapsed_ms / 1000)).toFixed(1)} MiB/s)`,
        )
      })
      const stats1 = await s.relay.client.getRelayStats({})
      assert.ok(stats1.bytesToInitiator - stats0.bytesToInitiator >= BigInt(TOTAL), 'the bytes crossed the relay')
    })

    it('client stream - 100 MiB from the Go client to the Go server, through the relay, every byte in order', async () => {
      const stats0 = await s.relay.client.getRelayStats({})
      await measured('client stream 100 MiB', async () => {
        const run = await runEchoClient('go', s.a.api, { peer: s.b.go.peerId, kinds: ['client_stream'], sizes: [SIZE], count: COUNT })
        const r = run.results[0]!
        assert.equal(r.code, 0, `${r.message}\n${h.dump()}`)
        assert.deepEqual(r.server, { received_messages: COUNT, received_bytes: TOTAL, sha256: generatedSha256(COUNT, SIZE) })
        console.log(
          `client stream: ${TOTAL / MiB} MiB in ${(r.elapsed_ms / 1000).toFixed(1)} s (${(TOTAL / MiB / (r.elapsed_ms / 1000)).toFixed(1)} MiB/s)`,
        )
      })
      const stats1 = await s.relay.client.getRelayStats({})
      assert.ok(stats1.bytesFromInitiator - stats0.bytesFromInitiator >= BigInt(TOTAL), 'the bytes crossed the relay')
    })

    it('stalled consumer - a client that stops reading stops the backend; no process grows; nothing lost after it resumes', async () => {
      const server = s.servers.go
      const since = server.events.length
      const client = await spawnEchoClient(h, 'go', s.a.api, {
        peer: s.b.go.peerId,
        kinds: ['server_stream'],
        sizes: [0],
        count: COUNT,
        responseBytes: SIZE,
        stallAfter: 16,
      })
      await client.waitFor(/"event":"stalled"/)
      const sentBy = (): number => Math.max(0, ...server.events.slice(since).flatMap((e) => (e.event === 'progress' ? [e.bytes] : [])))
      const watched: Array<[string, number]> = [
        ...procs().map(([n, p]): [string, number] => [n, p.child.pid!]),
        ['Go server', server.proc.child.pid!],
      ]
      const start = new Map(watched.map(([n, pid]) => [n, rssBytes(pid)]))
      const sentAtStall = sentBy()
      // Watch the stalled call for a while: the backend must stop (flow control reaches it) and no process may grow.
      const peak = new Map(start)
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, 250))
        for (const [n, pid] of watched) peak.set(n, Math.max(peak.get(n)!, rssBytes(pid)))
      }
      const sentWhileStalled = sentBy()
      console.log(
        `stalled: the backend had sent ${(sentAtStall / MiB).toFixed(1)} MiB when the client stalled, ${(sentWhileStalled / MiB).toFixed(1)} MiB 5 s later (of ${TOTAL / MiB} MiB)`,
      )
      for (const [n] of watched) {
        const growth = peak.get(n)! - start.get(n)!
        console.log(
          `stalled: ${n} RSS ${(start.get(n)! / MiB).toFixed(1)} MiB → peak ${(peak.get(n)! / MiB).toFixed(1)} MiB (+${(growth / MiB).toFixed(1)} MiB)`,
        )
        assert.ok(growth < STALLED_RSS_GROWTH_MAX, `${n} grew ${(growth / MiB).toFixed(1)} MiB while the client was stalled`)
      }
      assert.ok(sentWhileStalled < STALLED_SEND_MAX, `the backend kept producing (${sentWhileStalled} B) while the client read nothing`)
      client.child.stdin!.end('\n')
      await client.exited
      const r = parseRun(client.stdout).results[0]!
      assert.equal(r.code, 0, `${r.message}\n${h.dump()}`)
      assert.equal(r.received_sha256, generatedSha256(COUNT, SIZE), 'every byte arrived, in order, after the stall')
    })
  })
})
