import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, toBinary } from '@bufbuild/protobuf'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import fc from 'fast-check'
import { Code, StargateError } from './errors.ts'
import { SealedMessageSchema } from './gen/stargate/v1/envelope_pb.js'
import { ReplayGuard, SEAL_DEFAULTS, SEAL_HEADER_BYTES, SEAL_KDF_INFO, SEAL_OVERHEAD_BYTES, Sealer, transcript } from './seal.ts'

const NOW = 1_800_000_000_000
const MARKER = 'TOP-SECRET-MARKER-7f3a'
const plaintext = new TextEncoder().encode(`payload ${MARKER} end`)

const alice = await generateKeyPair('Ed25519')
const bob = await generateKeyPair('Ed25519')
const eve = await generateKeyPair('Ed25519')
const id = (k: PrivateKey): string => peerIdFromPrivateKey(k).toString()

// Header offsets (the wire format documented in seal.ts).
const SENDER = 1
const RECIPIENT = 33
const SENT_AT = 65
const SESSION = 73
const COUNTER = 89

function throwsCode(p: () => unknown, code: Code, re?: RegExp): void {
  assert.throws(p, (err: unknown) => {
    assert.ok(err instanceof StargateError, `expected StargateError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    if (re != null) assert.match(err.message, re)
    return true
  })
}

const sealers = (): { a: Sealer; b: Sealer; e: Sealer } => ({
  a: new Sealer(alice, { now: () => NOW }),
  b: new Sealer(bob, { now: () => NOW }),
  e: new Sealer(eve, { now: () => NOW }),
})

function edit(bytes: Uint8Array, at: number, value: Uint8Array | number): Uint8Array {
  const out = Uint8Array.from(bytes)
  if (typeof value === 'number') out[at] = (out[at] ?? 0) ^ value
  else out.set(value, at)
  return out
}

describe('Sealer', () => {
  it('seal - roundtrip: the recipient opens it and learns the authenticated sender', () => {
    const { a, b } = sealers()
    const opened = b.open(a.seal(plaintext, id(bob)), { expectedSender: id(alice) })
    assert.equal(opened.senderPeerId, id(alice))
    assert.deepEqual(Uint8Array.from(opened.frame), plaintext)
    const empty = b.open(a.seal(new Uint8Array(0), id(bob)))
    assert.equal(empty.frame.length, 0)
    // The answer goes back sealed to the caller.
    assert.deepEqual(Uint8Array.from(a.open(b.seal(opened.frame, id(alice)), { expectedSender: id(bob) }).frame), plaintext)
  })

  it('seal - no public-key operation per message once a pair is known', () => {
    const { a, b } = sealers()
    for (let i = 0; i < 500; i++) {
      const req = b.open(a.seal(plaintext, id(bob)), { expectedSender: id(alice) })
      a.open(b.seal(req.frame, id(alice)), { expectedSender: id(bob) })
    }
    assert.equal(a.pairSecretsDerived, 1)
    assert.equal(b.pairSecretsDerived, 1)
  })

  it('seal - the wire format is the documented one: version 2 header, HKDF key per session and direction, ChaCha20-Poly1305', () => {
    const { a } = sealers()
    const bytes = a.seal(plaintext, id(bob))
    assert.equal(bytes.length, plaintext.length + SEAL_OVERHEAD_BYTES)
    assert.equal(bytes[0], 2)
    assert.deepEqual(bytes.subarray(SENDER, RECIPIENT), alice.publicKey.raw)
    assert.deepEqual(bytes.subarray(RECIPIENT, SENT_AT), bob.publicKey.raw)
    assert.equal(Buffer.from(bytes).readBigUInt64BE(SENT_AT), BigInt(NOW))
    assert.equal(Buffer.from(bytes).readBigUInt64BE(COUNTER), 0n)
    // Recomputed independently with @noble only, from the description in seal.ts.
    const secret = x25519.getSharedSecret(
      ed25519.utils.toMontgomerySecret(alice.raw.subarray(0, 32)),
      ed25519.utils.toMontgomery(bob.publicKey.raw),
    )
    const info = transcript(SEAL_KDF_INFO, [new TextEncoder().encode(id(alice)), new TextEncoder().encode(id(bob))])
    const key = hkdf(sha256, secret, bytes.subarray(SESSION, COUNTER), info, 32)
    const nonce = new Uint8Array(12) // four zero bytes and the 64-bit counter (0)
    const expected = chacha20poly1305(key, nonce, bytes.subarray(0, SEAL_HEADER_BYTES)).encrypt(plaintext)
    assert.deepEqual(bytes.subarray(SEAL_HEADER_BYTES), expected)
  })

  it('seal - an eavesdropper sees sender, recipient, time, session and counter, never the plaintext; nonces never repeat', () => {
    const { a } = sealers()
    const first = a.seal(plaintext, id(bob))
    const second = a.seal(plaintext, id(bob))
    const toEve = a.seal(plaintext, id(eve))
    for (const bytes of [first, second, toEve]) assert.ok(!Buffer.from(bytes).includes(Buffer.from(MARKER)))
    assert.notDeepEqual(first.subarray(SEAL_HEADER_BYTES), second.subarray(SEAL_HEADER_BYTES))
    // One session per sealer; one counter across every recipient, never reused.
    assert.deepEqual(first.subarray(SESSION, COUNTER), toEve.subarray(SESSION, COUNTER))
    const counters = [first, second, toEve].map((x) => Buffer.from(x).readBigUInt64BE(COUNTER))
    assert.deepEqual(counters, [0n, 1n, 2n])
    // A new process (sealer) of the same identity has another session.
    const again = new Sealer(alice, { now: () => NOW }).seal(plaintext, id(bob))
    assert.notDeepEqual(again.subarray(SESSION, COUNTER), first.subarray(SESSION, COUNTER))
  })

  it('seal - a third party cannot open it, even after rewriting the recipient to itself', () => {
    const { a, e } = sealers()
    const bytes = a.seal(plaintext, id(bob))
    throwsCode(() => e.open(bytes), Code.PermissionDenied, /addressed to .* not to/)
    throwsCode(() => e.open(edit(bytes, RECIPIENT, eve.publicKey.raw)), Code.PermissionDenied, /fails authentication/)
    assert.equal(e.refusals.misaddressed, 1)
    assert.equal(e.refusals.forged, 1)
  })

  it('seal - a forged sender is rejected: Eve cannot pass her message off as Alice', () => {
    const { b, e } = sealers()
    const fromEve = e.seal(plaintext, id(bob))
    throwsCode(
      () => b.open(edit(fromEve, SENDER, alice.publicKey.raw)),
      Code.PermissionDenied,
      /claiming to be from .* fails authentication/,
    )
    // ...nor by re-encrypting: she does not have the Alice-Bob pair secret.
    throwsCode(() => b.open(fromEve, { expectedSender: id(alice) }), Code.PermissionDenied, /expected/)
    assert.equal(b.refusals.forged, 1)
    assert.equal(b.refusals.unexpected_sender, 1)
  })

  it('seal - tampered ciphertext, tag or any header field is rejected', () => {
    const { a, b } = sealers()
    const bytes = a.seal(plaintext, id(bob))
    const at = [SEAL_HEADER_BYTES, bytes.length - 1, SENT_AT + 7, SESSION, COUNTER + 7]
    for (const offset of at) {
      throwsCode(() => b.open(edit(bytes, offset, 1)), Code.PermissionDenied, /fails authentication/)
    }
    // The genuine message still opens afterwards: failed forgeries are not recorded.
    assert.deepEqual(Uint8Array.from(b.open(bytes).frame), plaintext)
  })

  it('seal - a message reflected back (sender and recipient swapped) is rejected: keys differ per direction', () => {
    const { a } = sealers()
    const toBob = a.seal(plaintext, id(bob))
    const reflected = edit(edit(toBob, SENDER, bob.publicKey.raw), RECIPIENT, alice.publicKey.raw)
    throwsCode(() => a.open(reflected), Code.PermissionDenied, /fails authentication/)
  })

  it('seal - a replay inside the window is rejected; a fresh message from the same sender is accepted', () => {
    const { a, b } = sealers()
    const bytes = a.seal(plaintext, id(bob))
    b.open(bytes)
    throwsCode(() => b.open(bytes), Code.PermissionDenied, /already received \(replay\)/)
    throwsCode(() => b.open(bytes, { nowMs: NOW + SEAL_DEFAULTS.replayWindowMs }), Code.PermissionDenied, /replay/)
    b.open(a.seal(plaintext, id(bob)))
    assert.equal(b.refusals.replay, 2)
  })

  it('seal - a replay outside the window, or a message from too far in the future, is rejected as stale', () => {
    const { a, b } = sealers()
    const w = SEAL_DEFAULTS.replayWindowMs
    const bytes = a.seal(plaintext, id(bob))
    b.open(bytes)
    throwsCode(() => b.open(bytes, { nowMs: NOW + w + 1 }), Code.PermissionDenied, /outside the ±60000 ms window/)
    throwsCode(() => b.open(a.seal(plaintext, id(bob), NOW + w + 1)), Code.PermissionDenied, /outside/)
    // At the edge of the window it still opens.
    b.open(a.seal(plaintext, id(bob), NOW - w))
    assert.equal(b.refusals.stale, 2)
  })

  it('seal - messages of one session may arrive out of order within the counter window', () => {
    const { a, b } = sealers()
    const sealed = Array.from({ length: 5 }, () => a.seal(plaintext, id(bob)))
    for (const i of [4, 0, 2, 1, 3]) b.open(sealed[i]!)
    for (const i of [0, 4]) throwsCode(() => b.open(sealed[i]!), Code.PermissionDenied, /replay/)
  })

  it('seal - a frame refused by the check is not recorded, so the genuine delivery still succeeds', () => {
    const { a, b } = sealers()
    const bytes = a.seal(plaintext, id(bob))
    assert.throws(
      () =>
        b.open(bytes, {
          check: () => {
            throw new StargateError(Code.PermissionDenied, 'answer to another request')
          },
        }),
      /another request/,
    )
    assert.deepEqual(Uint8Array.from(b.open(bytes).frame), plaintext)
  })

  it('seal - version 1 (protobuf SealedMessage), unknown versions and malformed input are INVALID_ARGUMENT', () => {
    const { a, b } = sealers()
    const v1 = toBinary(
      SealedMessageSchema,
      create(SealedMessageSchema, { senderPeerId: id(alice), recipientPeerId: id(bob), nonce: new Uint8Array(24), ciphertext: plaintext }),
    )
    throwsCode(() => b.open(v1), Code.InvalidArgument, /version 1 .* no longer accepts: upgrade the sender/)
    throwsCode(() => b.open(edit(a.seal(plaintext, id(bob)), 0, new Uint8Array([3]))), Code.InvalidArgument, /unknown version 3/)
    throwsCode(() => b.open(new Uint8Array(0)), Code.InvalidArgument, /shorter/)
    throwsCode(() => b.open(new Uint8Array([2, 1, 2])), Code.InvalidArgument, /shorter/)
    throwsCode(() => a.seal(plaintext, 'not-a-peer-id'), Code.InvalidArgument, /not a valid peer id/)
    assert.deepEqual([b.refusals.version, b.refusals.malformed], [2, 2])
  })

  it('seal - a secp256k1 peer id cannot be sealed to', async () => {
    const secp = await generateKeyPair('secp256k1')
    throwsCode(() => sealers().a.seal(plaintext, id(secp)), Code.InvalidArgument, /not an Ed25519/)
  })

  it('seal - the peer cache is bounded; an evicted peer is derived again and still works', () => {
    const a = new Sealer(alice, { now: () => NOW, maxCachedPeers: 1 })
    const b = new Sealer(bob, { now: () => NOW })
    const e = new Sealer(eve, { now: () => NOW })
    for (let i = 0; i < 3; i++) {
      b.open(a.seal(plaintext, id(bob)))
      e.open(a.seal(plaintext, id(eve)))
    }
    assert.equal(a.pairSecretsDerived, 6)
    assert.equal(b.pairSecretsDerived, 1)
  })

  it('seal - property: arbitrary or mutated bytes into open() only ever throw StargateError', () => {
    const { a } = sealers()
    const valid = a.seal(plaintext, id(bob))
    const mutated = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((edits) => {
      const bytes = Uint8Array.from(valid)
      for (const [at, v] of edits) bytes[at % bytes.length] = v
      return bytes
    })
    const b = new Sealer(bob, { now: () => NOW })
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated), (bytes) => {
        try {
          b.open(bytes)
        } catch (err: unknown) {
          if (!(err instanceof StargateError)) throw err
          assert.ok([Code.InvalidArgument, Code.PermissionDenied].includes(err.code), err.message)
        }
      }),
      { seed: 20261123, numRuns: 500 },
    )
  })
})

describe('ReplayGuard', () => {
  it('ReplayGuard - refuses a counter seen before and one too far behind the newest', () => {
    const g = new ReplayGuard({ counterWindow: 64 })
    g.accept('s', 'x', 100, NOW, NOW)
    assert.match(g.check('s', 'x', 100) ?? '', /already received/)
    assert.equal(g.check('s', 'x', 99), undefined)
    assert.equal(g.check('s', 'y', 100), undefined, 'another session is independent')
    assert.equal(g.check('t', 'x', 100), undefined, 'another sender is independent')
    g.accept('s', 'x', 5000, NOW, NOW)
    assert.match(g.check('s', 'x', 5000 - 64) ?? '', /behind the newest/)
    assert.equal(g.check('s', 'x', 5000 - 63), undefined)
    assert.throws(() => g.accept('s', 'x', 5000, NOW, NOW), /replay/)
  })

  it('ReplayGuard - bits are cleared as the window slides, also across word boundaries', () => {
    const g = new ReplayGuard({ counterWindow: 64 })
    for (let c = 0; c < 300; c += 3) g.accept('s', 'x', c, NOW, NOW)
    for (let c = 300 - 63; c < 300; c++) {
      assert.equal(g.check('s', 'x', c) != null, c % 3 === 0, `counter ${c}`)
    }
  })

  it('ReplayGuard - fails closed when full: new sessions are refused, known ones go on, nothing inside its window is forgotten', () => {
    const g = new ReplayGuard({ maxSessions: 2, replayWindowMs: 1000 })
    g.accept('a', '1', 0, NOW, NOW)
    g.accept('b', '1', 0, NOW, NOW)
    for (let i = 0; i < 10; i++) {
      assert.throws(
        () => g.accept(`flood-${i}`, '1', 0, NOW + 500, NOW + 500),
        (err: unknown) => err instanceof StargateError && err.code === Code.ResourceExhausted && /full/.test(err.message),
      )
    }
    g.accept('a', '1', 1, NOW + 500, NOW + 500)
    assert.match(g.check('a', '1', 0) ?? '', /replay/)
    assert.match(g.check('b', '1', 0) ?? '', /replay/)
    // b's session expires at NOW + 1000; a's was extended to NOW + 1500 by its latest message.
    g.accept('c', '1', 0, NOW + 1200, NOW + 1200)
    assert.equal(g.size, 2)
    assert.match(g.check('a', '1', 1) ?? '', /replay/)
  })

  it('ReplayGuard - one sender cannot take more than its share of sessions', () => {
    const g = new ReplayGuard({ maxSessionsPerSender: 3 })
    for (const s of ['1', '2', '3']) g.accept('flooder', s, 0, NOW, NOW)
    assert.throws(() => g.accept('flooder', '4', 0, NOW, NOW), /sessions of this sender/)
    g.accept('honest', '1', 0, NOW, NOW)
    assert.equal(g.size, 4)
  })

  it('ReplayGuard - rejects a non-positive bound or a counter window that is not a multiple of 32', () => {
    assert.throws(() => new ReplayGuard({ replayWindowMs: 0 }), RangeError)
    assert.throws(() => new ReplayGuard({ maxSessions: 0 }), RangeError)
    assert.throws(() => new ReplayGuard({ maxSessionsPerSender: 0 }), RangeError)
    assert.throws(() => new ReplayGuard({ counterWindow: 100 }), RangeError)
  })

  it('ReplayGuard - a Sealer refuses a new session when full and counts it', () => {
    const b = new Sealer(bob, { now: () => NOW, replay: new ReplayGuard({ maxSessions: 1 }) })
    const a = new Sealer(alice, { now: () => NOW })
    b.open(a.seal(plaintext, id(bob)))
    throwsCode(() => b.open(new Sealer(eve, { now: () => NOW }).seal(plaintext, id(bob))), Code.ResourceExhausted, /full/)
    b.open(a.seal(plaintext, id(bob)))
    assert.equal(b.refusals.full, 1)
  })
})
