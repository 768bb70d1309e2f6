import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { Code, ConnectError } from '@connectrpc/connect'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { Tier } from '@stargate/shared/gen/gateway'
import { createLibp2p, type Libp2p } from 'libp2p'
import { connect, type Msg, type NatsConnection } from 'nats'
import { freePort, type GatewayHandle, Harness, type Proc } from '../lib/harness.ts'

const json = (v: unknown) => ({ case: 'json' as const, value: fromJson(ValueSchema, v as never) })
const MARKER = 'TOP-SECRET-MARKER-5f3a9c'

function contains(haystack: Uint8Array, needle: string): boolean {
  return Buffer.from(haystack).includes(Buffer.from(needle))
}

describe('hostile input and the sealed NATS tier', () => {
  const h = new Harness()
  let natsUrl: string
  let a: GatewayHandle
  let b: GatewayHandle
  let bServe: Proc
  let spy: NatsConnection
  const seen: Msg[] = []
  let raw: Libp2p
  let metricsPort: number

  before(async () => {
    const nats = await h.nats()
    natsUrl = nats.url
    spy = await connect({ servers: natsUrl })
    spy.subscribe('>', { callback: (_err, msg) => seen.push(msg) })
    metricsPort = await freePort()
    b = await h.gateway(
      [
        '--p2p-listen',
        '/ip4/127.0.0.1/tcp/0',
        '--nats',
        natsUrl,
        '--max-inbound-calls-per-peer',
        '2',
        '--frame-stall-timeout-ms',
        '500',
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
      ],
      { name: 'b' },
    )
    a = await h.gateway(['--nats', natsUrl], { name: 'a' })
    bServe = await h.serveClient(b.api)
    raw = await createLibp2p({ transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] })
  })
  after(async () => {
    await raw.stop()
    await spy.close()
    await h.close()
  })

  it('sealed - an eavesdropper subscribed to ">" never sees the payload in plaintext', async () => {
    const res = await a.client.call({
      peerId: b.peerId,
      method: 'echo',
      payload: json({ secret: MARKER }),
      options: { allowedTiers: [Tier.NATS] },
    })
    assert.equal(res.tier, Tier.NATS)
    await spy.flush()
    const calls = seen.filter((m) => m.subject === `stargate.call.${b.peerId}`)
    assert.ok(calls.length >= 1, 'the request crossed NATS')
    for (const m of seen) assert.ok(!contains(m.data, MARKER), `plaintext marker on subject ${m.subject}`)
    assert.ok(
      bServe.stdout.some((l) => l.includes(res.requestId)),
      'the handler got the real payload',
    )
  })

  it('sealed - a replayed request and garbage on the call subject are dropped; the gateway stays up', async () => {
    const captured = seen.find((m) => m.subject === `stargate.call.${b.peerId}`)!
    const before = bServe.stdout.length
    await assert.rejects(spy.request(captured.subject, captured.data, { timeout: 1500 }), 'no answer to a replay')
    await b.proc.waitFor(/dropped malformed NATS message.*replay/i)
    await assert.rejects(spy.request(captured.subject, new Uint8Array([1, 2, 3, 4]), { timeout: 1500 }))
    await b.proc.waitFor(/dropped malformed NATS message/)
    assert.equal(bServe.stdout.length, before, 'the handler did not run again')
    const ok = await a.client.call({ peerId: b.peerId, method: 'echo', payload: json(1), options: { allowedTiers: [Tier.NATS] } })
    assert.equal(ok.tier, Tier.NATS)
  })

  it('hostile - garbage frames from a libp2p peer close its stream, are logged, and the gateway stays up', async () => {
    const addr = multiaddr(b.multiaddrs.find((x) => x.includes('/127.0.0.1/'))!)
    const stream = await raw.dialProtocol(addr, '/stargate/call/1.0.0')
    stream.send(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))
    await b.proc.waitFor(/malformed or stalled frame from caller.*varint longer/)
    const stream2 = await raw.dialProtocol(addr, '/stargate/call/1.0.0')
    stream2.send(new Uint8Array([5, 0x0a, 0x02, 0xff, 0xff, 0xff]))
    await b.proc.waitFor(/malformed or stalled frame from caller.*not a stargate\.v1\.PeerFrame/)
    assert.equal((await b.client.getStatus({})).peerId, b.peerId)
    // counted: the Prometheus endpoint reports the dropped frames and NATS messages
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
    const m = /stargate_inbound_dropped(?:_total)?\{[^}]*reason="malformed"[^}]*\} (\d+)/.exec(text)
    assert.ok(m != null && Number(m[1]) >= 4, `malformed count in /metrics: ${m?.[1]}`)
  })

  it('hostile - a stream that starts a frame and stalls is closed after the stall timeout', async () => {
    const addr = multiaddr(b.multiaddrs.find((x) => x.includes('/127.0.0.1/'))!)
    const stream = await raw.dialProtocol(addr, '/stargate/call/1.0.0')
    const closed = new Promise<void>((resolve) => stream.addEventListener('close', () => resolve(), { once: true }))
    stream.send(new Uint8Array([0x80, 0x01, 0x0a])) // announces 128 bytes, sends 1
    await b.proc.waitFor(/stalled: a frame was started but not completed within 500 ms/)
    await closed
  })

  it('hostile - per-peer concurrent inbound calls are capped with RESOURCE_EXHAUSTED; nothing runs twice', async () => {
    const calls = Array.from({ length: 5 }, (_, i) =>
      a.client
        .call({
          peerId: b.peerId,
          method: 'slow',
          payload: json({ ms: 1500 }),
          idempotencyKey: `cap-${Date.now()}-${i}`,
          options: { allowedTiers: [Tier.NATS] },
        })
        .then(
          () => 'ok',
          (err: unknown) => Code[ConnectError.from(err).code],
        ),
    )
    const outcomes = await Promise.all(calls)
    assert.equal(outcomes.filter((o) => o === 'ok').length, 2, outcomes.join(','))
    assert.equal(outcomes.filter((o) => o === Code[Code.ResourceExhausted]).length, 3, outcomes.join(','))
  })
})
