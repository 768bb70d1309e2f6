import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { Code, StargateError } from './errors.ts'
import { encodeFrame, FrameDecoder } from './framing.ts'

/** Fixed seed and bounded runs: failures reproduce and the suite stays fast on a shared machine. */
const FC = { seed: 20261123, numRuns: 300 }

function expectCode(fn: () => unknown, code: Code, re?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof StargateError, `expected StargateError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    if (re != null) assert.match(err.message, re)
    return true
  })
}

/** Splits bytes at the given cut points (fractions of the length). */
function chunk(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b)
  const out: Uint8Array[] = []
  let prev = 0
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p))
    prev = p
  }
  return out
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts)
}

describe('framing', () => {
  it('framing - encodes the length as an unsigned varint', () => {
    assert.deepEqual([...encodeFrame(new Uint8Array(0))], [0])
    assert.deepEqual([...encodeFrame(new Uint8Array([7]))], [1, 7])
    assert.deepEqual([...encodeFrame(new Uint8Array(300)).subarray(0, 2)], [0xac, 0x02])
    assert.equal(encodeFrame(new Uint8Array(300)).length, 302)
  })

  it('framing - decodes several frames in one chunk and one frame split byte by byte', () => {
    const a = new Uint8Array([1, 2, 3])
    const b = new Uint8Array(200).fill(9)
    const wire = concat([encodeFrame(a), encodeFrame(new Uint8Array(0)), encodeFrame(b)])
    assert.deepEqual(new FrameDecoder({ maxFrameBytes: 1000 }).push(wire), [a, new Uint8Array(0), b])
    const d = new FrameDecoder({ maxFrameBytes: 1000 })
    const out: Uint8Array[] = []
    for (const byte of wire) out.push(...d.push(new Uint8Array([byte])))
    assert.deepEqual(out, [a, new Uint8Array(0), b])
    d.end()
  })

  it('framing - a declared length over the max is RESOURCE_EXHAUSTED before the body arrives', () => {
    const d = new FrameDecoder({ maxFrameBytes: 100 })
    expectCode(() => d.push(encodeFrame(new Uint8Array(101)).subarray(0, 2)), Code.ResourceExhausted, /101 bytes exceeds/)
    // A 64-bit length (the largest legal varint) is refused the same way.
    const huge = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
    expectCode(() => new FrameDecoder({ maxFrameBytes: 100 }).push(huge), Code.ResourceExhausted)
  })

  it('framing - a frame announced large costs buffer only for the bytes that arrived', () => {
    const length = 4 * 1024 * 1024
    const wire = encodeFrame(new Uint8Array(length).map((_, i) => i % 251))
    const header = wire.length - length
    const d = new FrameDecoder({ maxFrameBytes: length })
    assert.deepEqual(d.push(wire.subarray(0, header)), [])
    assert.ok(d.midFrame)
    assert.ok(d.bufferedBytes <= 4096, `header only: ${d.bufferedBytes} bytes buffered`)
    let at = header
    for (const step of [1, 10, 1000, 100_000, 1_000_000]) {
      assert.deepEqual(d.push(wire.subarray(at, at + step)), [])
      at += step
      const received = at - header
      assert.ok(d.bufferedBytes <= Math.max(4096, 2 * received), `${received} received, ${d.bufferedBytes} buffered`)
    }
    const [frame] = d.push(wire.subarray(at))
    assert.equal(frame?.byteLength, length)
    assert.ok(Buffer.from(frame!).equals(Buffer.from(wire.subarray(header))))
    assert.equal(d.bufferedBytes, 0)
    d.end()
  })

  it('framing - a malformed varint is INVALID_ARGUMENT', () => {
    expectCode(() => new FrameDecoder({ maxFrameBytes: 100 }).push(new Uint8Array(11).fill(0x80)), Code.InvalidArgument, /longer than 10/)
    const overflow = new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02])
    expectCode(() => new FrameDecoder({ maxFrameBytes: 100 }).push(overflow), Code.InvalidArgument, /overflows/)
  })

  it('framing - end() reports a truncated frame', () => {
    const d = new FrameDecoder({ maxFrameBytes: 100 })
    assert.deepEqual(d.push(encodeFrame(new Uint8Array(10)).subarray(0, 5)), [])
    expectCode(() => d.end(), Code.InvalidArgument, /after 4 of 10 bytes/)
  })

  it('framing - property: any chunking of any frame sequence decodes to the same frames', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 400 }), { maxLength: 12 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 20 }),
        (frames, cuts) => {
          const wire = concat(frames.map(encodeFrame))
          const d = new FrameDecoder({ maxFrameBytes: 400 })
          const out: Uint8Array[] = []
          for (const c of chunk(wire, cuts)) out.push(...d.push(c))
          d.end()
          assert.deepEqual(
            out.map((f) => Buffer.from(f)),
            frames.map((f) => Buffer.from(f)),
          )
        },
      ),
      FC,
    )
  })

  it('framing - property: arbitrary bytes never crash the decoder (only StargateError)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), fc.integer({ min: 0, max: 256 }), (chunks, max) => {
        const d = new FrameDecoder({ maxFrameBytes: max })
        let total = 0
        try {
          for (const c of chunks) for (const f of d.push(c)) total += f.length
          d.end()
        } catch (err: unknown) {
          if (!(err instanceof StargateError)) throw err
          assert.ok([Code.InvalidArgument, Code.ResourceExhausted].includes(err.code))
        }
        assert.ok(total <= chunks.reduce((n, c) => n + c.length, 0))
      }),
      { ...FC, numRuns: 1000 },
    )
  })
})
