import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { GATEWAY_DEFAULTS } from './defaults.ts'
import { parsePeerId } from './peer-ids.ts'

const newId = async (): Promise<string> => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()

describe('parsePeerId', () => {
  it('peer ids - the same PeerId as peerIdFromString, parsed once per id (the same object again)', async () => {
    const id = await newId()
    const parsed = parsePeerId(id)
    assert.ok(parsed.equals(peerIdFromString(id)))
    assert.equal(parsed.toString(), id)
    assert.equal(parsePeerId(id), parsed, 'the second lookup returns the parsed object')
  })

  it('peer ids - an invalid id throws every time, as peerIdFromString does', () => {
    for (let i = 0; i < 2; i++) assert.throws(() => parsePeerId('not-a-peer'))
  })

  it('peer ids - at most peerIdCacheMaxEntries are kept: the oldest is parsed again', async () => {
    const first = await newId()
    const kept = parsePeerId(first)
    const others = await Promise.all(Array.from({ length: GATEWAY_DEFAULTS.peerIdCacheMaxEntries }, newId))
    for (const o of others) parsePeerId(o)
    const again = parsePeerId(first)
    assert.notEqual(again, kept, 'the oldest entry was dropped and parsed anew')
    assert.ok(again.equals(kept))
  })
})
