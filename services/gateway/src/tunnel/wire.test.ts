import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { encodeFrame } from '@stargate/shared/grpc/wire'
import fc from 'fast-check'
import { metadataEntry } from './frames.ts'
import { appendRawHeaders, headersObject, MessageScanner, metadataFromRawHeaders } from './wire.ts'

const FC = { seed: 20261201, numRuns: 300 }

describe('tunnel wire', () => {
  it('wire - property: the scanner finds every oversized message whatever the chunking', () => {
    const messages = fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 8 })
    fc.assert(
      fc.property(
        messages,
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
        fc.integer({ min: 0, max: 300 }),
        (sizes, cuts, max) => {
          const stream = Buffer.concat(sizes.map((n) => encodeFrame(Buffer.alloc(n, 0xee), n % 2)))
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

  it('wire - a declared length of 2^31 or more is read unsigned, whether its prefix comes whole or byte by byte', () => {
    const prefix = Buffer.from([0, 0x80, 0, 0, 1])
    assert.equal(new MessageScanner(1 << 20).push(prefix), 2 ** 31 + 1)
    const split = new MessageScanner(1 << 20)
    assert.deepEqual(
      [...prefix].map((b) => split.push(Buffer.from([b]))),
      [-1, -1, -1, -1, 2 ** 31 + 1],
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
