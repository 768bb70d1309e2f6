import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, toBinary } from '@bufbuild/protobuf'
import { durationFromMs } from '@bufbuild/protobuf/wkt'
import { FakeClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import { PeerRequestSchema, type PeerResponse, PeerResponseSchema } from '@stargate/shared/gen/envelope'
import { AttemptOutcome, CallRequestSchema, Tier } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import { type AttemptInit, final, Router, type RouterOptions } from './router.ts'
import type { PeerRequestInit, Purpose, TierLink, TierTransport } from './tiers/tier.ts'

const log = createLogger('test', { level: 'silent' })
const PEER = 'target-peer'
const SELF = 'self-peer'

/** How a fake tier behaves on its next connects and sends. */
interface Behaviour {
  /** Skip the tier with this reason. */
  unavailable?: string
  /** Skip the tier with this reason for tunnelled streams only. */
  noStreams?: string
  /** Connecting takes this long (fake time)... */
  connectMs?: number
  /** ...and then fails with this message instead of connecting. */
  connectError?: string
  /** What a send returns (default: an echo of the method as data); throw to fail the send. */
  send?: (req: PeerRequestInit) => PeerResponse
  /** Whether the link of the n-th connect (0-based) was reused from the pool (default: fresh). */
  reused?: boolean[]
}

/** A tier driven by a fake clock; it records when each connect started. */
class FakeTier implements TierTransport {
  readonly connectsAtMs: number[] = []
  readonly sends: PeerRequestInit[] = []
  readonly tier: Tier
  behaviour: Behaviour = {}
  private readonly clock: FakeClock

  constructor(tier: Tier, clock: FakeClock) {
    this.tier = tier
    this.clock = clock
  }

  async unavailableReason(_peerId: string, purpose: Purpose): Promise<string | undefined> {
    return this.behaviour.unavailable ?? (purpose === 'stream' ? this.behaviour.noStreams : undefined)
  }

  connect(_peerId: string, signal: AbortSignal): Promise<TierLink> {
    this.connectsAtMs.push(this.clock.nowMs())
    const b = this.behaviour
    return new Promise((resolve, reject) => {
      const reused = b.reused?.[this.connectsAtMs.length - 1] === true
      const timer = this.clock.setTimeout(() => {
        signal.removeEventListener('abort', onAbort)
        if (b.connectError != null) reject(new StargateError(Code.Unavailable, b.connectError))
        else resolve(this.link(reused))
      }, b.connectMs ?? 0)
      const onAbort = (): void => {
        timer.clear()
        reject(StargateError.from(signal.reason, Code.Canceled))
      }
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  private link(reused: boolean): TierLink {
    return {
      via: `fake-${this.tier}`,
      reused,
      send: async (req) => {
        this.sends.push(req)
        const send =
          this.behaviour.send ?? ((r) => create(PeerResponseSchema, { result: { case: 'data', value: Buffer.from(r.method ?? '') } }))
        return send(req)
      },
    }
  }
}

function setup(overrides: Partial<RouterOptions> = {}, random = () => 0) {
  const clock = new FakeClock()
  const direct = new FakeTier(Tier.DIRECT, clock)
  const relay = new FakeTier(Tier.RELAY, clock)
  const nats = new FakeTier(Tier.NATS, clock)
  const loopback = new FakeTier(Tier.LOCAL, clock)
  const outcomes: Array<{ ok: boolean; tier: Tier }> = []
  const router = new Router(
    {
      selfPeerId: SELF,
      attemptTimeoutMs: 5_000,
      maxRetries: 3,
      backoffFactor: 2,
      backoffBaseMs: 2_000,
      backoffJitter: 0.2,
      tierStaggerMs: 250,
      tierCooldownMs: 60_000,
      tierHistoryMaxEntries: 100,
      log,
      clock,
      random,
      ...overrides,
    },
    {
      tiers: [direct, relay, nats],
      loopback,
      metrics: { record: (_peer, o) => outcomes.push({ ok: o.ok, tier: o.tier }) },
    },
  )
  const call = (peerId = PEER, timeoutMs = 30_000, options = {}) =>
    router.call(router.plan(create(CallRequestSchema, { peerId, method: 'echo', options }), timeoutMs), new AbortController().signal)
  return { clock, router, direct, relay, nats, loopback, outcomes, call }
}

/** Runs fake time until the promise settles (or the budget is spent); returns how it settled. */
async function drive<T>(clock: FakeClock, p: Promise<T>, budgetMs = 120_000, stepMs = 10): Promise<T> {
  let settled = false
  p.then(
    () => (settled = true),
    () => (settled = true),
  )
  for (let spent = 0; !settled && spent < budgetMs; spent += stepMs) await clock.advance(stepMs)
  assert.ok(settled, `still pending after ${budgetMs} ms of fake time`)
  return p
}

function summary(attempts: AttemptInit[]): string[] {
  const names: Record<number, string> = { [Tier.DIRECT]: 'direct', [Tier.RELAY]: 'relay', [Tier.NATS]: 'nats', [Tier.LOCAL]: 'local' }
  return attempts.map((a) => `${a.round}:${names[a.tier ?? 0]}:${AttemptOutcome[a.outcome ?? 0]}`)
}

describe('router', () => {
  it('router - the next tier starts when the current one has not connected after the stagger', async () => {
    const { clock, direct, relay, nats, call } = setup()
    direct.behaviour = { connectMs: 10_000 } // silently dropped: would connect only after the attempt timeout
    relay.behaviour = { connectMs: 40 }
    nats.behaviour = { connectMs: 40 }
    const t0 = clock.nowMs()
    const res = await drive(clock, call())
    assert.equal(res.tier, Tier.RELAY)
    assert.deepEqual(direct.connectsAtMs, [t0])
    assert.deepEqual(relay.connectsAtMs, [t0 + 250], 'relay launched exactly one stagger after direct')
    assert.deepEqual(nats.connectsAtMs, [], 'NATS never launched: the relay connected before its stagger')
    assert.deepEqual(summary(res.attempts ?? []), ['0:direct:CANCELLED', '0:relay:SUCCESS'])
    assert.match(res.attempts?.[0]?.reason ?? '', /relay connected first/)
  })

  it('router - a tier that fails starts the next one at once, without waiting for the stagger', async () => {
    const { clock, direct, relay, call } = setup()
    direct.behaviour = { connectMs: 10, connectError: 'connection refused' }
    relay.behaviour = { connectMs: 10 }
    const t0 = clock.nowMs()
    const res = await drive(clock, call(), 5_000, 5)
    assert.equal(res.tier, Tier.RELAY)
    assert.deepEqual(relay.connectsAtMs, [t0 + 10])
    assert.deepEqual(summary(res.attempts ?? []), ['0:direct:FAILED', '0:relay:SUCCESS'])
    assert.equal(res.attempts?.[0]?.reason, 'connection refused')
  })

  it('router - a failed tier cools down: skipped with its reason and probed in the background; a good probe ends it', async () => {
    const { clock, direct, relay, call } = setup()
    direct.behaviour = { connectMs: 10, connectError: 'refused' }
    relay.behaviour = { connectMs: 10 }
    await drive(clock, call())
    // Within the cool-down: direct is skipped (and probed), relay serves.
    direct.behaviour = { connectMs: 10 }
    const second = await drive(clock, call())
    assert.equal(second.tier, Tier.RELAY)
    assert.deepEqual(summary(second.attempts ?? []), ['0:direct:SKIPPED', '0:relay:SUCCESS'])
    assert.match(second.attempts?.[0]?.reason ?? '', /cooling down \(probing in the background\)/)
    assert.equal(direct.connectsAtMs.length, 2, 'the skipped tier was probed once in the background')
    await clock.advance(100)
    // The probe connected: the cool-down is over and direct serves again.
    const third = await drive(clock, call())
    assert.equal(third.tier, Tier.DIRECT)
  })

  it('router - a cool-down that is not probed back ends after tierCooldownMs', async () => {
    const { clock, direct, relay, call } = setup({ tierCooldownMs: 5_000 })
    direct.behaviour = { connectMs: 10, connectError: 'refused' }
    relay.behaviour = { connectMs: 10 }
    await drive(clock, call())
    await clock.advance(2_000)
    const during = await drive(clock, call())
    assert.equal(summary(during.attempts ?? [])[0], '0:direct:SKIPPED')
    await clock.advance(5_000)
    direct.behaviour = { connectMs: 1 }
    const after = await drive(clock, call())
    assert.equal(after.tier, Tier.DIRECT)
  })

  it('router - a success on a cooled-down tier ends its cool-down', async () => {
    const { clock, direct, relay, call } = setup()
    direct.behaviour = { connectMs: 10, connectError: 'refused' }
    relay.behaviour = { connectMs: 10 }
    await drive(clock, call())
    // Direct is cooling down; allowed alone it is still tried (nothing else can be), and it works now.
    direct.behaviour = { connectMs: 10 }
    const alone = await drive(clock, call(PEER, 30_000, { allowedTiers: [Tier.DIRECT] }))
    assert.equal(alone.tier, Tier.DIRECT)
    assert.equal(direct.connectsAtMs.length, 2, 'no background probe: the success itself ended the cool-down')
    const next = await drive(clock, call())
    assert.deepEqual(summary(next.attempts ?? []), ['0:direct:SUCCESS'])
  })

  it('router - cooled-down tiers are skipped in the first round only: a retry round tries them first again', async () => {
    const { clock, direct, relay, nats, call } = setup()
    direct.behaviour = { connectMs: 10, connectError: 'refused' }
    relay.behaviour = { connectMs: 10, connectError: 'no reservation' }
    nats.behaviour = { unavailable: 'NATS is not connected' }
    const routed = call()
    // Round 0 fails on both libp2p tiers (both now cool down); the router sleeps its 2 s backoff.
    await clock.advance(100)
    assert.equal(direct.connectsAtMs.length, 1)
    direct.behaviour = { connectMs: 10 }
    nats.behaviour = { connectMs: 1_000 }
    const res = await drive(clock, routed)
    assert.equal(res.tier, Tier.DIRECT)
    assert.deepEqual(
      summary(res.attempts ?? []).filter((a) => a.startsWith('1:')),
      ['1:direct:SUCCESS'],
      'round 1 skipped nothing',
    )
  })

  it('router - a failure toward a peer is remembered for at most tierHistoryMaxEntries (peer, tier) pairs, oldest forgotten first', async () => {
    const { clock, router, direct, relay, call } = setup({ tierHistoryMaxEntries: 2 })
    direct.behaviour = { connectMs: 10, connectError: 'refused' }
    relay.behaviour = { connectMs: 10 }
    for (const peer of ['p1', 'p2', 'p3']) await drive(clock, call(peer))
    assert.deepEqual(
      ['p1', 'p2', 'p3'].map((p) => router.failing(p)),
      [false, true, true],
    )
    direct.behaviour = { connectMs: 10 }
    assert.equal((await drive(clock, call('p1'))).tier, Tier.DIRECT, 'p1 was forgotten: direct is tried first')
    assert.equal((await drive(clock, call('p3'))).tier, Tier.RELAY, 'p3 still cools down')
  })

  it('router - retries wait base × factor^round plus jitter within its bound', async () => {
    for (const [random, jitter] of [
      [() => 0, 0],
      [() => 0.999_999, 0.2],
    ] as const) {
      const { clock, direct, relay, nats, call } = setup({}, random)
      for (const t of [direct, relay, nats]) t.behaviour = { connectError: 'down' }
      const t0 = clock.nowMs()
      await assert.rejects(
        drive(clock, call(PEER, 60_000)),
        (err: unknown) => err instanceof StargateError && err.code === Code.Unavailable,
      )
      const gaps = direct.connectsAtMs.map((t, i) => t - (i === 0 ? t0 : direct.connectsAtMs[i - 1]!))
      const expected = [0, 2_000, 4_000, 8_000].map((ms) => Math.round(ms * (1 + jitter)))
      assert.equal(direct.connectsAtMs.length, 4, 'first pass + 3 retries')
      for (let i = 0; i < 4; i++) assert.ok(Math.abs(gaps[i]! - expected[i]!) <= 1, `gap ${i}: ${gaps[i]} ms, expected ${expected[i]} ms`)
    }
  })

  it('router - the deadline cuts retries short and the error names every tier', async () => {
    const { clock, direct, relay, nats, call } = setup()
    direct.behaviour = { connectError: 'direct down' }
    relay.behaviour = { connectError: 'relay down' }
    nats.behaviour = { unavailable: 'NATS is not configured (--nats)' }
    const t0 = clock.nowMs()
    await assert.rejects(drive(clock, call(PEER, 5_000)), (err: unknown) => {
      assert.ok(err instanceof StargateError)
      assert.equal(err.code, Code.Unavailable)
      assert.match(err.rawMessage, /direct: direct down; relay: relay down; nats: NATS is not configured/)
      return true
    })
    // Rounds at 0 and 2 s; the next would start at 6 s, past the 5 s deadline, so it is not tried.
    assert.deepEqual(
      direct.connectsAtMs.map((t) => t - t0),
      [0, 2_000],
    )
    assert.ok(clock.nowMs() - t0 < 5_000, 'gave up before the deadline instead of sleeping into it')
  })

  it('router - an attempt that outlives the deadline ends the call with DEADLINE_EXCEEDED', async () => {
    const { clock, direct, relay, nats, call } = setup()
    for (const t of [direct, relay, nats]) t.behaviour = { connectMs: 60_000 }
    const t0 = clock.nowMs()
    await assert.rejects(
      drive(clock, call(PEER, 3_000)),
      (err: unknown) => err instanceof StargateError && err.code === Code.DeadlineExceeded,
    )
    assert.ok(clock.nowMs() - t0 <= 3_010)
  })

  it('router - a remote error is returned with its own status and never retried', async () => {
    const { clock, direct, call, outcomes } = setup()
    direct.behaviour = {
      send: () => create(PeerResponseSchema, { result: { case: 'error', value: { code: Code.NotFound, message: 'no such thing' } } }),
    }
    await assert.rejects(drive(clock, call()), (err: unknown) => err instanceof StargateError && err.code === Code.NotFound)
    assert.equal(direct.sends.length, 1)
    assert.equal(direct.connectsAtMs.length, 1)
    assert.deepEqual(outcomes, [{ ok: false, tier: Tier.DIRECT }])
  })

  it('router - a send that fails in transport moves to the next tier in the same round', async () => {
    const { clock, direct, relay, call } = setup()
    direct.behaviour = {
      send: () => {
        throw new StargateError(Code.Unavailable, 'stream reset')
      },
    }
    relay.behaviour = { connectMs: 5 }
    const res = await drive(clock, call())
    assert.equal(res.tier, Tier.RELAY)
    assert.deepEqual(summary(res.attempts ?? []), ['0:direct:FAILED', '0:relay:SUCCESS'])
    // Both carried the same request id: the callee's duplicate memory makes the second delivery safe.
    assert.equal(direct.sends[0]?.requestId, relay.sends[0]?.requestId)
  })

  it('router - a pooled link whose send fails is replaced at once by a fresh connect on the same tier, in the same round', async () => {
    const { clock, relay, call } = setup()
    let sends = 0
    relay.behaviour = {
      connectMs: 5,
      reused: [true],
      send: (req) => {
        // The pooled circuit's far side went silent: its liveness probe failed the call.
        if (++sends === 1) throw new StargateError(Code.Unavailable, 'connection to the peer stopped answering')
        return create(PeerResponseSchema, { result: { case: 'data', value: Buffer.from(req.method ?? '') } })
      },
    }
    const t0 = clock.nowMs()
    const res = await drive(clock, call(PEER, 30_000, { allowedTiers: [Tier.RELAY] }), 30_000, 5)
    assert.equal(res.tier, Tier.RELAY)
    assert.deepEqual(summary(res.attempts ?? []), ['0:relay:FAILED', '0:relay:SUCCESS'])
    assert.deepEqual(
      relay.connectsAtMs.map((t) => t - t0),
      [0, 5],
      'the fresh connect started when the pooled link failed, not after a backoff',
    )
    // The resend carries the same request id: the callee answers it from memory if the first one arrived.
    assert.equal(relay.sends[0]?.requestId, relay.sends[1]?.requestId)
  })

  it('router - a fresh link that fails gets no second connect in its round (only a pooled one does, once)', async () => {
    const { clock, relay, call } = setup()
    relay.behaviour = {
      connectMs: 5,
      reused: [true, false],
      send: () => {
        throw new StargateError(Code.Unavailable, 'stream reset')
      },
    }
    const t0 = clock.nowMs()
    await assert.rejects(drive(clock, call(PEER, 3_000, { allowedTiers: [Tier.RELAY] }), 30_000, 5))
    // Round 0: the pooled link and one fresh connect; round 1 after the 2 s backoff; no round 2 before the deadline.
    assert.deepEqual(
      relay.connectsAtMs.map((t) => t - t0),
      [0, 5, 2_010],
    )
  })

  it('router - a failure marked final is never tried on another tier', async () => {
    const { clock, router, direct, relay } = setup()
    const plan = router.defaultPlan(PEER, 'stream', '/pkg.Svc/Stream', 'r1', clock.nowMs() + 10_000)
    const routed = router.run(
      plan,
      { run: () => Promise.reject(final(new StargateError(Code.Unavailable, 'link broke mid-stream'))) },
      new AbortController().signal,
    )
    await assert.rejects(drive(clock, routed), (err: unknown) => err instanceof StargateError && err.code === Code.Unavailable)
    assert.equal(direct.connectsAtMs.length, 1)
    assert.equal(relay.connectsAtMs.length, 0)
  })

  it('router - an exchange error that is not a transport failure ends the exchange as is: no other tier, no retry', async () => {
    const { clock, router, direct, relay } = setup()
    const plan = router.defaultPlan(PEER, 'stream', '/pkg.Svc/Stream', 'r1', clock.nowMs() + 10_000)
    const routed = router.run(
      plan,
      { run: () => Promise.reject(new StargateError(Code.PermissionDenied, 'caller not allowed')) },
      new AbortController().signal,
    )
    await assert.rejects(drive(clock, routed), (err: unknown) => err instanceof StargateError && err.code === Code.PermissionDenied)
    assert.equal(direct.connectsAtMs.length, 1)
    assert.equal(relay.connectsAtMs.length, 0)
    assert.equal(router.failing(PEER), false, 'the tier is not cooled down for it')
  })

  it('router - a stream skips a tier that carries no streams, with its reason, and runs without a deadline', async () => {
    const { clock, router, direct, relay, nats } = setup()
    direct.behaviour = { connectError: 'refused' }
    relay.behaviour = { connectError: 'no reservation' }
    nats.behaviour = { noStreams: 'NATS max_payload of 1024 bytes is below the 65536 bytes tunnelled streams need' }
    const plan = { ...router.defaultPlan(PEER, 'stream', '/pkg.Svc/Stream', 'r1', Number.POSITIVE_INFINITY), maxRetries: 0 }
    const routed = router.run(plan, { run: async () => 'ok' }, new AbortController().signal)
    await assert.rejects(
      drive(clock, routed),
      (err: unknown) =>
        err instanceof StargateError &&
        err.code === Code.Unavailable &&
        err.rawMessage.includes('nats: NATS max_payload of 1024 bytes is below the 65536 bytes tunnelled streams need'),
    )
    assert.equal(nats.connectsAtMs.length, 0, 'the NATS tier is skipped, not tried')
    // A Call still uses it.
    const res = await drive(clock, router.run({ ...plan, purpose: 'call' }, { run: async () => 'ok' }, new AbortController().signal))
    assert.equal(res.tier, Tier.NATS)
    assert.equal(clock.pending, 0, 'no deadline timer is left behind')
  })

  it('router - a call to this gateway itself goes through the loopback tier only, with a timeout', async () => {
    const { clock, direct, loopback, call } = setup()
    const res = await drive(clock, call(SELF, 7_000))
    assert.equal(res.tier, Tier.LOCAL)
    assert.equal(direct.connectsAtMs.length, 0)
    assert.equal(loopback.sends.length, 1)
    const timeout = loopback.sends[0]?.timeout
    assert.equal(Number(timeout?.seconds), 7, 'the request carries the time left')
  })

  it('router - a fractional time left (grpc-timeout in u or n) goes out as whole ms, rounded up, and encodes', async () => {
    const { clock, direct, call } = setup()
    const res = await drive(clock, call(PEER, 1_500.0004))
    assert.equal(res.tier, Tier.DIRECT)
    const sent = direct.sends[0]
    assert.ok(sent != null)
    assert.deepEqual([Number(sent.timeout?.seconds), sent.timeout?.nanos], [1, 501_000_000])
    assert.doesNotThrow(
      () => toBinary(PeerRequestSchema, create(PeerRequestSchema, sent)),
      'a Duration with fractional nanos cannot be encoded',
    )
  })

  it('router - allowed_tiers restricts the tiers tried', async () => {
    const { clock, direct, relay, nats, call } = setup()
    nats.behaviour = { connectMs: 1 }
    const res = await drive(clock, call(PEER, 10_000, { allowedTiers: [Tier.NATS] }))
    assert.equal(res.tier, Tier.NATS)
    assert.equal(direct.connectsAtMs.length + relay.connectsAtMs.length, 0)
  })

  it('router - bad per-call options are INVALID_ARGUMENT naming the option and its bound', () => {
    const { router } = setup()
    const plan = (options: object) => router.plan(create(CallRequestSchema, { peerId: PEER, method: 'm', options }), 1_000)
    assert.throws(() => plan({ backoffFactor: 0.5 }), /options.backoff_factor must be between 1 and 100, got 0.5/)
    assert.throws(() => plan({ maxRetries: 101 }), /options.max_retries must be at most 100, got 101/)
    assert.throws(() => plan({ allowedTiers: [Tier.LOCAL] }), /options.allowed_tiers has unknown tier 4/)
    const ok = plan({ backoffBase: durationFromMs(1_500), attemptTimeout: durationFromMs(700), maxRetries: 0 })
    assert.equal(ok.backoffBaseMs, 1_500)
    assert.equal(ok.attemptTimeoutMs, 700)
    assert.equal(ok.maxRetries, 0)
  })
})
