import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { equals } from '@bufbuild/protobuf'
import { decodePeerFrame } from '@stargate/shared/envelope'
import { FrameDecoder } from '@stargate/shared/framing'
import { PeerFrameSchema } from '@stargate/shared/gen/envelope'
import fc from 'fast-check'
import { dataFrame, encodeDataFrameChunks } from './frames.ts'

describe('tunnel frames', () => {
  it('frames - property: a data frame written as header + uncopied payload decodes to the same frame', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }), fc.uint8Array({ maxLength: 300 }), fc.boolean(), (id, data, eos) => {
        const [header, payload] = encodeDataFrameChunks(id, data, eos)
        assert.equal(payload, data, 'the payload is the caller’s own array')
        const frames = new FrameDecoder({ maxFrameBytes: 1 << 20 }).push(Buffer.concat([header, payload]))
        assert.equal(frames.length, 1)
        assert.ok(equals(PeerFrameSchema, decodePeerFrame(frames[0]!), dataFrame(id, data, eos)))
      }),
      { seed: 20261201, numRuns: 300 },
    )
  })
})
