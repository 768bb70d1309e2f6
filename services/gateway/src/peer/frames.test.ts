import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fromJson } from '@bufbuild/protobuf'
import { durationFromMs, ValueSchema } from '@bufbuild/protobuf/wkt'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { FrameDecoder } from '@stargate/shared/framing'
import { Tier } from '@stargate/shared/gen/gateway'
import { Uint8ArrayList } from 'uint8arraylist'
import { GATEWAY_DEFAULTS } from '../defaults.ts'
import { encodePeerFrame, type PeerFrameInit } from './frames.ts'

/** Decodes what encodePeerFrame produced, through the stream's length-prefix decoder. */
function roundTrip(frame: PeerFrameInit) {
  const encoded = encodePeerFrame(frame)
  const bytes = encoded instanceof Uint8Array ? encoded : encoded.subarray()
  const frames = new FrameDecoder({ maxFrameBytes: 64 * 1024 * 1024 }).push(bytes)
  assert.equal(frames.length, 1, 'exactly one frame')
  return { encoded, frame: decodePeerFrame(frames[0]!) }
}

const big = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7) & 0xff)

describe('peer frames', () => {
  it('frames - a request or response with a large data payload is header + the payload itself, and decodes to the same frame', () => {
    const data = big(GATEWAY_DEFAULTS.batchFrameMaxBytes + 1)
    const req: PeerFrameInit = {
      kind: {
        case: 'request',
        value: {
          requestId: 'r-1',
          method: 'echo',
          payload: { case: 'data', value: data },
          timeout: durationFromMs(1500),
          traceContext: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
          callerPeerId: 'caller',
          tier: Tier.RELAY,
          exchangeId: 300n,
        },
      },
    }
    const r = roundTrip(req)
    assert.ok(r.encoded instanceof Uint8ArrayList, 'two chunks')
    assert.equal([...r.encoded][1], data, 'the payload is not copied')
    assert.ok(r.frame.kind.case === 'request')
    const got = r.frame.kind.value
    assert.equal(got.requestId, 'r-1')
    assert.equal(got.method, 'echo')
    assert.deepEqual(got.traceContext, { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' })
    assert.equal(got.tier, Tier.RELAY)
    assert.equal(got.exchangeId, 300n)
    assert.equal(got.callerPeerId, 'caller')
    assert.ok(got.payload.case === 'data')
    assert.ok(Buffer.from(got.payload.value).equals(Buffer.from(data)))

    for (const size of [GATEWAY_DEFAULTS.batchFrameMaxBytes + 1, 200_000, 4 * 1024 * 1024]) {
      const payload = big(size)
      const res = roundTrip({
        kind: {
          case: 'response',
          value: { exchangeId: 7n, requestId: 'r-2', result: { case: 'data', value: payload }, responderPeerId: 'me', replayed: true },
        },
      })
      assert.ok(res.encoded instanceof Uint8ArrayList)
      assert.ok(res.frame.kind.case === 'response')
      const v = res.frame.kind.value
      assert.deepEqual([v.exchangeId, v.requestId, v.responderPeerId, v.replayed], [7n, 'r-2', 'me', true])
      assert.ok(v.result.case === 'data')
      assert.ok(Buffer.from(v.result.value).equals(Buffer.from(payload)), `${size} bytes intact`)
    }
  })

  it('frames - small payloads, JSON payloads and other frames are one buffer', () => {
    const small = roundTrip({
      kind: { case: 'request', value: { requestId: 'a', method: 'm', exchangeId: 1n, payload: { case: 'data', value: big(100) } } },
    })
    assert.ok(small.encoded instanceof Uint8Array)
    const json = roundTrip({
      kind: {
        case: 'response',
        value: { exchangeId: 2n, requestId: 'b', result: { case: 'json', value: fromJson(ValueSchema, { x: 'y'.repeat(40_000) }) } },
      },
    })
    assert.ok(json.encoded instanceof Uint8Array)
    assert.equal(json.frame.kind.case, 'response')
    const cancel = roundTrip({ kind: { case: 'cancel', value: { exchangeId: 3n } } })
    assert.ok(cancel.encoded instanceof Uint8Array)
    assert.equal(cancel.frame.kind.case, 'cancel')
  })
})
