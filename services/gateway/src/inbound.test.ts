import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import { Code } from '@stargate/shared/errors'
import { PeerRequestSchema } from '@stargate/shared/gen/envelope'
import { ServeReplySchema, Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { InboundDispatcher, type PeerResponseInit } from './inbound.ts'
import { ServeRegistry, ServeSession } from './serve.ts'

const log = createLogger('test', { level: 'silent' })
const meta = { callerPeerId: 'caller', tier: Tier.DIRECT }

/** A dispatcher with one in-memory Serve session for "echo" that answers every call with its payload. */
function setup(limits: { dedupeMaxEntries?: number; dedupeMaxBytes?: number }) {
  const registry = new ServeRegistry(log)
  const session = new ServeSession()
  session.methods.add('echo')
  registry.add(session)
  const runs = new Map<string, number>()
  const stop = new AbortController()
  const serving = (async () => {
    for await (const msg of session.outgoing(stop.signal)) {
      if (msg.kind?.case !== 'call') continue
      const call = msg.kind.value
      runs.set(call.requestId ?? '', (runs.get(call.requestId ?? '') ?? 0) + 1)
      const data = call.payload?.case === 'data' ? call.payload.value : new Uint8Array()
      session.reply(create(ServeReplySchema, { callId: call.callId, result: { case: 'data', value: data } }))
    }
  })()
  const inbound = new InboundDispatcher(
    {
      peerId: 'target',
      maxInboundCallsPerPeer: 16,
      maxPayloadBytes: 1 << 20,
      dedupeWindowMs: 60_000,
      dedupeMaxEntries: limits.dedupeMaxEntries ?? 1000,
      dedupeMaxBytes: limits.dedupeMaxBytes ?? 1 << 20,
      log,
    },
    registry,
  )
  const call = (requestId: string, bytes: number): Promise<PeerResponseInit> =>
    inbound.handle(
      create(PeerRequestSchema, { requestId, method: 'echo', payload: { case: 'data', value: new Uint8Array(bytes).fill(7) } }),
      meta,
      new AbortController().signal,
    )
  const close = async (): Promise<void> => {
    stop.abort()
    await serving
  }
  return { inbound, runs, call, close }
}

function dataBytes(res: PeerResponseInit): number | undefined {
  return res.result?.case === 'data' ? res.result.value.byteLength : undefined
}

describe('inbound duplicate-request memory', () => {
  it('dedupe - a duplicate is answered from memory with the same payload; the handler runs once', async () => {
    const t = setup({})
    try {
      assert.equal(dataBytes(await t.call('r1', 100)), 100)
      const again = await t.call('r1', 100)
      assert.equal(dataBytes(again), 100)
      assert.equal(again.replayed, true)
      assert.equal(t.runs.get('r1'), 1)
      assert.equal(t.inbound.rememberedPayloadBytes, 100)
    } finally {
      await t.close()
    }
  })

  it('dedupe - over dedupeMaxBytes the oldest responses are dropped, but their duplicates still never run again', async () => {
    const t = setup({ dedupeMaxBytes: 2500 })
    try {
      for (const id of ['a', 'b', 'c', 'd']) assert.equal(dataBytes(await t.call(id, 1000)), 1000)
      // 4000 bytes answered, 2500 allowed: the two oldest lost their payload.
      assert.equal(t.inbound.rememberedPayloadBytes, 2000)
      assert.equal(t.inbound.stats.reduced, 2)
      const old = await t.call('a', 1000)
      assert.equal(old.result?.case, 'error')
      assert.equal(old.result?.case === 'error' ? old.result.value.code : undefined, Code.AlreadyExists)
      assert.match(old.result?.case === 'error' ? (old.result.value.message ?? '') : '', /already ran .*not run again/)
      assert.equal(dataBytes(await t.call('d', 1000)), 1000, 'a recent duplicate still gets its payload')
      for (const id of ['a', 'b', 'c', 'd']) assert.equal(t.runs.get(id), 1, `${id} ran once`)
    } finally {
      await t.close()
    }
  })

  it('dedupe - over dedupeMaxEntries the oldest ids are forgotten and their bytes released', async () => {
    const t = setup({ dedupeMaxEntries: 3 })
    try {
      for (let i = 0; i < 10; i++) await t.call(`r${i}`, 10)
      assert.equal(t.inbound.rememberedPayloadBytes, 30)
      await t.call('r9', 10)
      assert.equal(t.runs.get('r9'), 1, 'a remembered id is not run again')
      await t.call('r0', 10)
      assert.equal(t.runs.get('r0'), 2, 'a forgotten id runs again: the memory is bounded')
    } finally {
      await t.close()
    }
  })
})
