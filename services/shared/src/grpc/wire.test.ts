import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { deflateSync, gzipSync } from 'node:zlib'
import { encodeEnvelope } from '@connectrpc/connect/protocol'
import fc from 'fast-check'
import { Code, StargateError } from '../errors.ts'
import {
  decodeGrpcMessage,
  decompress,
  encodeFrame,
  encodeGrpcMessage,
  FrameParser,
  formatGrpcTimeout,
  frameLength,
  grpcSubtype,
  parseGrpcTimeout,
} from './wire.ts'

const FC = { seed: 20261201, numRuns: 300 }

function rejectsWith(code: Code, re: RegExp): (err: unknown) => true {
  return (err: unknown) => {
    assert.ok(err instanceof StargateError, String(err))
    assert.equal(err.code, code, err.message)
    assert.match(err.message, re)
    return true
  }
}

describe('grpc wire', () => {
  it('content type - gRPC subtypes are recognised, gRPC-Web and others are not', () => {
    assert.equal(grpcSubtype('application/grpc'), 'proto')
    assert.equal(grpcSubtype('application/grpc+proto'), 'proto')
    assert.equal(grpcSubtype('application/grpc+json; charset=utf-8'), 'json')
    assert.equal(grpcSubtype('application/GRPC+Proto'), 'proto')
    assert.equal(grpcSubtype('application/grpc;foo=bar'), 'proto')
    assert.equal(grpcSubtype('application/grpc-web'), undefined)
    assert.equal(grpcSubtype('application/grpc-web+proto'), undefined)
    assert.equal(grpcSubtype('application/json'), undefined)
    assert.equal(grpcSubtype(undefined), undefined)
  })

  it('grpc-timeout - every unit; malformed values are INVALID_ARGUMENT', () => {
    assert.equal(parseGrpcTimeout('2H'), 7_200_000)
    assert.equal(parseGrpcTimeout('3M'), 180_000)
    assert.equal(parseGrpcTimeout('5S'), 5_000)
    assert.equal(parseGrpcTimeout('250m'), 250)
    assert.equal(parseGrpcTimeout('1500u'), 1.5)
    assert.equal(parseGrpcTimeout('99999999n'), 99.999999)
    for (const bad of ['', '5', 'S', '123456789S', '123456789m', '5s', '-5S', '1.5S', ' 1S']) {
      assert.throws(
        () => parseGrpcTimeout(bad),
        rejectsWith(Code.InvalidArgument, /malformed grpc-timeout header ".*": expected 1 to 8 digits and a unit/),
      )
    }
  })

  it('grpc-timeout - property: a formatted timeout parses back to at least the time left, within a unit', () => {
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

  it('grpc-message - percent-encodes bytes outside 0x20-0x7E and %, and decodes back', () => {
    assert.equal(encodeGrpcMessage('plain message: ok'), 'plain message: ok')
    assert.equal(encodeGrpcMessage('100% sure'), '100%25 sure')
    assert.equal(encodeGrpcMessage('caf\u00e9\nnext'), 'caf%C3%A9%0Anext')
    for (const m of ['', '100% sure', 'caf\u00e9\n\u{1F680}', 'a%zz']) assert.equal(decodeGrpcMessage(encodeGrpcMessage(m)), m)
    // One bad escape does not leave the rest undecoded: valid escapes decode, broken ones stay as they are.
    assert.equal(decodeGrpcMessage('caf%C3%A9 at 100%'), 'caf\u00e9 at 100%')
    assert.equal(decodeGrpcMessage('bad %zz escape %4'), 'bad %zz escape %4')
    // A cut-off UTF-8 sequence becomes U+FFFD (the gRPC spec allows it); the broken escape after it stays.
    assert.equal(decodeGrpcMessage('bad %E0%A4%A'), 'bad \ufffd%A')
  })

  it('grpc-message - property: percent-encoding roundtrips any text and stays printable ASCII', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (text) => {
        const wire = encodeGrpcMessage(text)
        assert.match(wire, /^[\x20-\x7e]*$/)
        assert.equal(decodeGrpcMessage(wire), text)
      }),
      FC,
    )
  })

  it('frames - a prefix is the flag byte and the 4-byte big-endian length', () => {
    assert.deepEqual([...encodeFrame(new Uint8Array([7, 8]))], [0, 0, 0, 0, 2, 7, 8])
    assert.deepEqual([...encodeFrame(new Uint8Array(300), 0x80).subarray(0, 5)], [0x80, 0, 0, 1, 44])
    assert.equal(frameLength(encodeFrame(new Uint8Array(300), 0x80)), 300)
    for (const flag of [0, 1, 2, 0x80]) {
      const message = Uint8Array.from({ length: 70_000 }, (_, i) => i % 251)
      assert.deepEqual(new Uint8Array(encodeFrame(message, flag)), encodeEnvelope(flag, message), `as connect-es frames flag ${flag}`)
    }
    assert.equal(frameLength(Buffer.from([9, 9, 1, 2, 3, 4]), 1), 0x01020304)
    assert.equal(frameLength(new Uint8Array([0, 0xff, 0xff, 0xff, 0xfe])), 2 ** 32 - 2)
  })

  it('frames - split across chunks in any way, several in one chunk, empty messages; Buffers or plain Uint8Arrays', () => {
    const messages = [Buffer.from('hello'), Buffer.alloc(0), Buffer.alloc(70_000, 7), Buffer.from('x')]
    const wire = Buffer.concat(messages.map((m) => encodeFrame(m)))
    for (const [size, plain] of [1, 3, 5, 6, 4096, wire.length].flatMap((n) => [[n, false] as const, [n, true] as const])) {
      const parser = new FrameParser(1 << 20)
      const got: Uint8Array[] = []
      for (let at = 0; at < wire.length; at += size) {
        const chunk = wire.subarray(at, at + size)
        for (const f of parser.push(plain ? new Uint8Array(chunk) : chunk)) {
          assert.equal(f.compressed, false)
          got.push(f.data)
        }
      }
      assert.equal(parser.partial, false)
      assert.deepEqual(
        got.map((g) => Buffer.from(g)),
        messages,
      )
    }
  })

  it('frames - a message declaring more than the maximum is refused at its prefix, before its bytes arrive', () => {
    const parser = new FrameParser(1024)
    const prefix = Buffer.from([0, 0, 0, 4, 1]) // 1025 bytes declared
    assert.throws(
      () => parser.push(prefix),
      rejectsWith(Code.ResourceExhausted, /message of 1025 bytes, more than the maximum of 1024 bytes/),
    )
    assert.throws(
      () => new FrameParser(1024).push(Buffer.from([0, 0x80, 0, 0, 0])),
      rejectsWith(Code.ResourceExhausted, /message of 2147483648 bytes/),
    )
    const exact = new FrameParser(1024)
    assert.equal(exact.push(encodeFrame(Buffer.alloc(1024))).length, 1)
  })

  it('frames - the compressed flag is reported; other flag bits are a protocol error', () => {
    const parser = new FrameParser(100)
    const [f] = parser.push(Buffer.from([1, 0, 0, 0, 1, 42]))
    assert.equal(f?.compressed, true)
    assert.throws(() => new FrameParser(100).push(Buffer.from([2, 0, 0, 0, 0])), rejectsWith(Code.Internal, /flags 0x2/))
  })

  it('frames - a partial message is reported as partial', () => {
    const parser = new FrameParser(100)
    assert.deepEqual(parser.push(Buffer.from([0, 0, 0])), [])
    assert.equal(parser.partial, true)
  })

  it('decompress - gzip and deflate; output beyond the maximum is RESOURCE_EXHAUSTED; garbage is INTERNAL', async () => {
    const data = Buffer.alloc(10_000, 'a')
    assert.deepEqual(Buffer.from(await decompress('gzip', gzipSync(data), 10_000)), data)
    assert.deepEqual(Buffer.from(await decompress('deflate', deflateSync(data), 10_000)), data)
    await assert.rejects(
      decompress('gzip', gzipSync(data), 9_999),
      rejectsWith(Code.ResourceExhausted, /more than the maximum of 9999 bytes/),
    )
    await assert.rejects(decompress('gzip', Buffer.from('not gzip'), 10_000), rejectsWith(Code.Internal, /could not decompress/))
  })
})
