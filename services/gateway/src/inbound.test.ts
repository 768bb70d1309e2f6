import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import { Code } from '@stargate/shared/errors'
import { PeerRequestSchema } from '@stargate/shared/gen/envelope'
import { ServeReplySchema, Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { eventually } from '../../../test/lib/eventually.ts'
import { GATEWAY_DEFAULTS as D } from './defaults.ts'
import { InboundDispatcher, type InboundOptions, type PeerResponseInit } from './inbound.ts'
import { InFlight } from './inflight.ts'
import { ServeRegistry } from './serve.ts'

const log = createLogger('test', { level: 'silent' })
const meta = { callerPeerId: 'caller', tier: Tier.DIRECT }

/**
 * A dispatcher with one in-memory Serve session: "echo" answers every call with its payload, "hang" never
 * answers. Counts the runs of each request id.
 */
function setup(limits: Partial<InboundOptions> = {}) {
  const registry = new ServeRegistry(log)
  const session = registry.open()
  registry.register(session, { methods: ['echo', 'hang'], capabilities: [], shared: false })
  const runs = new Map<string, number>()
  const stop = new AbortController()
  const serving = (async () => {
    for await (const msg of session.outgoing(stop.signal)) {
      if (msg.kind?.case !== 'call') continue
      const call = msg.kind.value
      runs.set(call.requestId ?? '', (runs.get(call.requestId ?? '') ?? 0) + 1)
      if (call.method === 'hang') continue
      const data = call.payload?.case === 'data' ? call.payload.value : new Uint8Array()
      session.reply(create(ServeReplySchema, { callId: call.callId, result: { case: 'data', value: data } }))
    }
  })()
  const options: InboundOptions = {
    peerId: 'target',
    maxInboundCallsPerPeer: 16,
    maxPayloadBytes: 1 << 20,
    dedupeWindowMs: 60_000,
    dedupeMaxEntries: 1000,
    dedupeMaxEntriesPerCaller: 1000,
    dedupeMaxBytes: 1 << 20,
    dedupeMaxBytesPerCaller: 1 << 20,
    maxRequestIdBytes: D.maxRequestIdBytes,
    maxMethodBytes: D.maxMethodBytes,
    defaultTimeoutMs: 10_000,
    log,
    ...limits,
  }
  const inbound = new InboundDispatcher(options, registry, new InFlight())
  const call = (requestId: string, bytes: number, method = 'echo', caller = meta.callerPeerId): Promise<PeerResponseInit> =>
    inbound.handle(
      create(PeerRequestSchema, { requestId, method, payload: { case: 'data', value: new Uint8Array(bytes).fill(7) } }),
      { ...meta, callerPeerId: caller },
      new AbortController().signal,
    )
  const close = async (): Promise<void> => {
    stop.abort()
    await serving
  }
  return { inbound, runs, call, close, session, registry, options }
}

function dataBytes(res: PeerResponseInit): number | undefined {
  return res.result?.case === 'data' ? res.result.value.byteLength : undefined
}

function error(res: PeerResponseInit): { code?: Code; message?: string } | undefined {
  return res.result?.case === 'error' ? res.result.value : undefined
}

describe('inbound dispatch', () => {
  it('dedupe - a duplicate is answered from memory with the same payload; the handler runs once', async () => {
    const t = setup()
    try {
      assert.equal(dataBytes(await t.call('r1', 100)), 100)
      const again = await t.call('r1', 100)
      assert.equal(dataBytes(again), 100)
      assert.equal(again.replayed, true)
      assert.equal(t.runs.get('r1'), 1)
      assert.ok(t.inbound.rememberedPayloadBytes >= 100)
    } finally {
      await t.close()
    }
  })

  it('dedupe - over dedupeMaxBytes the oldest responses are dropped, but their duplicates still never run again', async () => {
    const t = setup({ dedupeMaxBytes: 2500 })
    try {
      for (const id of ['a', 'b', 'c', 'd']) assert.equal(dataBytes(await t.call(id, 1000)), 1000)
      // 4000 bytes answered, 2500 allowed: the two oldest lost their payload.
      assert.ok(t.inbound.rememberedPayloadBytes <= 2500)
      assert.equal(t.inbound.stats.reduced, 2)
      const old = await t.call('a', 1000)
      assert.equal(error(old)?.code, Code.AlreadyExists)
      assert.match(error(old)?.message ?? '', /already ran .*--dedupe-max-bytes 2500.*not run again/)
      assert.equal(dataBytes(await t.call('d', 1000)), 1000, 'a recent duplicate still gets its payload')
      for (const id of ['a', 'b', 'c', 'd']) assert.equal(t.runs.get(id), 1, `${id} ran once`)
    } finally {
      await t.close()
    }
  })

  it('dedupe - when the memory is full new requests get RESOURCE_EXHAUSTED naming the flag; remembered ones never run again', async () => {
    const t = setup({ dedupeMaxEntries: 5, dedupeMaxEntriesPerCaller: 3 })
    try {
      for (let i = 0; i < 3; i++) await t.call(`r${i}`, 10)
      const refused = await t.call('r3', 10)
      assert.equal(error(refused)?.code, Code.ResourceExhausted)
      assert.match(error(refused)?.message ?? '', /--dedupe-caller-max-entries 3/)
      for (let i = 0; i < 2; i++) await t.call(`o${i}`, 10, 'echo', `other-${i}`)
      assert.match(error(await t.call('x', 10, 'echo', 'fresh'))?.message ?? '', /--dedupe-max-entries 5/)
      assert.equal(t.inbound.stats.refusedFull, 2)
      for (let i = 0; i < 3; i++) assert.equal((await t.call(`r${i}`, 10)).replayed, true)
      assert.equal(t.runs.get('r0'), 1)
      assert.equal(t.runs.has('r3'), false, 'a refused request did not run')
    } finally {
      await t.close()
    }
  })

  it('dedupe - pings are not remembered: a flood of unique pings from many callers takes no entry', async () => {
    const t = setup({ dedupeMaxEntries: 10, dedupeMaxEntriesPerCaller: 10 })
    try {
      for (let i = 0; i < 2000; i++) {
        const res = await t.call(`ping-${i}`, 0, 'ping', `caller-${i % 50}`)
        assert.equal(res.result?.case, 'json')
      }
      assert.equal(t.inbound.rememberedPayloadBytes, 0)
      assert.equal(dataBytes(await t.call('real', 5)), 5, 'the memory still has room')
    } finally {
      await t.close()
    }
  })

  it('policy - a denied caller gets PERMISSION_DENIED for methods and ping, runs nothing and takes no memory entry', async () => {
    const asked: string[] = []
    const policy = {
      allows: (caller: string, method: string) => {
        asked.push(`${caller} ${method}`)
        return caller === 'friend'
          ? { allowed: true, reason: 'friend' }
          : { allowed: false, reason: `peer ${caller} may not call "${method}"` }
      },
    }
    const t = setup({ policy, dedupeMaxEntries: 1, dedupeMaxEntriesPerCaller: 1 })
    try {
      for (const [id, method] of [
        ['d1', 'echo'],
        ['d2', 'echo'],
        ['d3', 'ping'],
      ] as const) {
        const res = await t.call(id, 3, method, 'stranger')
        assert.equal(error(res)?.code, Code.PermissionDenied)
        assert.equal(error(res)?.message, `peer stranger may not call "${method}"`)
      }
      assert.equal(t.runs.size, 0, 'no handler ran')
      assert.equal(t.inbound.stats.denied, 3)
      assert.equal(t.inbound.rememberedPayloadBytes, 0)
      // the memory holds one entry at most: the denied calls took none, so the friend's call still fits
      assert.equal(dataBytes(await t.call('f1', 4, 'echo', 'friend')), 4)
      assert.equal(t.runs.get('f1'), 1)
      assert.deepEqual(asked, ['stranger echo', 'stranger echo', 'stranger ping', 'friend echo'])
    } finally {
      await t.close()
    }
  })

  it('inbound - request ids and methods longer than their limits are INVALID_ARGUMENT and do not run', async () => {
    const t = setup()
    try {
      const longId = await t.call('i'.repeat(D.maxRequestIdBytes + 1), 1)
      assert.equal(error(longId)?.code, Code.InvalidArgument)
      assert.match(error(longId)?.message ?? '', /request_id is 129 bytes, longer than the limit of 128 bytes/)
      assert.equal(dataBytes(await t.call('i'.repeat(D.maxRequestIdBytes), 1)), 1, 'at the limit is fine')
      const longMethod = await t.call('m', 1, `echo${'x'.repeat(D.maxMethodBytes)}`)
      assert.equal(error(longMethod)?.code, Code.InvalidArgument)
      assert.match(error(longMethod)?.message ?? '', /method is 260 bytes, longer than the limit of 256 bytes/)
      assert.equal(t.runs.size, 1)
      assert.equal(t.inbound.stats.malformed, 2)
    } finally {
      await t.close()
    }
  })

  it('inbound - a request that reached no handler is not remembered: once the method is served, its retry runs', async () => {
    const t = setup()
    try {
      assert.equal(error(await t.call('u1', 3, 'later'))?.code, Code.Unimplemented)
      t.session.methods.add('later')
      const retried = await t.call('u1', 3, 'later')
      assert.equal(dataBytes(retried), 3)
      assert.notEqual(retried.replayed, true)
      assert.equal(t.runs.get('u1'), 1)
    } finally {
      await t.close()
    }
  })

  it('journal - after a crash, a finished request is answered from the journal and an interrupted one ABORTED; neither runs again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'inbound-journal-'))
    const journal = { dir, maxBytes: 1 << 20, syncIntervalMs: 10 }
    const first = setup({ journal })
    const second = setup()
    const reopen = () => new InboundDispatcher({ ...second.options, journal }, second.registry, new InFlight())
    const call = (d: InboundDispatcher, id: string, method: string) =>
      d.handle(create(PeerRequestSchema, { requestId: id, method }), meta, new AbortController().signal)
    try {
      assert.equal(dataBytes(await first.call('done-1', 40)), 40)
      const interrupted = first.call('inflight-1', 1, 'hang')
      await eventually('the hanging request reached the Serve client', () => first.runs.get('inflight-1') === 1, { intervalMs: 0 })
      // "crash": the first dispatcher is not closed; a second one opens the same journal
      const restarted = reopen()
      const done = await call(restarted, 'done-1', 'echo')
      assert.equal(dataBytes(done), 40)
      assert.equal(done.replayed, true)
      const aborted = await call(restarted, 'inflight-1', 'hang')
      assert.equal(error(aborted)?.code, Code.Aborted)
      assert.match(error(aborted)?.message ?? '', /may or may not have run/)
      assert.equal(second.runs.size, 0, 'nothing ran on the restarted gateway')
      restarted.close()
      // shutdown: the journal closes before the Serve sessions, so the call they drop is not journaled as done
      first.inbound.close()
      first.session.close()
      assert.equal(error(await interrupted)?.code, Code.Unavailable)
      const again = reopen()
      assert.equal(error(await call(again, 'inflight-1', 'hang'))?.code, Code.Aborted)
      again.close()
    } finally {
      await first.close()
      await second.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
