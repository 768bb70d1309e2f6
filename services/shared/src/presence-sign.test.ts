import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import fc from 'fast-check'
import { Code, StargateError } from './errors.ts'
import { PresenceRecordSchema, SignedPresenceSchema } from './gen/stargate/v1/envelope_pb.js'
import { NatType } from './gen/stargate/v1/gateway_pb.js'
import { signPresence, verifyPresence } from './presence-sign.ts'

const key = await generateKeyPair('Ed25519')
const other = await generateKeyPair('Ed25519')
const peerId = peerIdFromPrivateKey(key).toString()
const otherId = peerIdFromPrivateKey(other).toString()

const init = {
  peerId,
  directAddrs: ['/ip4/127.0.0.1/tcp/4001'],
  circuitAddrs: [`/ip4/127.0.0.1/tcp/4002/p2p/${otherId}/p2p-circuit/p2p/${peerId}`],
  capabilities: ['echo'],
  natType: NatType.PRIVATE,
  issuedAt: timestampFromMs(1_800_000_000_000),
  sequence: 7n,
}

async function rejects(p: Promise<unknown>, code: Code, re?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof StargateError, `expected StargateError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    if (re != null) assert.match(err.message, re)
    return true
  })
}

describe('presence-sign', () => {
  it('presence-sign - a signed record verifies and keeps every field', async () => {
    const record = await verifyPresence(await signPresence(init, key))
    assert.equal(record.peerId, peerId)
    assert.deepEqual(record.directAddrs, init.directAddrs)
    assert.deepEqual(record.circuitAddrs, init.circuitAddrs)
    assert.deepEqual(record.capabilities, ['echo'])
    assert.equal(record.natType, NatType.PRIVATE)
    assert.equal(record.sequence, 7n)
    assert.equal(record.issuedAt?.seconds, init.issuedAt.seconds)
  })

  it('presence-sign - peer_id defaults to the signing key, a different one is refused', async () => {
    const record = await verifyPresence(await signPresence({ ...init, peerId: '' }, key))
    assert.equal(record.peerId, peerId)
    await rejects(signPresence({ ...init, peerId: otherId }, key), Code.InvalidArgument, /cannot be signed/)
  })

  it('presence-sign - a record signed by another key is rejected', async () => {
    // The forger claims peerId but signs with its own key.
    const forged = fromBinary(SignedPresenceSchema, await signPresence({ ...init, peerId: otherId }, other))
    forged.record = toBinary(PresenceRecordSchema, create(PresenceRecordSchema, init))
    await rejects(verifyPresence(toBinary(SignedPresenceSchema, forged)), Code.PermissionDenied, /not signed by/)
  })

  it('presence-sign - a modified record is rejected', async () => {
    const signed = fromBinary(SignedPresenceSchema, await signPresence(init, key))
    const record = fromBinary(PresenceRecordSchema, signed.record)
    record.directAddrs = ['/ip4/6.6.6.6/tcp/1']
    signed.record = toBinary(PresenceRecordSchema, record)
    await rejects(verifyPresence(toBinary(SignedPresenceSchema, signed)), Code.PermissionDenied)
  })

  it('presence-sign - unsigned records and garbage are rejected', async () => {
    const unsigned = toBinary(
      SignedPresenceSchema,
      create(SignedPresenceSchema, { record: toBinary(PresenceRecordSchema, create(PresenceRecordSchema, init)) }),
    )
    await rejects(verifyPresence(unsigned), Code.PermissionDenied, /not signed/)
    const badLength = fromBinary(SignedPresenceSchema, await signPresence(init, key))
    badLength.signature = badLength.signature.subarray(0, 10)
    await rejects(verifyPresence(toBinary(SignedPresenceSchema, badLength)), Code.PermissionDenied)
    await rejects(verifyPresence(new Uint8Array([0x0a, 0xff])), Code.InvalidArgument)
    await rejects(verifyPresence(new Uint8Array(0)), Code.InvalidArgument, /no peer_id/)
    const notAPeer = toBinary(
      SignedPresenceSchema,
      create(SignedPresenceSchema, {
        record: toBinary(PresenceRecordSchema, create(PresenceRecordSchema, { peerId: 'garbage' })),
        signature: new Uint8Array(64),
      }),
    )
    await rejects(verifyPresence(notAPeer), Code.InvalidArgument, /not a valid peer id/)
  })
})

describe('presence-sign fuzz', () => {
  it('presence-sign - property: arbitrary or mutated bytes into verifyPresence only ever throw StargateError', async () => {
    const valid = await signPresence(init, key)
    const mutated = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((edits) => {
      const bytes = Uint8Array.from(valid)
      for (const [at, v] of edits) bytes[at % bytes.length] = v
      return bytes
    })
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated), async (bytes) => {
        try {
          const record = await verifyPresence(bytes)
          // Whatever verifies must be exactly the record that was signed.
          assert.equal(record.peerId, peerId)
          assert.deepEqual(record.directAddrs, init.directAddrs)
        } catch (err: unknown) {
          if (!(err instanceof StargateError)) throw err
          assert.ok([Code.InvalidArgument, Code.PermissionDenied].includes(err.code), err.message)
        }
      }),
      { seed: 20261123, numRuns: 300 },
    )
  })
})
