import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import { GatewayService } from '@stargate/shared/gen/gateway'
import { eventually } from '../lib/eventually.ts'
import { freePort, type GatewayHandle, Harness, Proc } from '../lib/harness.ts'
import { liveHeapMB, rssMiB } from '../lib/memory.ts'

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'OK'
  } catch (err: unknown) {
    return Code[ConnectError.from(err).code] ?? 'unknown'
  }
}

async function gauge(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)
  return m != null ? Number(m[1]) : Number.NaN
}

function tokenClient(api: string, token: string) {
  return createClient(
    GatewayService,
    createGrpcTransport({
      baseUrl: `http://${api}`,
      interceptors: [
        (next) => (req) => {
          req.header.set('authorization', `Bearer ${token}`)
          return next(req)
        },
      ],
    }),
  )
}

const ALICE = 'alice-token-5b1e'
const BOB = 'bob-token-09fa'
const SCOPED = 'scoped-token-c41d'

describe('Serve: who may join a method, scoped tokens, a stalled client', () => {
  const h = new Harness()
  let open: GatewayHandle
  let authed: GatewayHandle

  before(async () => {
    open = await h.gateway([], { name: 'open' })
    const tokens = join(await h.tmp(), 'tokens')
    await writeFile(tokens, `# API tokens\n${ALICE}\n${BOB}\n${SCOPED} methods=serve:a.*,call:ping\n`)
    authed = await h.gateway(['--auth-token-file', tokens], { name: 'authed' })
  })
  after(() => h.close())

  it('serve - without tokens, a second client cannot join a method another client serves, unless that one registered it shared', async () => {
    const first = await h.serveClient(open.api, ['db.delete'], { name: 'first' })
    const second = h.spawnServeClient(open.api, ['db.delete'], { name: 'second' })
    assert.equal(await second.exited, 1)
    assert.ok(
      second.stderr.some((l) =>
        /serve stream failed: \[already_exists\] method "db\.delete" is already served by another Serve client/.test(l),
      ),
      second.dump(),
    )
    // calls still go to the first client only
    const res = await open.client.call({ peerId: open.peerId, method: 'db.delete', payload: { case: 'data', value: new Uint8Array([1]) } })
    assert.ok(first.stdout.some((l) => l.includes(res.requestId)))
    // an idempotency key longer than the remote would take is refused here, before anything is sent
    const longKey = await open.client
      .call({ peerId: open.peerId, method: 'ping', idempotencyKey: 'k'.repeat(129) })
      .catch((err: unknown) => ConnectError.from(err))
    assert.ok(longKey instanceof ConnectError && longKey.code === Code.InvalidArgument)
    assert.match(longKey.rawMessage, /^idempotency_key is 129 bytes, longer than the limit of 128 bytes/)
    // a shared registration lets another client join
    await h.serveClient(open.api, ['shared.echo'], { shared: true, name: 'shared-1' })
    await h.serveClient(open.api, ['shared.echo'], { name: 'shared-2' })
  })

  it('serve - with tokens, only the same token joins a method; a token scoped to serve a.* cannot register b.x nor call outside its scope', async () => {
    await h.serveClient(authed.api, ['db.delete'], { token: ALICE, name: 'alice-1' })
    const bob = h.spawnServeClient(authed.api, ['db.delete'], { token: BOB, name: 'bob' })
    assert.equal(await bob.exited, 1)
    assert.ok(
      bob.stderr.some((l) => l.includes('[already_exists]') && l.includes('only a client with the same API token may join it')),
      bob.dump(),
    )
    await h.serveClient(authed.api, ['db.delete'], { token: ALICE, name: 'alice-2' })

    const outOfScope = h.spawnServeClient(authed.api, ['b.x'], { token: SCOPED, name: 'scoped-b' })
    assert.equal(await outOfScope.exited, 1)
    assert.ok(
      outOfScope.stderr.some((l) =>
        l.includes('[permission_denied] this API token may not serve "b.x": its scope is methods=serve:a.*,call:ping'),
      ),
      outOfScope.dump(),
    )
    await h.serveClient(authed.api, ['a.x'], { token: SCOPED, name: 'scoped-a' })

    const scoped = tokenClient(authed.api, SCOPED)
    const e = ConnectError.from(
      await scoped
        .call({ peerId: authed.peerId, method: 'a.x', payload: { case: 'data', value: new Uint8Array() } })
        .catch((err: unknown) => err),
    )
    assert.equal(e.code, Code.PermissionDenied)
    assert.match(e.rawMessage, /this API token may not call "a\.x"/)
    assert.equal((await scoped.call({ peerId: authed.peerId, method: 'ping' })).payload.case, 'json')
    const alice = tokenClient(authed.api, ALICE)
    assert.equal(
      (await alice.call({ peerId: authed.peerId, method: 'a.x', payload: { case: 'data', value: new Uint8Array([5]) } })).payload.case,
      'data',
    )
  })

  it('serve - a stalled client: its queue stays within bounds, callers time out and their calls leave the queue, memory stays bounded', async () => {
    const maxCalls = 20
    const maxBytes = 1024 * 1024
    const metricsPort = await freePort()
    const sink = await h.gateway(
      [
        '--p2p-listen',
        '/ip4/127.0.0.1/tcp/0',
        '--serve-queue-max-calls',
        String(maxCalls),
        '--serve-queue-max-bytes',
        String(maxBytes),
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
      ],
      { name: 'sink', env: { NODE_OPTIONS: '--heapsnapshot-signal=SIGUSR2' } },
    )
    const caller = await h.gateway(['--peer', `${sink.peerId}=${sink.multiaddrs.find((a) => a.includes('/127.0.0.1/'))}`], {
      name: 'caller',
    })
    const child = spawn(process.execPath, [join(import.meta.dirname, '../lib/stalled-serve-client.ts'), sink.api, 'stuck'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const stalled = new Proc('stalled-client', child)
    h.procs.push(stalled)
    await stalled.waitFor(/^STALLED$/)
    const pid = sink.proc.child.pid!
    const heapMB = async (): Promise<number> => liveHeapMB(pid, await h.tmp(), () => sink.client.getStatus({}))
    const rssBefore = rssMiB(pid)
    const heapBefore = await heapMB()

    // Large payloads fill the queue by bytes, small ones by calls. A wave stays under what the caller's own API
    // (HTTP/2) accepts at once; the waves together send far more than the queue may hold.
    const payloads = [128 * 1024, 1024]
    const waves = 16
    const perWave = 30
    let sentBytes = 0
    let maxQueuedCalls = 0
    let maxQueuedBytes = 0
    let rssMax = rssBefore
    const counts = new Map<string, number>()
    for (let w = 0; w < waves; w++) {
      const payloadBytes = payloads[w % payloads.length]!
      sentBytes += perWave * payloadBytes
      const calls = Array.from({ length: perWave }, (_, i) =>
        outcome(
          caller.client.call(
            { peerId: sink.peerId, method: 'stuck', payload: { case: 'data', value: new Uint8Array(payloadBytes).fill(w + i) } },
            { timeoutMs: 2_000 },
          ),
        ),
      )
      let settled = false
      const all = Promise.all(calls).finally(() => {
        settled = true
      })
      while (!settled) {
        maxQueuedCalls = Math.max(maxQueuedCalls, await gauge(metricsPort, 'stargate_serve_queue_calls'))
        maxQueuedBytes = Math.max(maxQueuedBytes, await gauge(metricsPort, 'stargate_serve_queue_bytes'))
        rssMax = Math.max(rssMax, rssMiB(pid))
        await Promise.race([all, new Promise((r) => setTimeout(r, 100))])
      }
      for (const o of await all) counts.set(o, (counts.get(o) ?? 0) + 1)
    }
    // the last wave's calls leave the queue as their deadlines pass at the sink
    const lastDeadlineAtMs = Date.now()
    const queuedAfter = await eventually(
      'the queue is empty',
      async () => {
        const q = {
          calls: await gauge(metricsPort, 'stargate_serve_queue_calls'),
          bytes: await gauge(metricsPort, 'stargate_serve_queue_bytes'),
        }
        return q.calls === 0 && q.bytes === 0 ? q : undefined
      },
      5_000,
    )
    const drainedAfterMs = Date.now() - lastDeadlineAtMs
    const refused = await gauge(metricsPort, 'stargate_inbound_dropped_total\\{[^}]*reason="serve_queue_full"[^}]*\\}')
    const rssAfter = rssMiB(pid)
    const heapAfter = await heapMB()
    const sentMiB = Math.round(sentBytes / 1024 / 1024)
    console.log(
      `stalled Serve client: ${waves * perWave} calls of 128 KiB and 1 KiB (${sentMiB} MiB) → ${JSON.stringify(Object.fromEntries(counts))}; ` +
        `queue at most ${maxQueuedCalls} calls / ${(maxQueuedBytes / 1024 / 1024).toFixed(2)} MiB (limits ${maxCalls} / ${maxBytes / 1024 / 1024} MiB), ` +
        `empty ${drainedAfterMs} ms after the last caller's deadline; refused for a full queue: ${refused}; ` +
        `gateway RSS ${Math.round(rssBefore)} MiB before, ${Math.round(rssMax)} MiB at most, ${Math.round(rssAfter)} MiB after; ` +
        `live heap ${heapBefore.toFixed(1)} MB before, ${heapAfter.toFixed(1)} MB after`,
    )
    assert.equal((counts.get('OK') ?? 0) + (counts.get('Unknown') ?? 0), 0, 'no call was answered')
    assert.ok((counts.get('ResourceExhausted') ?? 0) > 0, 'a full queue refused calls')
    assert.ok((counts.get('DeadlineExceeded') ?? 0) > 0, 'queued calls timed out')
    assert.ok(refused > 0)
    assert.ok(maxQueuedCalls <= maxCalls, `queue held ${maxQueuedCalls} calls`)
    assert.ok(maxQueuedBytes <= maxBytes, `queue held ${maxQueuedBytes} bytes`)
    assert.deepEqual(queuedAfter, { calls: 0, bytes: 0 })
    // nothing of what was sent is held once the callers gave up (RSS keeps the heap pages V8 grew into)
    assert.ok(heapAfter < heapBefore + 8, `live heap ${heapBefore.toFixed(1)} → ${heapAfter.toFixed(1)} MB after ${sentMiB} MiB were sent`)
    assert.ok(sink.proc.running)
  })
})
