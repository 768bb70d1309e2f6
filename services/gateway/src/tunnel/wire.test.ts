import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { encodeFrame, FRAME_PREFIX_BYTES } from '@stargate/shared/grpc/wire'
import fc from 'fast-check'
import { metadataEntry } from './frames.ts'
import { appendRawHeaders, headersObject, MessageAligner, MessageScanner, metadataFromRawHeaders } from './wire.ts'

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

  it('wire - property: the aligner passes on whole messages only, wherever the stream is cut, holding at most one message', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
        fc.integer({ min: 5, max: 400 }),
        fc.nat(),
        (sizes, cuts, maxHeld, cutAt) => {
          const messages = sizes.map((n, i) => encodeFrame(Buffer.alloc(n, i + 1), n % 2))
          const stream = Buffer.concat(messages)
          // The stream as far as it got before it was cut.
          const got = stream.subarray(0, cutAt % (stream.length + 1))
          const aligner = new MessageAligner(maxHeld)
          const out: Uint8Array[] = []
          for (let at = 0, i = 0; at < got.length; i++) {
            const next = Math.min(got.length, at + cuts[i % cuts.length]!)
            out.push(...aligner.push(got.subarray(at, next)))
            at = next
            assert.ok(aligner.heldBytes <= Math.max(FRAME_PREFIX_BYTES - 1, maxHeld), `held ${aligner.heldBytes}`)
          }
          const passed = Buffer.concat(out)
          // Whole messages reached before the cut, and of the message cut, what a message too large to hold passed.
          let boundary = 0
          let cutLarge = false
          for (const m of messages) {
            if (boundary + m.length > got.length) {
              cutLarge = got.length - boundary >= FRAME_PREFIX_BYTES && m.length > maxHeld
              break
            }
            boundary += m.length
          }
          const expected = cutLarge ? got : got.subarray(0, boundary)
          assert.deepEqual(passed, expected)
          assert.equal(aligner.cut, cutLarge)
          assert.deepEqual(Buffer.concat([passed, ...aligner.release()]), got, 'nothing lost: the held bytes are the rest')
          assert.equal(aligner.heldBytes, 0)
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

  it('wire - headers: from a gRPC-Web request, those that only describe the browser side never cross; from gRPC they do', () => {
    const browser = [
      'x-grpc-web',
      '1',
      'x-user-agent',
      'connect-es/2.0.0',
      'origin',
      'https://app.example',
      'referer',
      'https://app.example/page',
      'sec-fetch-mode',
      'cors',
      'sec-fetch-site',
      'cross-site',
      'sec-ch-ua-platform',
      '"Linux"',
      'access-control-request-headers',
      'x-app',
    ]
    const kept = ['content-type', 'application/grpc', 'user-agent', 'Mozilla/5.0', 'x-app', 'a', 'x-origin', 'b', 'trace-bin', 'AAEC']
    const raw = [...browser, ...kept]
    const pairs = (md: { key: string; value: string }[]) => md.map((m) => [m.key, m.value])
    const expected = (list: string[]) => list.flatMap((k, i) => (i % 2 === 0 ? [[k, list[i + 1]]] : []))
    assert.deepEqual(pairs(metadataFromRawHeaders(raw, undefined, true)), expected(kept))
    assert.deepEqual(pairs(metadataFromRawHeaders(raw)), expected(raw), 'a gRPC client may send metadata of any of these names')
  })
})
