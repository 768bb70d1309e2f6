/**
 * The Go and Python EchoService programs (test/interop) against each other and against the Node echo server
 * that `npm start` exposes (examples/node/echo-server.ts), with nothing in between: the baseline the tunnelling tests hold the gateways to. It shows
 * that the programs, built by each language's standard tools from test/proto, implement the proto's echo
 * rules the same way and report what the tunnel tests read (cancellations, deadlines, status details).
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { assertEchoed, assertMetadataIncludes, BIN_VALUE, echoMetadataFor, metadataJson, statusDetails } from '../interop/echo-checks.ts'
import {
  ECHO_KINDS,
  ECHO_LANGS,
  ECHO_SERVER_LANGS,
  type EchoServer,
  type EchoServerLang,
  prepareEchoPrograms,
  runEchoClient,
  startEchoServer,
} from '../interop/echo-programs.ts'
import { Harness } from '../lib/harness.ts'

/** gRPC status codes used below. */
const CANCELLED = 1
const DEADLINE_EXCEEDED = 4
const FAILED_PRECONDITION = 9

describe('tunnel programs (Go and Python EchoService, no gateway)', { timeout: 300_000 }, () => {
  const h = new Harness()
  const servers = {} as Record<EchoServerLang, EchoServer>

  before(async () => {
    await prepareEchoPrograms()
    for (const lang of ECHO_SERVER_LANGS) servers[lang] = await startEchoServer(h, lang)
  })
  after(async () => {
    await h.close()
  })

  for (const server of ECHO_SERVER_LANGS) {
    for (const client of ECHO_LANGS) {
      it(`echo - ${client} client → ${server} server: all four kinds, bytes, order, headers and trailers (text, repeated, -bin)`, async () => {
        const addr = servers[server].addr
        const metadata = echoMetadataFor(server)
        const sizes = [0, 1, 16 * 1024 + 3, 1024 * 1024]
        const run = await runEchoClient(client, addr, { sizes, count: 3, metadata })
        assert.equal(run.results.length, ECHO_KINDS.length * sizes.length)
        for (const r of run.results) assertEchoed(r, { count: 3, metadata })
        // The server saw the request metadata as sent (the -bin value byte for byte).
        const seen = servers[server].calls('Bidi').at(-1)!
        assertMetadataIncludes(seen.metadata, metadataJson(metadata), `${server} server`)
      })
    }
  }

  for (const server of ECHO_SERVER_LANGS) {
    for (const client of ECHO_LANGS) {
      it(`status - ${client} client ← ${server} server: code, message and details arrive byte for byte, trailers too`, async () => {
        const details = statusDetails(FAILED_PRECONDITION, 'the echo failed on purpose', 'ECHO_FAILED')
        const run = await runEchoClient(client, servers[server].addr, {
          kinds: ECHO_KINDS,
          metadata: echoMetadataFor(server),
          failure: { code: FAILED_PRECONDITION, message: 'the echo failed on purpose', details },
        })
        for (const r of run.results) {
          assert.equal(r.code, FAILED_PRECONDITION, r.kind)
          assert.equal(r.message, 'the echo failed on purpose', r.kind)
          assert.equal(r.details, Buffer.from(details).toString('base64'), `${r.kind}: grpc-status-details-bin`)
          assert.deepEqual(r.trailers['trailer-echo-data-bin'], [BIN_VALUE.toString('base64')], r.kind)
        }
      })

      it(`deadline - ${client} client → ${server} server sleeping past it: DEADLINE_EXCEEDED, the server's context done`, async () => {
        const since = servers[server].events.length
        const run = await runEchoClient(client, servers[server].addr, { kinds: ['unary', 'bidi'], delayMs: 30_000, timeoutMs: 500 })
        for (const r of run.results) {
          // Without a gateway in between, the server's own deadline (grpc-timeout) can reset the stream just
          // before the client's fires: the client then reports CANCELLED. Through a gateway it must not.
          assert.ok(
            r.code === DEADLINE_EXCEEDED || (r.code === CANCELLED && /RST_STREAM/.test(r.message)),
            `${r.kind}: ${r.code} ${r.message}`,
          )
          console.log(`${client} → ${server} ${r.kind}: DEADLINE_EXCEEDED after ${r.elapsed_ms} ms (deadline 500 ms)`)
        }
        for (const method of ['Unary', 'Bidi']) {
          await servers[server].waitForEvent('cancelled', (e) => e.method === method && servers[server].events.indexOf(e) >= since)
        }
      })

      it(`cancel - ${client} client cancels: the ${server} server sees it, on every kind`, async () => {
        const s = servers[server]
        const since = s.events.length
        const run = await runEchoClient(client, s.addr, { kinds: ECHO_KINDS, delayMs: 30_000, cancelAfterMs: 300 })
        assert.deepEqual(
          run.results.map((r) => r.code),
          ECHO_KINDS.map(() => CANCELLED),
        )
        const cancelling = run.events.filter((e) => e.event === 'cancelling')
        assert.equal(cancelling.length, ECHO_KINDS.length)
        for (const [i, method] of ['Unary', 'ServerStream', 'ClientStream', 'Bidi'].entries()) {
          const seen = await s.waitForEvent('cancelled', (e) => e.method === method && s.events.indexOf(e) >= since)
          assert.equal(seen.reason, 'cancelled')
          console.log(`${client} → ${server} ${method}: server saw the cancel ${seen.at_ms - cancelling[i]!.at_ms} ms after it`)
        }
      })
    }
  }
})
