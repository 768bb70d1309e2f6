import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { NOISE_KEY_OBJECT_MIN_BYTES, noiseCrypto } from './noise-crypto.ts'

/** libp2p-noise's own copy of uint8arraylist is another type to TypeScript; the objects are the same kind. */
type Message = Parameters<typeof noiseCrypto.chaCha20Poly1305Encrypt>[0]
const listOf = (...chunks: Uint8Array[]): Message => new Uint8ArrayList(...chunks) as unknown as Message

const bytes = (x: Uint8Array | Uint8ArrayList | { subarray(): Uint8Array }): Buffer =>
  Buffer.from(x instanceof Uint8Array ? x : x.subarray())

// Sizes on both sides of the switch to node:crypto, up to a Noise message's largest plaintext.
const SIZES = [0, 1, 64, NOISE_KEY_OBJECT_MIN_BYTES - 1, NOISE_KEY_OBJECT_MIN_BYTES, 1199, 1200, 4096, 65_519]

describe('noise crypto', () => {
  it('noise crypto - seals exactly as libp2p-noise does, and each opens what the other sealed', () => {
    const k = randomBytes(32)
    const ad = randomBytes(32)
    for (const size of SIZES) {
      const nonce = randomBytes(12)
      const text = randomBytes(size)
      const ours = bytes(noiseCrypto.chaCha20Poly1305Encrypt(text, nonce, ad, k))
      const theirs = bytes(defaultCrypto.chaCha20Poly1305Encrypt(text, nonce, ad, k))
      assert.ok(ours.equals(theirs), `${size} bytes: same ciphertext and tag`)
      assert.ok(bytes(noiseCrypto.chaCha20Poly1305Decrypt(theirs, nonce, ad, k)).equals(text), `${size} bytes: opens theirs`)
      assert.ok(
        bytes(defaultCrypto.chaCha20Poly1305Decrypt(Buffer.from(ours), nonce, ad, k)).equals(text),
        `${size} bytes: theirs opens ours`,
      )
    }
  })

  it('noise crypto - a message given as a list of chunks is sealed and opened like the same bytes in one piece', () => {
    const k = randomBytes(32)
    const nonce = randomBytes(12)
    const text = randomBytes(5000)
    const list = listOf(text.subarray(0, 100), text.subarray(100, 3000), text.subarray(3000))
    const sealed = bytes(noiseCrypto.chaCha20Poly1305Encrypt(list, nonce, new Uint8Array(0), k))
    assert.ok(sealed.equals(bytes(noiseCrypto.chaCha20Poly1305Encrypt(text, nonce, new Uint8Array(0), k))))
    const sealedList = listOf(sealed.subarray(0, 7), sealed.subarray(7))
    assert.ok(bytes(noiseCrypto.chaCha20Poly1305Decrypt(sealedList, nonce, new Uint8Array(0), k)).equals(text))
  })

  it('noise crypto - a tampered message, a wrong key or a wrong nonce is refused on both paths', () => {
    for (const size of [64, 4096]) {
      const k = randomBytes(32)
      const nonce = randomBytes(12)
      const sealed = bytes(noiseCrypto.chaCha20Poly1305Encrypt(randomBytes(size), nonce, new Uint8Array(0), k))
      const tampered = Buffer.from(sealed)
      tampered[size >> 1]! ^= 1
      assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(tampered, nonce, new Uint8Array(0), k), `${size}: tampered`)
      assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, new Uint8Array(0), randomBytes(32)), `${size}: wrong key`)
      assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(sealed, randomBytes(12), new Uint8Array(0), k), `${size}: wrong nonce`)
    }
  })

  it('noise crypto - a key is used as given each time, also when a session key object was made for the same bytes', () => {
    const k = randomBytes(32)
    const nonce = randomBytes(12)
    const text = randomBytes(4096)
    const first = bytes(noiseCrypto.chaCha20Poly1305Encrypt(text, nonce, new Uint8Array(0), k))
    const other = Buffer.from(k)
    other[0]! ^= 1
    const second = bytes(noiseCrypto.chaCha20Poly1305Encrypt(text, nonce, new Uint8Array(0), other))
    assert.ok(!first.equals(second), 'another key gives another ciphertext')
    assert.ok(second.equals(bytes(defaultCrypto.chaCha20Poly1305Encrypt(text, nonce, new Uint8Array(0), other))))
  })
})
