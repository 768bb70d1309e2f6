import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import type { ApiPrincipal } from '@stargate/shared/auth'
import { FakeClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import { PeerRequestSchema } from '@stargate/shared/gen/envelope'
import { type InboundCall, ServeReplySchema, Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { parseMethodPattern } from '@stargate/shared/method-pattern'
import { ServeRegistry, type ServeSession } from './serve.ts'

const log = createLogger('test', { level: 'silent' })
const HOUR_MS = 3600 * 1000
const meta = (deadlineAtMs = Date.now() + 10_000) => ({ callerPeerId: 'caller', tier: Tier.RELAY, deadlineAtMs })
const request = (method = 'echo', requestId = 'r1') =>
  create(PeerRequestSchema, { requestId, method, payload: { case: 'data', value: new Uint8Array([1, 2, 3]) } })

/** A session of a fresh registry (or of the given one) serving methods, registered as shared. */
function session(...methods: string[]): ServeSession {
  return serving(new ServeRegistry(log), methods)
}

function serving(registry: ServeRegistry, methods: string[], principal?: ApiPrincipal, shared = true): ServeSession {
  const s = registry.open(principal)
  registry.register(s, { methods, capabilities: [], shared })
  return s
}

function rejectsWith(code: Code, re?: RegExp) {
  return (e: unknown): boolean =>
    e instanceof StargateError && e.code === code && (re == null || re.test(e.rawMessage)) ? true : assert.fail(String(e))
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
    const a = serving(registry, ['echo'])
    const b = serving(registry, ['echo'])
    serving(registry, ['other'])
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

  it('serve - a call with a 720-hour deadline waits 720 hours on the clock, not less', async () => {
    const clock = new FakeClock()
    const s = serving(new ServeRegistry(log, () => {}, undefined, clock), ['echo'])
    const outcomes: unknown[] = []
    s.deliver(request(), meta(clock.nowMs() + 720 * HOUR_MS), new AbortController().signal).then(
      (r) => outcomes.push(r),
      (e: unknown) => outcomes.push(e),
    )
    await clock.advance(720 * HOUR_MS - 1)
    assert.equal(outcomes.length, 0, `ended before its deadline: ${String(outcomes[0])}`)
    assert.equal(s.inflight, 1)
    await clock.advance(1)
    assert.ok(outcomes[0] instanceof StargateError && outcomes[0].code === Code.DeadlineExceeded, String(outcomes[0]))
    assert.equal(s.inflight, 0)
  })

  it('serve - a session that goes away fails its waiting calls with UNAVAILABLE and takes no more', async () => {
    const registry = new ServeRegistry(log)
    const s = serving(registry, ['echo'])
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
    const a = registry.open()
    registry.register(a, { methods: ['b.two', 'a.one'], capabilities: ['gpu'], shared: true })
    serving(registry, ['a.one'])
    assert.deepEqual(registry.methods(), ['a.one', 'b.two'])
    assert.deepEqual(registry.capabilities(), ['gpu'])
    registry.remove(a)
    assert.deepEqual(registry.methods(), ['a.one'])
    assert.equal(changes, 3)
  })

  it('serve queue - a full queue refuses the new call with RESOURCE_EXHAUSTED (by calls and by bytes); a call always fits an empty queue', async () => {
    const registry = new ServeRegistry(log, () => {}, { maxQueuedCalls: 2, maxQueuedBytes: 10 })
    const s = serving(registry, ['echo'])
    const signal = new AbortController().signal
    const big = create(PeerRequestSchema, { requestId: 'big', method: 'echo', payload: { case: 'data', value: new Uint8Array(25) } })
    const first = s.deliver(big, meta(), signal)
    assert.equal(s.queuedBytes, 25)
    // bytes: the queue holds 25 of 10 bytes (one call always fits), so even a 1-byte call is refused
    const small = create(PeerRequestSchema, { requestId: 's', method: 'echo', payload: { case: 'data', value: new Uint8Array(1) } })
    await assert.rejects(s.deliver(small, meta(), signal), rejectsWith(Code.ResourceExhausted, /--serve-queue-max-bytes 10/))
    assert.equal(registry.stats.queueFull, 1)
    // the client takes the big call: the queue is empty again
    await delivered(s, 1)
    assert.equal(s.queuedCalls, 0)
    assert.equal(s.queuedBytes, 0)
    const q1 = s.deliver(request('echo', 'q1'), meta(), signal)
    const q2 = s.deliver(request('echo', 'q2'), meta(), signal)
    await assert.rejects(s.deliver(request('echo', 'q3'), meta(), signal), rejectsWith(Code.ResourceExhausted, /--serve-queue-max-calls 2/))
    assert.equal(registry.stats.queueFull, 2)
    assert.deepEqual(registry.queued(), { calls: 2, bytes: 6 })
    s.close()
    await Promise.allSettled([first, q1, q2])
    assert.deepEqual(registry.queued(), { calls: 0, bytes: 0 })
  })

  it('serve queue - a call that times out or is cancelled while queued leaves the queue at once; the client never sees it', async () => {
    const registry = new ServeRegistry(log, () => {}, { maxQueuedCalls: 1, maxQueuedBytes: 1 << 20 })
    const s = serving(registry, ['echo'])
    const late = s.deliver(request('echo', 'late'), meta(Date.now() + 30), new AbortController().signal)
    assert.equal(s.queuedCalls, 1)
    await assert.rejects(late, rejectsWith(Code.DeadlineExceeded))
    assert.deepEqual(registry.queued(), { calls: 0, bytes: 0 })
    const ctl = new AbortController()
    const cancelled = s.deliver(request('echo', 'cancelled'), meta(), ctl.signal)
    ctl.abort(new StargateError(Code.Canceled, 'caller cancelled the call'))
    await assert.rejects(cancelled, rejectsWith(Code.Canceled))
    assert.deepEqual(registry.queued(), { calls: 0, bytes: 0 })
    // the queue (limit 1) has room again, and the next message the client gets is the live call
    const live = s.deliver(request('echo', 'live'), meta(), new AbortController().signal)
    const [call] = await delivered(s, 1)
    assert.equal(call?.requestId, 'live')
    s.close()
    await assert.rejects(live)
  })

  it('serve claims - another client cannot join a method unless the first registration shared it or it has the same token', () => {
    const registry = new ServeRegistry(log)
    const alice: ApiPrincipal = { id: 'alice' }
    const bob: ApiPrincipal = { id: 'bob' }
    const first = serving(registry, ['db.delete'], alice, false)
    // anonymous (no API auth) and another token are refused; the same token joins
    assert.throws(
      () => serving(registry, ['db.delete'], undefined, true),
      rejectsWith(Code.AlreadyExists, /already served by another Serve client/),
    )
    assert.throws(() => serving(registry, ['db.delete'], bob, true), rejectsWith(Code.AlreadyExists))
    const again = serving(registry, ['db.delete'], alice, false)
    // all or nothing: a refused registration registers none of its methods
    const mixed = registry.open(bob)
    assert.throws(() => registry.register(mixed, { methods: ['fresh', 'db.delete'], capabilities: [], shared: false }))
    assert.equal(mixed.methods.size, 0)
    assert.deepEqual(registry.methods(), ['db.delete'])
    // a shared first registration lets anyone join
    serving(registry, ['open.echo'], bob, true)
    serving(registry, ['open.echo'], undefined, false)
    // once every session of a method is gone, the next registration claims it afresh
    registry.remove(first)
    assert.throws(() => serving(registry, ['db.delete'], bob, false), rejectsWith(Code.AlreadyExists), 'alice still serves it')
    registry.remove(again)
    serving(registry, ['db.delete'], bob, false)
    assert.throws(() => serving(registry, ['db.delete'], alice, false), rejectsWith(Code.AlreadyExists))
  })

  it('serve claims - a scoped token registers only the methods its scope allows (PERMISSION_DENIED otherwise)', () => {
    const registry = new ServeRegistry(log)
    const scoped: ApiPrincipal = { id: 'scoped', serve: [parseMethodPattern('a.*')], call: [] }
    serving(registry, ['a.x', 'a.y.z'], scoped)
    assert.throws(
      () => serving(registry, ['b.x'], scoped),
      rejectsWith(Code.PermissionDenied, /may not serve "b\.x": its scope is methods=serve:a\.\*/),
    )
    assert.throws(() => serving(registry, ['a'], scoped), rejectsWith(Code.PermissionDenied))
    assert.throws(() => serving(registry, ['ping']), rejectsWith(Code.InvalidArgument))
  })
})
