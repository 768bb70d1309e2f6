/**
 * A tunnelled call routed by the real Router over fake tiers whose links are in-memory frame links
 * (tunnel/loopback.ts, every frame encoded and decoded) to a real callee (TunnelCallee with the inbound
 * dispatcher's duplicate-request memory) in front of a fake backend that counts its runs. What is checked:
 * when a call moves to another tier or peer, and that an idempotent call never runs twice.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code, StargateError } from '@stargate/shared/errors'
import type { MetadataEntry, StreamOpen } from '@stargate/shared/gen/envelope'
import { Tier } from '@stargate/shared/gen/gateway'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import { createLogger } from '@stargate/shared/log'
import { eventually } from '../../../../test/lib/eventually.ts'
import { GATEWAY_DEFAULTS as D } from '../defaults.ts'
import { InboundDispatcher } from '../inbound.ts'
import { InFlight } from '../inflight.ts'
import { Router } from '../router.ts'
import { ServeRegistry } from '../serve.ts'
import type { TierLink, TierTransport } from '../tiers/tier.ts'
import { type TunnelBackends, TunnelCallee } from './callee.ts'
import { type ClientStreamEvents, TunnelClient, type TunnelVia } from './client.ts'
import type { EgressSink } from './egress.ts'
import type { TunnelStatus } from './endpoint.ts'
import { metadataEntry } from './frames.ts'
import { Loopback } from './loopback.ts'
import { ReplayBudget } from './replay.ts'
import { RoutedStream, type StreamRouting } from './routed.ts'
import { type ServerStreamEvents, TunnelServer } from './server.ts'

const log = createLogger('test', { level: 'silent' })
const SELF = 'caller-gateway'

function message(length: number, seed = 0): Uint8Array {
  return new Uint8Array(encodeFrame(Uint8Array.from({ length }, (_, i) => (seed + i) & 0xff)))
}

/** Waits for a condition that an event will make true (polled every timer turn). */
async function until(cond: () => boolean, what: string): Promise<void> {
  await eventually(what, cond, { intervalMs: 0 })
}

/**
 * A backend behind the callee: echoes the request once it ended, after `release()` (when held); optionally
 * sends its headers at once. Counts runs and cancellations.
 */
class FakeBackend implements TunnelBackends {
  runs = 0
  cancelled = 0
  received = 0
  headersFirst = false
  private held = false
  private waiting: Array<() => void> = []

  hold(): void {
    this.held = true
  }

  release(): void {
    this.held = false
    for (const w of this.waiting.splice(0)) w()
  }

  check(): undefined {
    return undefined
  }

  start(sink: EgressSink, _open: StreamOpen): ServerStreamEvents {
    this.runs++
    const chunks: Uint8Array[] = []
    if (this.headersFirst) sink.sendHeaders([metadataEntry('x-early', '1')])
    let done = false
    return {
      onData: (data) => {
        chunks.push(data)
        this.received += data.byteLength
        return true
      },
      onEnd: () => {
        const answer = (): void => {
          if (done) return
          done = true
          if (!this.headersFirst) sink.sendHeaders([metadataEntry('x-h', 'v')])
          sink.write(Buffer.concat(chunks))
          sink.close(0, '', [metadataEntry('x-t', 'w')])
        }
        if (this.held) this.waiting.push(answer)
        else answer()
      },
      onClose: () => {
        done = true
        this.cancelled++
      },
      onWritable: () => {},
    }
  }
}

/** A peer: its callee (real memory and journal-less dispatcher) in front of its backend. */
class Peer {
  readonly backend = new FakeBackend()
  readonly callee: TunnelCallee
  readonly peerId: string

  /** Methods the caller policy refuses. */
  readonly refused = new Set<string>()

  constructor(peerId: string) {
    this.peerId = peerId
    const inbound = new InboundDispatcher(
      {
        peerId,
        maxInboundCallsPerPeer: 16,
        maxPayloadBytes: 1 << 20,
        dedupeWindowMs: 60_000,
        dedupeMaxEntries: 1000,
        dedupeMaxEntriesPerCaller: 1000,
        dedupeMaxBytes: 1 << 24,
        dedupeMaxBytesPerCaller: 1 << 24,
        maxRequestIdBytes: D.maxRequestIdBytes,
        maxMethodBytes: D.maxMethodBytes,
        defaultTimeoutMs: 10_000,
        log,
      },
      new ServeRegistry(log),
      new InFlight(),
    )
    this.callee = new TunnelCallee({
      egress: this.backend,
      memory: inbound,
      inflight: new InFlight(),
      budget: new ReplayBudget(1 << 24, 1 << 20),
      limits: {},
      policy: {
        allows: (caller, method) =>
          this.refused.has(method)
            ? { allowed: false, reason: `peer ${caller} may not call ${method} on this gateway (caller policy)` }
            : { allowed: true, reason: 'not refused' },
      },
      log,
    })
  }
}

/** A tier whose links are in-memory frame links to the peers' callees; connects and opens are counted. */
class LoopTier implements TierTransport {
  readonly tier: Tier
  connects = 0
  opens = 0
  /** Peers this tier cannot reach. */
  readonly unreachable = new Set<string>()
  /** Fail the link in the same turn as the next open (before its StreamOpen leaves). */
  failNextOpenAtOnce = false
  /**
   * The next open reaches no one (as on NATS when nobody listens on the peer's subject): its link holds every
   * frame, then fails knowing the StreamOpen was not delivered.
   */
  undeliverNextOpen = false
  private readonly links = new Map<string, { loop: Loopback; client: TunnelClient }>()
  private readonly peers: Map<string, Peer>

  constructor(tier: Tier, peers: Map<string, Peer>) {
    this.tier = tier
    this.peers = peers
  }

  async unavailableReason(): Promise<string | undefined> {
    return undefined
  }

  /** Breaks the link to a peer (both endpoints fail). */
  cut(peerId: string): void {
    this.links.get(peerId)?.loop.fail(new StargateError(Code.Unavailable, `${Tier[this.tier]} link cut`))
  }

  async connect(peerId: string): Promise<TierLink> {
    this.connects++
    if (this.unreachable.has(peerId)) throw new StargateError(Code.Unavailable, `${Tier[this.tier]}: connection refused`)
    let l = this.links.get(peerId)
    if (l == null || !l.client.usable) {
      const loop = new Loopback({ encode: true })
      const client = new TunnelClient(loop.callerLink, { log, localPeerId: SELF, remotePeerId: peerId, tier: this.tier })
      const server = new TunnelServer(loop.calleeLink, {
        log,
        remotePeerId: SELF,
        handler: this.peers.get(peerId)!.callee.handler({ callerPeerId: SELF, tier: this.tier }),
      })
      loop.bind(client, server)
      l = { loop, client }
      this.links.set(peerId, l)
    }
    const link = l
    return {
      via: `${Tier[this.tier]}:${peerId}`,
      send: () => Promise.reject(new StargateError(Code.Unimplemented, 'no Calls in this test')),
      openStream: (init, events) => {
        this.opens++
        const stream = link.client.open(init, events)
        if (this.failNextOpenAtOnce) {
          this.failNextOpenAtOnce = false
          link.loop.fail(new StargateError(Code.Unavailable, 'link cut before the open left'))
        }
        if (this.undeliverNextOpen) {
          this.undeliverNextOpen = false
          link.loop.pause()
          const failed = new StargateError(Code.Unavailable, 'nobody listens on the subject')
          until(() => stream.openSent, 'the open left').then(
            () => {
              link.client.fail(failed, true)
              link.loop.fail(failed)
            },
            () => {},
          )
        }
        return stream
      },
    }
  }
}

/** What the client of the ingress sees. */
class Client implements ClientStreamEvents {
  headers?: MetadataEntry[]
  via?: TunnelVia
  readonly chunks: Uint8Array[] = []
  status?: TunnelStatus
  onHeaders(metadata: MetadataEntry[], via: TunnelVia): void {
    this.headers = metadata
    this.via = via
  }
  onData(data: Uint8Array): boolean {
    this.chunks.push(data)
    return true
  }
  onClose(status: TunnelStatus): void {
    assert.equal(this.status, undefined, 'one status')
    this.status = status
  }
  onWritable(): void {}
  get data(): Buffer {
    return Buffer.concat(this.chunks)
  }
}

function setup(peerIds: string[] = ['peer-a']) {
  const peers = new Map(peerIds.map((id) => [id, new Peer(id)]))
  const direct = new LoopTier(Tier.DIRECT, peers)
  const relay = new LoopTier(Tier.RELAY, peers)
  const router = new Router(
    {
      selfPeerId: SELF,
      attemptTimeoutMs: 5_000,
      maxRetries: 1,
      backoffFactor: 2,
      backoffBaseMs: 10,
      backoffJitter: 0,
      tierStaggerMs: 100,
      tierCooldownMs: 60_000,
      log,
    },
    { tiers: [direct, relay], loopback: direct, metrics: { record: () => {} } },
  )
  const routing: StreamRouting = {
    plan: (peerId, method, requestId, deadlineAtMs, last) => {
      const plan = router.defaultPlan(peerId, 'stream', method, requestId, deadlineAtMs)
      return last ? plan : { ...plan, maxRetries: 0 }
    },
    run: (plan, exchange, signal) => router.run(plan, exchange({}), signal),
  }
  const budget = new ReplayBudget(1 << 24, 64 * 1024)
  const call = (requestId: string, idempotent: boolean, targets = [peerIds[0]!]) => {
    const client = new Client()
    const stream = new RoutedStream({ method: '/pkg.Svc/Unary', requestId, metadata: [], idempotent }, client, targets, {
      routing,
      budget,
      log,
    }).start()
    return { client, stream }
  }
  return { peers, direct, relay, call, budget, peer: peers.get(peerIds[0]!)! }
}

describe('routed tunnelled calls', () => {
  it('routed - an idempotent call whose link fails after the open is sent again on the next tier and runs once', async () => {
    const { peer, direct, relay, call, budget } = setup()
    peer.backend.hold()
    const request = message(1000, 1)
    const { client, stream } = call('key-1', true)
    stream.write(request)
    stream.end()
    await until(() => peer.backend.received === request.byteLength, 'the request at the backend')
    direct.cut('peer-a')
    // The retry reaches the callee while the first run still runs: it waits for it, then gets its answer.
    await until(() => relay.opens === 1, 'the retry on the relay tier')
    peer.backend.release()
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, 0, client.status?.message)
    assert.ok(client.data.equals(Buffer.from(request)), 'the response of the one run')
    assert.deepEqual(
      client.status?.trailers.map((m) => [m.key, m.value]),
      [['x-t', 'w']],
    )
    assert.equal(peer.backend.runs, 1, 'the backend ran the call once')
    assert.deepEqual(client.via, { peerId: 'peer-a', tier: Tier.RELAY }, 'the answer names the tier it came over')
    assert.equal(peer.backend.cancelled, 0, 'the first run was not cancelled when its link failed')
    assert.equal(budget.usedBytes, 0, 'the kept request is given back')
  })

  it('routed - without an idempotency key a link failure after the open is UNAVAILABLE, never sent again', async () => {
    const { peer, direct, relay, call } = setup()
    peer.backend.hold()
    const { client, stream } = call('no-key', false)
    stream.write(message(10))
    stream.end()
    await until(() => peer.backend.runs === 1, 'the call at the backend')
    direct.cut('peer-a')
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, Code.Unavailable)
    assert.match(client.status?.message ?? '', /link cut.*not replayed/)
    assert.equal(relay.opens, 0, 'no other tier was tried')
    await until(() => peer.backend.cancelled === 1, 'the backend call cancelled')
    assert.equal(peer.backend.runs, 1)
  })

  it('routed - a link failing before the open left moves the call to the next tier, key or not', async () => {
    const { peer, direct, relay, call } = setup()
    direct.failNextOpenAtOnce = true
    const { client, stream } = call('no-key-2', false)
    stream.write(message(10, 5))
    stream.end()
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, 0, client.status?.message)
    assert.equal(direct.opens, 1)
    assert.equal(relay.opens, 1)
    assert.equal(peer.backend.runs, 1)
  })

  it('routed - a link that knows its open reached no one moves the call to the next tier with every request byte', async () => {
    const { peer, direct, relay, call } = setup()
    direct.undeliverNextOpen = true
    const { client, stream } = call('no-key-5', false)
    // More than the opening credit: the failed stream took part of it, the rest waited.
    const request = message(100_000, 3)
    for (let at = 0; at < request.byteLength; at += 16_384) stream.write(request.subarray(at, at + 16_384))
    stream.end()
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, 0, client.status?.message)
    assert.equal(direct.opens, 1)
    assert.equal(relay.opens, 1)
    assert.equal(peer.backend.runs, 1)
    assert.equal(peer.backend.received, request.byteLength)
    assert.ok(client.data.equals(Buffer.from(request)), 'the backend got the whole request, in order')
  })

  it('routed - once response bytes reached the client, a link failure is final even with a key', async () => {
    const { peer, direct, relay, call } = setup()
    peer.backend.headersFirst = true
    peer.backend.hold()
    const { client, stream } = call('key-2', true)
    stream.write(message(10))
    stream.end()
    await until(() => client.headers != null, 'the early response headers')
    direct.cut('peer-a')
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, Code.Unavailable)
    assert.equal(relay.opens, 0)
    assert.equal(peer.backend.runs, 1)
  })

  it('routed - a request too large to keep (over the per-call replay bound) is not sent again', async () => {
    const { peer, direct, relay, call, budget } = setup()
    peer.backend.hold()
    const { client, stream } = call('key-3', true)
    const big = message(100_000)
    let sent = 0
    const pump = (): void => {
      // Chunks as HTTP/2 delivers them.
      while (sent < big.byteLength && stream.write(big.subarray(sent, sent + 16_384))) sent += 16_384
    }
    pump()
    while (sent < big.byteLength) {
      await new Promise((resolve) => setImmediate(resolve))
      sent += 16_384
      pump()
    }
    stream.end()
    await until(() => peer.backend.received === big.byteLength, 'the request at the backend')
    assert.equal(budget.usedBytes, 0, 'nothing is kept past the bound')
    direct.cut('peer-a')
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, Code.Unavailable)
    assert.equal(relay.opens, 0)
  })

  it('routed - a repeat of a finished idempotent call is answered from the record, not run', async () => {
    const { peer, call } = setup()
    const request = message(300, 9)
    for (let i = 0; i < 2; i++) {
      const { client, stream } = call('key-4', true)
      stream.write(request)
      stream.end()
      await until(() => client.status != null, 'the status')
      assert.equal(client.status?.code, 0)
      assert.ok(client.data.equals(Buffer.from(request)))
      assert.deepEqual(
        client.headers?.map((m) => [m.key, m.value]),
        [['x-h', 'v']],
      )
    }
    assert.equal(peer.backend.runs, 1)
  })

  it('routed - discovery: a peer that cannot be reached is left for the next one exposing the service', async () => {
    const { peers, direct, relay, call } = setup(['peer-a', 'peer-b'])
    direct.unreachable.add('peer-a')
    relay.unreachable.add('peer-a')
    const { client, stream } = call('no-key-3', false, ['peer-a', 'peer-b'])
    stream.write(message(10))
    stream.end()
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, 0, client.status?.message)
    assert.equal(peers.get('peer-a')!.backend.runs, 0)
    assert.equal(peers.get('peer-b')!.backend.runs, 1)
    assert.deepEqual(client.via, { peerId: 'peer-b', tier: Tier.DIRECT }, 'the answer names the peer that gave it')
  })

  it('routed - the callee refuses a call its caller policy does not allow: PERMISSION_DENIED, nothing reaches the backend', async () => {
    const { peer, call } = setup()
    peer.refused.add('/pkg.Svc/Unary')
    const { client, stream } = call('key-5', true)
    stream.write(message(10))
    stream.end()
    await until(() => client.status != null, 'the status')
    assert.equal(client.status?.code, Code.PermissionDenied)
    assert.match(client.status?.message ?? '', /may not call \/pkg\.Svc\/Unary.*caller policy/)
    assert.equal(peer.backend.runs, 0)
  })

  it('routed - a client cancel while routing ends everything; nothing is reported after', async () => {
    const { peer, call } = setup()
    peer.backend.hold()
    const { client, stream } = call('no-key-4', false)
    stream.write(message(10))
    stream.end()
    await until(() => peer.backend.runs === 1, 'the call at the backend')
    stream.reset(Code.Canceled, 'the client cancelled the call')
    await until(() => peer.backend.cancelled === 1, 'the backend call cancelled')
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.equal(client.status, undefined, 'the ingress hears nothing after its own reset')
  })
})
