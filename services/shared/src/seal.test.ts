import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fromBinary, toBinary } from '@bufbuild/protobuf'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import fc from 'fast-check'
import { Code, StargateError } from './errors.ts'
import { SealedMessageSchema } from './gen/stargate/v1/envelope_pb.js'
import { open, ReplayGuard, SEAL_DEFAULTS, seal, sealedCodec, signedBytesOf } from './seal.ts'

const NOW = 1_800_000_000_000
const MARKER = 'TOP-SECRET-MARKER-7f3a'
const plaintext = new TextEncoder().encode(`payload ${MARKER} end`)

const alice = await generateKeyPair('Ed25519')
const bob = await generateKeyPair('Ed25519')
const eve = await generateKeyPair('Ed25519')
const id = (k: PrivateKey): string => peerIdFromPrivateKey(k).toString()

function throwsCode(p: () => unknown, code: Code, re?: RegExp): void {
  assert.throws(p, (err: unknown) => {
    assert.ok(err instanceof StargateError, `expected StargateError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    if (re != null) assert.match(err.message, re)
    return true
  })
}

function sealedToBob(nowMs = NOW): Uint8Array {
  return seal(plaintext, { senderKey: alice, recipientPeerId: id(bob), nowMs })
}

function tamper(bytes: Uint8Array, edit: (m: ReturnType<typeof fromBinary<typeof SealedMessageSchema>>) => void): Uint8Array {
  const m = fromBinary(SealedMessageSchema, bytes)
  edit(m)
  return toBinary(SealedMessageSchema, m)
}

describe('seal', () => {
  it('seal - roundtrip: the recipient opens it and learns the verified sender', async () => {
    const opened = open(sealedToBob(), { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW + 1000 })
    assert.equal(opened.senderPeerId, id(alice))
    assert.deepEqual(opened.frame, plaintext)
  })

  it('seal - roundtrip with the expected sender and an empty frame', async () => {
    const bytes = seal(new Uint8Array(0), { senderKey: alice, recipientPeerId: id(bob), nowMs: NOW })
    const opened = open(bytes, { recipientKey: bob, expectedSender: id(alice), replay: new ReplayGuard(), nowMs: NOW })
    assert.equal(opened.frame.length, 0)
  })

  it('seal - an eavesdropper never sees the plaintext in the sealed bytes', async () => {
    const bytes = sealedToBob()
    const asText = Buffer.from(bytes).toString('latin1')
    assert.ok(!asText.includes(MARKER))
    assert.ok(!asText.includes('payload'))
    // Two seals of the same frame differ (fresh nonce); the ephemeral key is replaced after ephemeralRotateMs.
    const again = fromBinary(SealedMessageSchema, sealedToBob())
    const first = fromBinary(SealedMessageSchema, bytes)
    assert.notDeepEqual(again.ciphertext, first.ciphertext)
    assert.notDeepEqual(again.nonce, first.nonce)
    assert.deepEqual(again.ephemeralPublicKey, first.ephemeralPublicKey)
    const later = fromBinary(SealedMessageSchema, sealedToBob(NOW + SEAL_DEFAULTS.ephemeralRotateMs))
    assert.notDeepEqual(later.ephemeralPublicKey, first.ephemeralPublicKey)
  })

  it("seal - the signature is the one libp2p's key.sign() makes (deterministic Ed25519) and verifies with libp2p", async () => {
    const m = fromBinary(SealedMessageSchema, sealedToBob())
    assert.deepEqual(m.signature, new Uint8Array(await alice.sign(signedBytesOf(m))))
    assert.equal(await alice.publicKey.verify(signedBytesOf(m), m.signature), true)
  })

  it('seal - another sender reusing a cached ephemeral key of Alice cannot pass off her ciphertext', async () => {
    const replay = new ReplayGuard()
    const fromAlice = fromBinary(SealedMessageSchema, sealedToBob())
    open(toBinary(SealedMessageSchema, fromAlice), { recipientKey: bob, replay, nowMs: NOW })
    const fromEve = fromBinary(SealedMessageSchema, seal(plaintext, { senderKey: eve, recipientPeerId: id(bob), nowMs: NOW }))
    fromEve.ephemeralPublicKey = fromAlice.ephemeralPublicKey
    fromEve.nonce = fromAlice.nonce.map((b) => b ^ 0xff)
    fromEve.ciphertext = fromAlice.ciphertext
    fromEve.signature = await eve.sign(signedBytesOf(fromEve))
    throwsCode(
      () => open(toBinary(SealedMessageSchema, fromEve), { recipientKey: bob, replay, nowMs: NOW }),
      Code.PermissionDenied,
      /cannot be decrypted/,
    )
  })

  it('seal - a third party with another key cannot open it', async () => {
    const bytes = sealedToBob()
    throwsCode(() => open(bytes, { recipientKey: eve, replay: new ReplayGuard(), nowMs: NOW }), Code.PermissionDenied, /addressed to/)
    // Even if Eve rewrites the recipient to herself, the signature no longer holds.
    const redirected = tamper(bytes, (m) => {
      m.recipientPeerId = id(eve)
    })
    throwsCode(() => open(redirected, { recipientKey: eve, replay: new ReplayGuard(), nowMs: NOW }), Code.PermissionDenied, /not signed/)
  })

  it('seal - tampered ciphertext is rejected', async () => {
    const bytes = tamper(sealedToBob(), (m) => {
      m.ciphertext[0] = (m.ciphertext[0] ?? 0) ^ 1
    })
    throwsCode(() => open(bytes, { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW }), Code.PermissionDenied, /not signed/)
  })

  it('seal - ciphertext re-signed by the sender but not matching the AAD is rejected at decryption', async () => {
    // Eve seals to Bob herself; a valid signature from Eve does not make Alice's ciphertext hers.
    const fromAlice = fromBinary(SealedMessageSchema, sealedToBob())
    const fromEve = fromBinary(SealedMessageSchema, seal(plaintext, { senderKey: eve, recipientPeerId: id(bob), nowMs: NOW }))
    fromEve.ciphertext = fromAlice.ciphertext
    fromEve.signature = await eve.sign(signedBytesOf(fromEve))
    throwsCode(
      () => open(toBinary(SealedMessageSchema, fromEve), { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW }),
      Code.PermissionDenied,
      /cannot be decrypted/,
    )
  })

  it('seal - a forged sender is rejected', async () => {
    const bytes = tamper(sealedToBob(), (m) => {
      m.senderPeerId = id(eve)
    })
    throwsCode(() => open(bytes, { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW }), Code.PermissionDenied, /not signed/)
  })

  it('seal - a sender other than the expected one is rejected', async () => {
    const bytes = seal(plaintext, { senderKey: eve, recipientPeerId: id(bob), nowMs: NOW })
    throwsCode(
      () => open(bytes, { recipientKey: bob, expectedSender: id(alice), replay: new ReplayGuard(), nowMs: NOW }),
      Code.PermissionDenied,
      /expected/,
    )
  })

  it('seal - a tampered timestamp is rejected', async () => {
    const bytes = tamper(sealedToBob(), (m) => {
      if (m.sentAt != null) m.sentAt.seconds += 1n
    })
    throwsCode(() => open(bytes, { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW }), Code.PermissionDenied, /not signed/)
  })

  it('seal - a stale or future timestamp is rejected', async () => {
    const w = SEAL_DEFAULTS.replayWindowMs
    const old = sealedToBob(NOW - w - 1)
    throwsCode(() => open(old, { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW }), Code.PermissionDenied, /outside/)
    const future = sealedToBob(NOW + w + 1)
    throwsCode(() => open(future, { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW }), Code.PermissionDenied, /outside/)
    // At the edge of the window it still opens.
    const edge = sealedToBob(NOW - w)
    open(edge, { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW })
    // A smaller window from the guard applies.
    throwsCode(
      () => open(sealedToBob(NOW - 2000), { recipientKey: bob, replay: new ReplayGuard({ replayWindowMs: 1000 }), nowMs: NOW }),
      Code.PermissionDenied,
      /outside/,
    )
  })

  it('seal - a replayed message is rejected', async () => {
    const replay = new ReplayGuard()
    const bytes = sealedToBob()
    open(bytes, { recipientKey: bob, replay, nowMs: NOW })
    throwsCode(() => open(bytes, { recipientKey: bob, replay, nowMs: NOW + 10 }), Code.PermissionDenied, /replay/)
    // A fresh message from the same sender is still accepted.
    open(sealedToBob(), { recipientKey: bob, replay, nowMs: NOW + 20 })
    assert.equal(replay.size, 2)
  })

  it('seal - malformed input is INVALID_ARGUMENT', async () => {
    const replay = new ReplayGuard()
    throwsCode(() => open(new Uint8Array([0xff, 0xff, 0xff]), { recipientKey: bob, replay }), Code.InvalidArgument)
    throwsCode(() => open(new Uint8Array(0), { recipientKey: bob, replay }), Code.InvalidArgument, /no sender/)
    const shortNonce = tamper(sealedToBob(), (m) => {
      m.nonce = m.nonce.subarray(0, 12)
    })
    throwsCode(() => open(shortNonce, { recipientKey: bob, replay, nowMs: NOW }), Code.InvalidArgument, /nonce/)
    throwsCode(() => seal(plaintext, { senderKey: alice, recipientPeerId: 'not-a-peer-id' }), Code.InvalidArgument, /not a valid peer id/)
    const secp = await generateKeyPair('secp256k1')
    throwsCode(() => seal(plaintext, { senderKey: alice, recipientPeerId: id(secp) }), Code.InvalidArgument, /not an Ed25519/)
  })
})

describe('sealedCodec', () => {
  it('sealedCodec - the NATS codec seals to a peer and opens with the expected sender, once', () => {
    const a = sealedCodec(alice)
    const b = sealedCodec(bob)
    const bytes = a.seal(plaintext, id(bob))
    const opened = b.open(bytes, id(alice))
    assert.equal(opened.senderPeerId, id(alice))
    assert.deepEqual(opened.frame, plaintext)
    throwsCode(() => b.open(bytes), Code.PermissionDenied, /replay/)
    throwsCode(() => b.open(a.seal(plaintext, id(bob)), id(eve)), Code.PermissionDenied, /expected/)
    // The answer goes back sealed to the caller.
    assert.deepEqual(a.open(b.seal(opened.frame, id(alice)), id(bob)).frame, plaintext)
  })
})

describe('ReplayGuard', () => {
  it('ReplayGuard - forgets entries after they expire', () => {
    const g = new ReplayGuard({ replayWindowMs: 1000 })
    g.add('a', 2000, 1000)
    assert.equal(g.has('a', 1500), true)
    assert.equal(g.has('a', 2001), false)
    g.add('b', 5000, 2500)
    assert.equal(g.size, 1)
  })

  it('ReplayGuard - memory is bounded, the oldest entry goes first', () => {
    const g = new ReplayGuard({ maxEntries: 3 })
    for (const n of ['a', 'b', 'c', 'd']) g.add(n, 10_000, 0)
    assert.equal(g.size, 3)
    assert.equal(g.has('a', 0), false)
    assert.equal(g.has('d', 0), true)
    assert.equal(g.has('b', 0), true)
  })

  it('ReplayGuard - rejects a non-positive window or size', () => {
    assert.throws(() => new ReplayGuard({ replayWindowMs: 0 }), RangeError)
    assert.throws(() => new ReplayGuard({ maxEntries: 0 }), RangeError)
  })
})

describe('seal fuzz', () => {
  it('seal - property: arbitrary or mutated bytes into open() only ever throw StargateError', async () => {
    const valid = sealedToBob()
    const mutated = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((edits) => {
      const bytes = Uint8Array.from(valid)
      for (const [at, v] of edits) bytes[at % bytes.length] = v
      return bytes
    })
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated), async (bytes) => {
        try {
          open(bytes, { recipientKey: bob, replay: new ReplayGuard(), nowMs: NOW })
        } catch (err: unknown) {
          if (!(err instanceof StargateError)) throw err
          assert.ok([Code.InvalidArgument, Code.PermissionDenied].includes(err.code), err.message)
        }
      }),
      { seed: 20261123, numRuns: 300 },
    )
  })
})
