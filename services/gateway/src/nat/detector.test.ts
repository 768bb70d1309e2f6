import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { NatType } from '@stargate/shared/gen/gateway'
import { createLogger } from '@stargate/shared/log'
import type { StunAddress } from '@stargate/shared/stun'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import { createNatDetector, NatDetector, type NatStatusInit, observersFromRelays, parseObserver } from './detector.ts'
import type { ProbeResult, StunObserver } from './stun-client.ts'

const log = createLogger('test', { level: 'silent' })
const OBSERVERS: StunObserver[] = [
  { host: '198.18.0.10', port: 3478 },
  { host: '198.18.0.11', port: 3478 },
]

/** A probe whose answers the test sets; resolves each call through `next`. */
function scriptedProbe(mappings: () => Array<StunAddress | undefined>) {
  let calls = 0
  const probe = async (observers: StunObserver[]): Promise<ProbeResult> => {
    calls++
    const m = mappings()
    return {
      localPort: 40000,
      observations: observers.map((o, i) => ({ observer: `${o.host}:${o.port}`, ...(m[i] != null ? { mapped: m[i] } : {}) })),
    }
  }
  return { probe, calls: () => calls }
}

function nextChange(d: NatDetector): Promise<NatStatusInit> {
  return new Promise((resolve) => {
    const off = d.onChange((s) => {
      off()
      resolve(s)
    })
  })
}

describe('nat detector', () => {
  it('nat detector - reports UNSPECIFIED before the first run, then the classified status', async () => {
    const { probe } = scriptedProbe(() => [
      { address: '198.18.1.1', port: 1 },
      { address: '198.18.1.1', port: 2 },
    ])
    const d = new NatDetector({
      observers: OBSERVERS,
      intervalMs: 60_000,
      addrPollMs: 60_000,
      timeoutMs: 100,
      retransmitMs: 10,
      log,
      probe,
    })
    assert.equal(d.status().natType, NatType.UNSPECIFIED)
    assert.equal(d.status().detectedAt, undefined)
    const changed = nextChange(d)
    d.start()
    const s = await changed
    await d.stop()
    assert.equal(s.natType, NatType.SYMMETRIC)
    assert.equal(s.requiresRelay, true)
    assert.deepEqual(s.publicAddrs, ['198.18.1.1:1', '198.18.1.1:2'])
    assert.ok(s.detectedAt != null)
    assert.deepEqual(d.status().natType, NatType.SYMMETRIC)
  })

  it('nat detector - re-runs when the local addresses change', async () => {
    let local = ['100.64.1.2']
    let mapped: StunAddress = { address: '198.18.1.1', port: 5 }
    const { probe, calls } = scriptedProbe(() => [mapped, mapped])
    const d = new NatDetector({
      observers: OBSERVERS,
      intervalMs: 60_000,
      addrPollMs: 5,
      timeoutMs: 100,
      retransmitMs: 10,
      log,
      probe,
      localAddresses: () => local,
    })
    const first = nextChange(d)
    d.start()
    assert.equal((await first).natType, NatType.PRIVATE)
    const callsBefore = calls()
    // The host moves to a public address and the observers now see that address.
    const second = nextChange(d)
    mapped = { address: '198.18.0.5', port: 5 }
    local = ['198.18.0.5']
    const s = await second
    await d.stop()
    assert.equal(s.natType, NatType.PUBLIC)
    assert.equal(s.requiresRelay, false)
    assert.ok(calls() > callsBefore)
  })

  it('nat detector - re-runs on its interval', async () => {
    let n = 0
    const { probe } = scriptedProbe(() =>
      ++n === 1
        ? [undefined, undefined]
        : [
            { address: '198.18.1.1', port: 9 },
            { address: '198.18.1.1', port: 9 },
          ],
    )
    const d = new NatDetector({ observers: OBSERVERS, intervalMs: 10, addrPollMs: 60_000, timeoutMs: 100, retransmitMs: 10, log, probe })
    const first = nextChange(d)
    d.start()
    assert.equal((await first).natType, NatType.UNKNOWN)
    const second = nextChange(d)
    assert.equal((await second).natType, NatType.PRIVATE)
    await d.stop()
  })

  it('nat detector - without observers detection stays off (UNSPECIFIED)', async () => {
    const { probe, calls } = scriptedProbe(() => [])
    const d = new NatDetector({ observers: [], intervalMs: 5, addrPollMs: 5, timeoutMs: 100, retransmitMs: 10, log, probe })
    d.start()
    await d.detect()
    await d.stop()
    assert.equal(d.status().natType, NatType.UNSPECIFIED)
    assert.equal(calls(), 0)
  })

  it('nat detector - observers come from relay hosts at the STUN port, or from --stun', () => {
    const id = '12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp'
    assert.deepEqual(observersFromRelays([`/ip4/198.18.0.10/tcp/4001/p2p/${id}`, `/dns4/relay.example/tcp/4001/p2p/${id}`], 3478), [
      { host: '198.18.0.10', port: 3478 },
      { host: 'relay.example', port: 3478 },
    ])
    assert.deepEqual(parseObserver('[2001:db8::1]:19302'), { host: '2001:db8::1', port: 19302 })
    assert.throws(() => parseObserver('nohost'), RangeError)
    const base = {
      relays: [`/ip4/198.18.0.10/tcp/4001/p2p/${id}`],
      stunPort: GATEWAY_DEFAULTS.stunPort,
      stunTimeoutMs: 100,
      stunRetransmitMs: 10,
      natDetectIntervalMs: 1000,
      natAddrPollMs: 1000,
    }
    assert.ok(createNatDetector({ ...base, stunServers: [] }, log) instanceof NatDetector)
  })

  it('nat detector - stop() cuts a running probe short and keeps the last status', async () => {
    let probeSignal: AbortSignal | undefined
    const d = new NatDetector({
      observers: OBSERVERS,
      intervalMs: 60_000,
      addrPollMs: 60_000,
      timeoutMs: 60_000,
      retransmitMs: 10,
      log,
      probe: (observers, o) =>
        new Promise<ProbeResult>((resolve) => {
          probeSignal = o.signal
          o.signal?.addEventListener('abort', () => resolve({ localPort: 1, observations: observers.map((x) => ({ observer: x.host })) }))
        }),
    })
    d.start()
    await d.stop()
    assert.equal(probeSignal?.aborted, true)
    assert.equal(d.status().natType, NatType.UNSPECIFIED)
  })
})
