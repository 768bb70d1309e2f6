import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { ReservationVoucherCodec } from './circuit-pb.ts'
import { sealVoucher } from './hop.ts'

describe('hop', () => {
  it('hop - reservation vouchers are envelopes signed by the relay (domain libp2p-relay-rsvp, type 0x0302)', async () => {
    const relayKey = await generateKeyPair('Ed25519')
    const relay = peerIdFromPrivateKey(relayKey)
    const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const bytes = await sealVoucher(relayKey, relay, peer, 1_900_000_000n)
    const envelope = await RecordEnvelope.openAndCertify(bytes, 'libp2p-relay-rsvp')
    assert.deepEqual([...envelope.payloadType], [0x03, 0x02])
    assert.ok(envelope.publicKey.equals(relayKey.publicKey))
    const v = ReservationVoucherCodec.decode(envelope.payload)
    assert.deepEqual(v.relay, relay.toMultihash().bytes)
    assert.deepEqual(v.peer, peer.toMultihash().bytes)
    assert.equal(v.expiration, 1_900_000_000n)
    await assert.rejects(RecordEnvelope.openAndCertify(bytes, 'libp2p-peer-record'), 'the signature covers the domain')
  })
})
