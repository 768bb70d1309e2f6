/**
 * Micro-benchmark of NATS sealing: `node bench/seal.ts`. CPU time (process.cpuUsage) per seal and per
 * open of one frame, steady state (pair known), for frame sizes from a small call to 64 KiB, and the two
 * AEAD candidates on their own: node:crypto chacha20-poly1305 (with a KeyObject, as seal.ts uses it, and
 * with a raw key) and @noble/ciphers XChaCha20-Poly1305. Best and median of 7 rounds.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js'
import { ReplayGuard, Sealer } from '../services/shared/src/seal.ts'

const SIZES = [64, 1024, 65_536]
const ROUNDS = 7

/** Times op() in chunks of `chunk` calls; prepare() runs before each chunk, untimed. */
function measure(name: string, size: number, op: () => void, prepare: () => void = () => {}, chunk = 1_000): void {
  const n = Math.max(chunk, Math.min(20_000, Math.floor(20_000_000 / (size + 500))))
  const timed = (): number => {
    let us = 0
    for (let done = 0; done < n; done += chunk) {
      prepare()
      const t0 = process.cpuUsage()
      for (let i = 0; i < chunk; i++) op()
      const d = process.cpuUsage(t0)
      us += d.user + d.system
    }
    return us / (Math.ceil(n / chunk) * chunk)
  }
  timed()
  const perOp: number[] = []
  for (let r = 0; r < ROUNDS; r++) perOp.push(timed())
  perOp.sort((a, b) => a - b)
  const best = perOp[0]!.toFixed(1)
  const median = perOp[ROUNDS >> 1]!.toFixed(1)
  console.log(`${name.padEnd(44)} ${String(size).padStart(6)} B   ${best.padStart(7)} µs   (median ${median})`)
}

const alice = await generateKeyPair('Ed25519')
const bob = await generateKeyPair('Ed25519')
const bobId = peerIdFromPrivateKey(bob).toString()
const a = new Sealer(alice)
// A guard with room for the whole run: every message here is new, none is a replay.
const b = new Sealer(bob, { replay: new ReplayGuard({ replayWindowMs: 3_600_000 }) })

console.log('operation                                      frame   CPU per op (best of 7)')
for (const size of SIZES) {
  const frame = randomBytes(size)
  measure('seal (v2)', size, () => a.seal(frame, bobId))
  // Open needs a fresh message each time (a replay is refused): each chunk is sealed beforehand, untimed.
  const chunk = 100
  const batch: Uint8Array[] = []
  let next = 0
  measure(
    'open (v2)',
    size,
    () => b.open(batch[next++]!),
    () => {
      for (let i = 0; i < chunk; i++) batch[i] = a.seal(frame, bobId)
      next = 0
    },
    chunk,
  )
}

const key = randomBytes(32)
const keyObject = createSecretKey(key)
const aad = randomBytes(97)
const nonce12 = randomBytes(12)
const nonce24 = randomBytes(24)
for (const size of SIZES) {
  const frame = randomBytes(size)
  for (const [name, k] of [
    ['node chacha20-poly1305 seal+open, KeyObject', keyObject],
    ['node chacha20-poly1305 seal+open, raw key', key],
  ] as const) {
    measure(name, size, () => {
      const c = createCipheriv('chacha20-poly1305', k, nonce12, { authTagLength: 16 })
      c.setAAD(aad, { plaintextLength: frame.length })
      const ct = c.update(frame)
      c.final()
      const d = createDecipheriv('chacha20-poly1305', k, nonce12, { authTagLength: 16 })
      d.setAAD(aad, { plaintextLength: ct.length })
      d.setAuthTag(c.getAuthTag())
      d.update(ct)
      d.final()
    })
  }
  measure('noble xchacha20-poly1305 seal+open', size, () => {
    xchacha20poly1305(key, nonce24, aad).decrypt(xchacha20poly1305(key, nonce24, aad).encrypt(frame))
  })
}
