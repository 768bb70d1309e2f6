import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FakeClock } from '@stargate/shared/clock'
import { Code, StargateError } from '@stargate/shared/errors'
import { FailureHistory } from '../failure-history.ts'
import { type CircuitKnowledge, circuitCandidates, raceStaggered } from './circuits.ts'

const R1 = '12D3KooWR1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
const R2 = '12D3KooWR2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'
const R3 = '12D3KooWR3cccccccccccccccccccccccccccccccccccccccccc'
const R4 = '12D3KooWR4dddddddddddddddddddddddddddddddddddddddddd'
const PEER = '12D3KooWTargetddddddddddddddddddddddddddddddddddddd'
const OTHER = '12D3KooWOthereeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee'
const relay = (id: string, n: number) => ({ addr: `/ip4/198.18.0.${n}/tcp/4001/p2p/${id}`, peerId: id })
const circuit = (id: string, n: number) => `/ip4/198.18.0.${n}/tcp/4001/p2p/${id}/p2p-circuit/p2p/${PEER}`

function knowledge(k: Partial<CircuitKnowledge>): CircuitKnowledge {
  return { usable: [], unhealthy: () => false, announced: [], failedAtMs: () => undefined, ...k }
}

describe('circuit candidates', () => {
  it('relay selection - with nothing announced: our healthy relays, lowest RTT first, each as a circuit to the target', () => {
    const got = circuitCandidates(PEER, knowledge({ usable: [relay(R2, 2), relay(R1, 1)] }))
    assert.deepEqual(got, [
      { addr: circuit(R2, 2), relayPeerId: R2, coolingDown: false },
      { addr: circuit(R1, 1), relayPeerId: R1, coolingDown: false },
    ])
  })

  it('relay selection - announced and ours first, then announced and unknown, then ours unannounced, then announced but unhealthy', () => {
    const got = circuitCandidates(
      PEER,
      knowledge({
        usable: [relay(R3, 3), relay(R1, 1)],
        unhealthy: (id) => id === R4,
        // The target announces R4 (ours, failing its checks), R2 (unknown to us) and R1 (ours, healthy).
        announced: [circuit(R4, 4), `/ip4/198.18.0.2/tcp/4001/p2p/${R2}/p2p-circuit`, circuit(R1, 1), circuit(R1, 1)],
      }),
    )
    assert.deepEqual(
      got.map((c) => c.relayPeerId),
      [R1, R2, R3, R4],
    )
    assert.equal(got[1]?.addr, circuit(R2, 2), 'the target is appended when missing')
  })

  it('relay selection - circuits that failed toward the target go last, least recent failure first', () => {
    const failed = new Map([
      [R1, 5_000],
      [R2, 1_000],
    ])
    const got = circuitCandidates(
      PEER,
      knowledge({ usable: [relay(R1, 1), relay(R2, 2), relay(R3, 3)], failedAtMs: (id) => failed.get(id) }),
    )
    assert.deepEqual(
      got.map((c) => [c.relayPeerId, c.coolingDown]),
      [
        [R3, false],
        [R2, true],
        [R1, true],
      ],
    )
  })

  it('relay selection - no usable relay and nothing announced: no candidate', () => {
    assert.deepEqual(circuitCandidates(PEER, knowledge({})), [])
    const none = circuitCandidates(PEER, knowledge({ announced: ['/ip4/1.2.3.4/tcp/1/p2p-circuit', `/ip4/1.2.3.4/tcp/1/p2p/${R1}`] }))
    assert.deepEqual(none, [], 'an announced address naming no relay (or no circuit) is ignored')
  })
})

describe('circuit history', () => {
  it('cool-down - a failure through R toward X puts R last for X only, until the cool-down ends', async () => {
    const clock = new FakeClock()
    const history = new FailureHistory({ cooldownMs: 60_000, maxEntries: 100, clock })
    history.failed(PEER, R1)
    const order = (target: string) =>
      circuitCandidates(target, knowledge({ usable: [relay(R1, 1), relay(R2, 2)], failedAtMs: (r) => history.failedAtMs(target, r) })).map(
        (c) => c.relayPeerId,
      )
    assert.deepEqual(order(PEER), [R2, R1], 'R1 failed toward PEER: tried last for PEER')
    assert.deepEqual(order(OTHER), [R1, R2], 'R1 is still first for every other target')
    await clock.advance(59_999)
    assert.deepEqual(order(PEER), [R2, R1])
    await clock.advance(1)
    assert.deepEqual(order(PEER), [R1, R2], 'after the cool-down R1 is back in its place')
    assert.equal(history.size, 0, 'an expired failure is forgotten')
  })
})

/** A fake dial: opens after `ms` of fake time (or fails with `error`), unless its signal aborts first. */
interface FakeDial {
  ms: number
  error?: string
}

function fakeDials(clock: FakeClock, plan: Record<string, FakeDial>) {
  const startedAtMs: Record<string, number> = {}
  const aborted: string[] = []
  const dial = (c: string, signal: AbortSignal): Promise<string> => {
    startedAtMs[c] = clock.nowMs()
    const p = plan[c]!
    return new Promise((resolve, reject) => {
      const t = clock.setTimeout(() => (p.error != null ? reject(new Error(p.error)) : resolve(`conn-${c}`)), p.ms)
      signal.addEventListener('abort', () => {
        aborted.push(c)
        t.clear()
        reject(signal.reason)
      })
    })
  }
  return { dial, startedAtMs, aborted }
}

describe('circuit race', () => {
  it('race - the next circuit starts after the stagger; the first to open wins and the others are cancelled', async () => {
    const clock = new FakeClock()
    const t0 = clock.nowMs()
    // r1 hangs (its STOP never answered), r2 opens 100 ms after it starts, r3 would open too.
    const { dial, startedAtMs, aborted } = fakeDials(clock, { r1: { ms: 5_000 }, r2: { ms: 100 }, r3: { ms: 10 } })
    const race = raceStaggered(['r1', 'r2', 'r3'], { staggerMs: 300, signal: new AbortController().signal, clock, dial })
    await clock.advance(400)
    const won = await race
    assert.equal(won.candidate, 'r2')
    assert.equal(won.value, 'conn-r2')
    assert.deepEqual(won.started, ['r1', 'r2'])
    assert.deepEqual(
      Object.fromEntries(Object.entries(startedAtMs).map(([c, at]) => [c, at - t0])),
      { r1: 0, r2: 300 },
      'r3 never started: r2 opened before its turn',
    )
    assert.deepEqual(aborted, ['r1'], 'the hanging r1 is cancelled once r2 won')
    assert.equal(clock.pending, 0, 'no stagger timer left behind')
  })

  it('race - a failure starts the next circuit at once; every failure is reported', async () => {
    const clock = new FakeClock()
    const t0 = clock.nowMs()
    const { dial, startedAtMs } = fakeDials(clock, { r1: { ms: 20, error: 'NO_RESERVATION' }, r2: { ms: 50 } })
    const failures: string[] = []
    const race = raceStaggered(['r1', 'r2'], {
      staggerMs: 300,
      signal: new AbortController().signal,
      clock,
      dial,
      onFailure: (c, err) => failures.push(`${c}: ${(err as Error).message}`),
    })
    await clock.advance(100)
    assert.equal((await race).candidate, 'r2')
    assert.equal(startedAtMs.r2! - t0, 20, 'r2 started when r1 failed, not after the stagger')
    assert.deepEqual(failures, ['r1: NO_RESERVATION'])
  })

  it('race - a circuit that opens after the winner is released, not leaked', async () => {
    const clock = new FakeClock()
    const released: string[] = []
    // r2 ignores cancellation (a dial past the point of no return) and opens after r1 has won.
    const dial = (c: string): Promise<string> =>
      new Promise((resolve) => clock.setTimeout(() => resolve(`conn-${c}`), c === 'r1' ? 400 : 500))
    const race = raceStaggered(['r1', 'r2'], {
      staggerMs: 300,
      signal: new AbortController().signal,
      clock,
      dial,
      release: (v) => released.push(v),
    })
    await clock.advance(1_000)
    assert.equal((await race).candidate, 'r1')
    assert.deepEqual(released, ['conn-r2'])
  })

  it('race - when every circuit fails it rejects UNAVAILABLE; when the attempt ends first every dial is cancelled', async () => {
    const clock = new FakeClock()
    const failing = fakeDials(clock, { r1: { ms: 10, error: 'CONNECTION_FAILED' }, r2: { ms: 10, error: 'NO_RESERVATION' } })
    const all = raceStaggered(['r1', 'r2'], { staggerMs: 300, signal: new AbortController().signal, clock, dial: failing.dial })
    all.catch(() => {})
    await clock.advance(100)
    await assert.rejects(all, (err: unknown) => err instanceof StargateError && err.code === Code.Unavailable)

    const hanging = fakeDials(clock, { r1: { ms: 60_000 }, r2: { ms: 60_000 } })
    const attempt = new AbortController()
    const cut = raceStaggered(['r1', 'r2'], { staggerMs: 300, signal: attempt.signal, clock, dial: hanging.dial })
    cut.catch(() => {})
    await clock.advance(1_000)
    attempt.abort(new StargateError(Code.DeadlineExceeded, 'attempt timed out'))
    await assert.rejects(cut, (err: unknown) => err instanceof StargateError && err.code === Code.DeadlineExceeded)
    assert.deepEqual(hanging.aborted.sort(), ['r1', 'r2'])
  })
})
