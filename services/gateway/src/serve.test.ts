import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import { Code, StargateError } from '@stargate/shared/errors'
import { PeerRequestSchema } from '@stargate/shared/gen/envelope'
import { type InboundCall, ServeReplySchema, Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { ServeRegistry, ServeSession } from './serve.ts'

const log = createLogger('test', { level: 'silent' })
const meta = (deadlineAtMs = Date.now() + 10_000) => ({ callerPeerId: 'caller', tier: Tier.RELAY, deadlineAtMs })
const request = (method = 'echo', requestId = 'r1') =>
  create(PeerRequestSchema, { requestId, method, payload: { case: 'data', value: new Uint8Array([1, 2, 3]) } })

function session(...methods: string[]): ServeSession {
  const s = new ServeSession()
  for (const m of methods) s.methods.add(m)
  return s
}

/** The calls a session has been given so far (its outgoing queue, read without waiting). */
async function delivered(s: ServeSession, count: number): Promise<InboundCall[]> {
  const stop = new AbortController()
  const out: InboundCall[] = []
  for await (const msg of s.outgoing(stop.signal)) {
    if (msg.kind?.case === 'call') out.push(msg.kind.value as InboundCall)
    if (out.length === count) break
  }
  return out
}

describe('serve dispatch', () => {
  it('serve - a method goes to the least-loaded session serving it; equals take turns', () => {
    const registry = new ServeRegistry(log)
    const a = session('echo')
    const b = session('echo')
    const other = session('other')
    for (const s of [a, b, other]) registry.add(s)
    const picks = [registry.pick('echo'), registry.pick('echo'), registry.pick('echo'), registry.pick('echo')]
    assert.deepEqual(
      picks.map((p) => (p === a ? 'a' : p === b ? 'b' : '?')),
      ['a', 'b', 'a', 'b'],
    )
    // a has a call waiting: b is less loaded and wins every pick.
    void a.deliver(request(), meta(), new AbortController().signal).catch(() => {})
    assert.equal(registry.pick('echo'), b)
    assert.equal(registry.pick('echo'), b)
    assert.equal(registry.pick('nobody'), undefined)
    a.close()
  })

  it('serve - a delivered call carries the request, and the reply with its call id answers it', async () => {
    const s = session('echo')
    const answer = s.deliver(request('echo', 'req-7'), meta(), new AbortController().signal)
    const [call] = await delivered(s, 1)
    assert.equal(call?.method, 'echo')
    assert.equal(call?.requestId, 'req-7')
    assert.equal(call?.callerPeerId, 'caller')
    assert.equal(call?.tier, Tier.RELAY)
    s.reply(create(ServeReplySchema, { callId: 'not-a-call', result: { case: 'data', value: new Uint8Array([9]) } }))
    s.reply(create(ServeReplySchema, { callId: call?.callId ?? '', result: { case: 'data', value: new Uint8Array([4]) } }))
    assert.deepEqual(await answer, { case: 'data', value: new Uint8Array([4]) })
    assert.equal(s.inflight, 0)
  })

  it("serve - a handler's error status reaches the caller as is; an invalid code becomes UNKNOWN", async () => {
    const s = session('echo')
    const first = s.deliver(request(), meta(), new AbortController().signal)
    const second = s.deliver(request('echo', 'r2'), meta(), new AbortController().signal)
    const [c1, c2] = await delivered(s, 2)
    s.reply(
      create(ServeReplySchema, { callId: c1?.callId ?? '', result: { case: 'error', value: { code: Code.NotFound, message: 'nope' } } }),
    )
    s.reply(create(ServeReplySchema, { callId: c2?.callId ?? '', result: { case: 'error', value: { code: 99, message: '' } } }))
    await assert.rejects(first, (e: unknown) => e instanceof StargateError && e.code === Code.NotFound && e.rawMessage === 'nope')
    await assert.rejects(second, (e: unknown) => e instanceof StargateError && e.code === Code.Unknown)
  })

  it('serve - a call not answered before its deadline ends DEADLINE_EXCEEDED; one cancelled ends with its signal', async () => {
    const s = session('echo')
    const late = s.deliver(request(), meta(Date.now() + 50), new AbortController().signal)
    await assert.rejects(late, (e: unknown) => e instanceof StargateError && e.code === Code.DeadlineExceeded)
    const ctl = new AbortController()
    const cancelled = s.deliver(request('echo', 'r2'), meta(), ctl.signal)
    ctl.abort(new StargateError(Code.Canceled, 'caller cancelled the call'))
    await assert.rejects(cancelled, (e: unknown) => e instanceof StargateError && e.code === Code.Canceled)
    assert.equal(s.inflight, 0)
  })

  it('serve - a session that goes away fails its waiting calls with UNAVAILABLE and takes no more', async () => {
    const registry = new ServeRegistry(log)
    const s = session('echo')
    registry.add(s)
    const waiting = s.deliver(request(), meta(), new AbortController().signal)
    registry.remove(s)
    s.close()
    await assert.rejects(waiting, (e: unknown) => e instanceof StargateError && e.code === Code.Unavailable)
    await assert.rejects(s.deliver(request(), meta(), new AbortController().signal), /serving client went away/)
    assert.equal(registry.pick('echo'), undefined)
  })

  it('serve - methods and capabilities are the union over open sessions; changes are announced', () => {
    let changes = 0
    const registry = new ServeRegistry(log, () => changes++)
    const a = session('b.two', 'a.one')
    a.capabilities.add('gpu')
    const b = session('a.one')
    registry.add(a)
    registry.add(b)
    assert.deepEqual(registry.methods(), ['a.one', 'b.two'])
    assert.deepEqual(registry.capabilities(), ['gpu'])
    registry.remove(a)
    assert.deepEqual(registry.methods(), ['a.one'])
    assert.equal(changes, 3)
  })
})
