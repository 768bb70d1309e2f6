import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, equals, fromJson, type JsonValue, toBinary } from '@bufbuild/protobuf'
import { ValueSchema } from '@bufbuild/protobuf/wkt'
import fc from 'fast-check'
import { decodePeerFrame, encodePeerFrame } from './envelope.ts'
import { Code, StargateError } from './errors.ts'
import { PeerFrameSchema } from './gen/stargate/v1/envelope_pb.js'
import { Tier } from './gen/stargate/v1/gateway_pb.js'

const FC = { seed: 20261123, numRuns: 200 }

function expectInvalid(bytes: Uint8Array, re?: RegExp): void {
  assert.throws(
    () => decodePeerFrame(bytes),
    (err: unknown) => {
      assert.ok(err instanceof StargateError, `expected StargateError, got ${String(err)}`)
      assert.equal(err.code, Code.InvalidArgument, err.message)
      if (re != null) assert.match(err.message, re)
      return true
    },
  )
}

const text = fc.string({ unit: 'grapheme', maxLength: 20 })
const nonEmpty = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 })
const exchangeId = fc.bigInt({ min: 1n, max: 2n ** 64n - 1n })
const json = fc.jsonValue({ maxDepth: 3 }).map((v) => fromJson(ValueSchema, v as JsonValue))
const payload = fc.oneof(
  fc.constant({ case: undefined }),
  fc.uint8Array({ maxLength: 64 }).map((value) => ({ case: 'data' as const, value })),
  json.map((value) => ({ case: 'json' as const, value })),
)
const request = fc.record({
  requestId: nonEmpty,
  method: nonEmpty,
  payload,
  timeout: fc.option(
    fc.record({ seconds: fc.bigInt({ min: 0n, max: 315_576_000_000n }), nanos: fc.integer({ min: 0, max: 999_999_999 }) }),
    { nil: undefined },
  ),
  traceContext: fc.dictionary(text, text, { maxKeys: 3 }),
  callerPeerId: text,
  tier: fc.constantFrom(Tier.UNSPECIFIED, Tier.DIRECT, Tier.RELAY, Tier.NATS),
  exchangeId,
})
const response = fc.record({
  exchangeId,
  requestId: nonEmpty,
  result: fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((value) => ({ case: 'data' as const, value })),
    json.map((value) => ({ case: 'json' as const, value })),
    fc
      .record({ code: fc.integer({ min: 0, max: 16 }), message: text })
      .map((value) => ({ case: 'error' as const, value: { $typeName: 'stargate.v1.ErrorStatus' as const, ...value } })),
  ),
  responderPeerId: text,
  replayed: fc.boolean(),
})
const metadata = fc.array(fc.record({ key: nonEmpty, value: text }), { maxLength: 3 })
const statusCode = fc.integer({ min: 1, max: 16 })
const streamOpen = fc.record({
  exchangeId,
  requestId: nonEmpty,
  method: fc.tuple(fc.stringMatching(/^[\w.]{1,12}$/), fc.stringMatching(/^\w{1,12}$/)).map(([s, m]) => `/${s}/${m}`),
  metadata,
  timeout: fc.option(fc.record({ seconds: fc.bigInt({ min: 0n, max: 1_000_000n }), nanos: fc.integer({ min: 0, max: 999_999_999 }) }), {
    nil: undefined,
  }),
  traceContext: fc.dictionary(text, text, { maxKeys: 2 }),
  callerPeerId: text,
  tier: fc.constantFrom(Tier.UNSPECIFIED, Tier.DIRECT, Tier.RELAY, Tier.NATS),
  initialWindowBytes: fc.nat(),
  data: fc.uint8Array({ maxLength: 32 }),
  endOfStream: fc.boolean(),
})
const frame = fc.oneof(
  request.map((value) => ({ kind: { case: 'request' as const, value } })),
  response.map((value) => ({ kind: { case: 'response' as const, value } })),
  exchangeId.map((id) => ({ kind: { case: 'cancel' as const, value: { exchangeId: id } } })),
  streamOpen.map((value) => ({ kind: { case: 'streamOpen' as const, value } })),
  fc.record({ exchangeId, metadata }).map((value) => ({ kind: { case: 'streamHeaders' as const, value } })),
  fc
    .record({ exchangeId, data: fc.uint8Array({ maxLength: 64 }), endOfStream: fc.boolean() })
    .map((value) => ({ kind: { case: 'streamData' as const, value } })),
  fc
    .record({ exchangeId, code: fc.integer({ min: 0, max: 16 }), message: text, trailers: metadata })
    .map((value) => ({ kind: { case: 'streamClose' as const, value } })),
  fc.record({ exchangeId, code: statusCode, message: text }).map((value) => ({ kind: { case: 'streamReset' as const, value } })),
  fc
    .record({ exchangeId, creditBytes: fc.integer({ min: 1, max: 2 ** 32 - 1 }) })
    .map((value) => ({ kind: { case: 'streamWindow' as const, value } })),
)

describe('envelope', () => {
  it('envelope - a valid request, response and cancel roundtrip', () => {
    const req = { kind: { case: 'request' as const, value: { requestId: 'r1', method: 'echo', exchangeId: 1n } } }
    const decoded = decodePeerFrame(encodePeerFrame(req))
    assert.equal(decoded.kind.case, 'request')
    assert.equal(decoded.kind.value?.$typeName, 'stargate.v1.PeerRequest')
    const cancel = decodePeerFrame(encodePeerFrame({ kind: { case: 'cancel', value: { exchangeId: 9n } } }))
    assert.equal(cancel.kind.case === 'cancel' && cancel.kind.value.exchangeId, 9n)
  })

  it('envelope - rejects frames missing what a peer needs', () => {
    const bin = (f: Parameters<typeof create<typeof PeerFrameSchema>>[1]): Uint8Array =>
      toBinary(PeerFrameSchema, create(PeerFrameSchema, f))
    expectInvalid(new Uint8Array(0), /no known kind/)
    expectInvalid(bin({ kind: { case: 'request', value: { method: 'm', exchangeId: 1n } } }), /request_id/)
    expectInvalid(bin({ kind: { case: 'request', value: { requestId: 'r', exchangeId: 1n } } }), /method/)
    expectInvalid(bin({ kind: { case: 'request', value: { requestId: 'r', method: 'm' } } }), /exchange_id/)
    expectInvalid(bin({ kind: { case: 'response', value: { requestId: 'r', exchangeId: 1n } } }), /without a result/)
    expectInvalid(
      bin({ kind: { case: 'response', value: { exchangeId: 1n, result: { case: 'data', value: new Uint8Array() } } } }),
      /request_id/,
    )
    expectInvalid(bin({ kind: { case: 'cancel', value: {} } }), /exchange_id/)
    // An unknown kind (field 15, from a newer peer) is not silently treated as something else.
    expectInvalid(new Uint8Array([0x7a, 0x02, 0x08, 0x01]), /no known kind/)
    // Truncated and wrong-wire-type input.
    expectInvalid(new Uint8Array([0x0a, 0x05, 0x0a]), /not a stargate.v1.PeerFrame/)
    assert.throws(() => encodePeerFrame({ kind: { case: 'cancel', value: {} } }), StargateError)
  })

  it('envelope - rejects stream frames missing what a peer needs', () => {
    const bin = (f: Parameters<typeof create<typeof PeerFrameSchema>>[1]): Uint8Array =>
      toBinary(PeerFrameSchema, create(PeerFrameSchema, f))
    const open = { exchangeId: 1n, requestId: 'r', method: '/pkg.Svc/Method' }
    assert.equal(decodePeerFrame(bin({ kind: { case: 'streamOpen', value: open } })).kind.case, 'streamOpen')
    expectInvalid(bin({ kind: { case: 'streamOpen', value: { ...open, exchangeId: 0n } } }), /stream_open without exchange_id/)
    expectInvalid(bin({ kind: { case: 'streamOpen', value: { ...open, requestId: '' } } }), /request_id/)
    for (const method of ['', 'pkg.Svc/Method', '/pkg.Svc', '/pkg.Svc/', '//Method', '/a/b/c']) {
      expectInvalid(bin({ kind: { case: 'streamOpen', value: { ...open, method } } }), /not a gRPC path/)
    }
    expectInvalid(bin({ kind: { case: 'streamOpen', value: { ...open, timeout: { seconds: -1n } } } }), /negative timeout/)
    expectInvalid(bin({ kind: { case: 'streamData', value: { data: new Uint8Array(1) } } }), /stream_data without exchange_id/)
    expectInvalid(bin({ kind: { case: 'streamHeaders', value: {} } }), /stream_headers without exchange_id/)
    expectInvalid(bin({ kind: { case: 'streamClose', value: { exchangeId: 1n, code: 17 } } }), /unknown status code 17/)
    expectInvalid(bin({ kind: { case: 'streamReset', value: { exchangeId: 1n, code: 0 } } }), /stream_reset with status OK/)
    expectInvalid(bin({ kind: { case: 'streamReset', value: { code: 1 } } }), /stream_reset without exchange_id/)
    expectInvalid(bin({ kind: { case: 'streamWindow', value: { exchangeId: 1n } } }), /without credit_bytes/)
  })

  it('envelope - a deeply nested JSON payload is INVALID_ARGUMENT, not a stack overflow', () => {
    // Value{list_value{values[Value{list_value{...}}]}}, 5k levels (protobuf-es stops at depth 100): headers built inside out, joined once.
    const headers: Buffer[] = []
    let innerLength = 0
    for (let i = 0; i < 5_000; i++) {
      const listHeader = Buffer.concat([Buffer.from([0x0a]), varint(innerLength)]) // ListValue.values = 1
      const listLength = listHeader.length + innerLength
      const valueHeader = Buffer.concat([Buffer.from([0x32]), varint(listLength)]) // Value.list_value = 6
      headers.push(listHeader, valueHeader)
      innerLength = valueHeader.length + listLength
    }
    const inner = Buffer.concat(headers.reverse())
    const req = Buffer.concat([Buffer.from([0x0a, 0x01, 0x72, 0x12, 0x01, 0x6d, 0x48, 0x01, 0x22]), varint(inner.length), inner])
    const bytes = Buffer.concat([Buffer.from([0x0a]), varint(req.length), req])
    expectInvalid(bytes, /recursion depth|call stack/)
  })

  it('envelope - property: encode → decode roundtrips any valid PeerFrame', () => {
    fc.assert(
      fc.property(frame, (init) => {
        const msg = create(PeerFrameSchema, init)
        const decoded = decodePeerFrame(encodePeerFrame(msg))
        assert.ok(equals(PeerFrameSchema, decoded, msg))
      }),
      FC,
    )
  })

  it('envelope - property: arbitrary bytes only ever throw StargateError INVALID_ARGUMENT', () => {
    const mutated = fc
      .tuple(frame, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }))
      .map(([f, edits]) => {
        const bytes = toBinary(PeerFrameSchema, create(PeerFrameSchema, f))
        for (const [at, v] of edits) if (bytes.length > 0) bytes[at % bytes.length] = v
        return bytes
      })
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), mutated), (bytes) => {
        try {
          decodePeerFrame(bytes)
        } catch (err: unknown) {
          if (!(err instanceof StargateError) || err.code !== Code.InvalidArgument) throw err
        }
      }),
      { ...FC, numRuns: 1000 },
    )
  })
})

function varint(n: number): Buffer {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  out.push(n)
  return Buffer.from(out)
}
