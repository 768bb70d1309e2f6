import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code, StargateError } from '@stargate/shared/errors'
import fc from 'fast-check'
import { metadataEntry } from './frames.ts'
import {
  appendRawHeaders,
  decodeGrpcMessage,
  encodeGrpcMessage,
  formatGrpcTimeout,
  headersObject,
  MessageScanner,
  metadataFromRawHeaders,
  parseGrpcTimeout,
} from './wire.ts'

const FC = { seed: 20261201, numRuns: 300 }

describe('tunnel wire', () => {
  it('wire - grpc-timeout: every unit parses; malformed values are INVALID_ARGUMENT with the expected form', () => {
    assert.equal(parseGrpcTimeout('2H'), 7_200_000)
    assert.equal(parseGrpcTimeout('3M'), 180_000)
    assert.equal(parseGrpcTimeout('4S'), 4_000)
    assert.equal(parseGrpcTimeout('250m'), 250)
    assert.equal(parseGrpcTimeout('1500u'), 1.5)
    assert.equal(parseGrpcTimeout('99999999n'), 99.999999)
    for (const bad of ['', '10', 'S', '123456789m', '-1S', '1.5S', '10s', ' 1S']) {
      assert.throws(
        () => parseGrpcTimeout(bad),
        (err: unknown) => err instanceof StargateError && err.code === Code.InvalidArgument && /1 to 8 digits and a unit/.test(err.message),
        bad,
      )
    }
  })

  it('wire - property: a formatted timeout parses back to at least the time left, within a unit', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1e12, noNaN: true }), (ms) => {
        const back = parseGrpcTimeout(formatGrpcTimeout(ms))
        assert.ok(back >= Math.min(ms, 99_999_999 * 3_600_000), `${ms} -> ${formatGrpcTimeout(ms)}`)
        assert.ok(back - ms <= Math.max(1, ms / 1e7) * 3_600_000)
        assert.match(formatGrpcTimeout(ms), /^\d{1,8}[HMSm]$/)
      }),
      FC,
    )
    assert.equal(formatGrpcTimeout(1234.2), '1235m')
    assert.equal(formatGrpcTimeout(-5), '0m')
  })

  it('wire - property: grpc-message percent-encoding roundtrips any text and stays printable ASCII', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (text) => {
        const wire = encodeGrpcMessage(text)
        assert.match(wire, /^[\x20-\x7e]*$/)
        assert.equal(decodeGrpcMessage(wire), text)
      }),
      FC,
    )
    assert.equal(encodeGrpcMessage('50% done\n'), '50%25 done%0A')
    assert.equal(decodeGrpcMessage('bad %zz escape %4'), 'bad %zz escape %4')
  })

  it('wire - property: the scanner finds every oversized message whatever the chunking', () => {
    const messages = fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 8 })
    fc.assert(
      fc.property(
        messages,
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
        fc.integer({ min: 0, max: 300 }),
        (sizes, cuts, max) => {
          const stream = Buffer.concat(
            sizes.map((n) => {
              const m = Buffer.alloc(5 + n, 0xee)
              m[0] = n % 2
              m.writeUInt32BE(n, 1)
              return m
            }),
          )
          const scanner = new MessageScanner(max)
          let found = -1
          let at = 0
          for (let i = 0; at < stream.length && found < 0; i++) {
            const next = Math.min(stream.length, at + cuts[i % cuts.length]!)
            found = scanner.push(stream.subarray(at, next))
            at = next
          }
          const firstOver = sizes.find((n) => n > max)
          assert.equal(found, firstOver ?? -1)
          if (firstOver == null) assert.equal(scanner.midMessage, false)
        },
      ),
      FC,
    )
  })

  it('wire - headers: hop-by-hop, pseudo, stargate-*, consumed and malformed entries never cross; the rest keep order and duplicates', () => {
    const raw = [
      ':path',
      '/a.B/C',
      ':authority',
      'x',
      'content-type',
      'application/grpc+proto',
      'te',
      'trailers',
      'connection',
      'close',
      'grpc-timeout',
      '1S',
      'grpc-encoding',
      'gzip',
      'grpc-accept-encoding',
      'gzip,identity',
      'stargate-peer',
      '12D3',
      'authorization',
      'Bearer x',
      'x-multi',
      '1',
      'X-Multi',
      '2',
      'trace-bin',
      'AAEC',
      'bad key',
      'v',
      'x-bad',
      'a\nb',
      'user-agent',
      'grpc-go/1.7',
    ]
    const md = metadataFromRawHeaders(raw, new Set(['authorization']))
    assert.deepEqual(
      md.map((m) => [m.key, m.value]),
      [
        ['content-type', 'application/grpc+proto'],
        ['grpc-encoding', 'gzip'],
        ['grpc-accept-encoding', 'gzip,identity'],
        ['x-multi', '1'],
        ['x-multi', '2'],
        ['trace-bin', 'AAEC'],
        ['user-agent', 'grpc-go/1.7'],
      ],
    )
    // What a peer sends is filtered again before it reaches HTTP/2.
    const fromPeer = [
      metadataEntry(':path', '/evil'),
      metadataEntry('connection', 'x'),
      metadataEntry('x-ok', 'v'),
      metadataEntry('x-ok', 'w'),
    ]
    assert.deepEqual(appendRawHeaders([':status', '200'], fromPeer), [':status', '200', 'x-ok', 'v', 'x-ok', 'w'])
    assert.deepEqual(headersObject(fromPeer), { 'x-ok': ['v', 'w'] })
  })
})
