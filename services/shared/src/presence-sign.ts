import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Code, messageOf, StargateError } from './errors.ts'
import { type PresenceRecord, PresenceRecordSchema, type SignedPresence, SignedPresenceSchema } from './gen/stargate/v1/envelope_pb.js'
import { publicKeyOf, transcript } from './seal.ts'

/**
 * The signature of a SignedPresence covers PRESENCE_SIGNATURE_DOMAIN and the record bytes
 * (length-prefixed, as in seal.ts), so a presence signature can never pass for a signature of
 * another Stargate message kind.
 */
export const PRESENCE_SIGNATURE_DOMAIN = 'stargate/v1/presence-record'

/**
 * Signs a presence record with the gateway's identity key. peer_id defaults to the key's peer id;
 * a different peer_id is refused (INVALID_ARGUMENT). Returns the SignedPresence bytes.
 */
export async function signPresence(record: MessageInitShape<typeof PresenceRecordSchema>, key: PrivateKey): Promise<Uint8Array> {
  const own = peerIdFromPrivateKey(key).toString()
  const msg = create(PresenceRecordSchema, record)
  if (msg.peerId === '') msg.peerId = own
  if (msg.peerId !== own) {
    throw new StargateError(Code.InvalidArgument, `presence record for ${msg.peerId} cannot be signed with the key of ${own}`)
  }
  const bytes = toBinary(PresenceRecordSchema, msg)
  const signature = await key.sign(transcript(PRESENCE_SIGNATURE_DOMAIN, [bytes]))
  return toBinary(SignedPresenceSchema, create(SignedPresenceSchema, { record: bytes, signature }))
}

/**
 * Verifies a SignedPresence and returns its record. Throws StargateError INVALID_ARGUMENT when the
 * bytes are malformed and PERMISSION_DENIED when the signature is not by the key of record.peer_id.
 * Freshness (issued_at, sequence) is the caller's to judge.
 */
export async function verifyPresence(bytes: Uint8Array): Promise<PresenceRecord> {
  let signed: SignedPresence
  let record: PresenceRecord
  try {
    signed = fromBinary(SignedPresenceSchema, bytes)
    record = fromBinary(PresenceRecordSchema, signed.record)
  } catch (err: unknown) {
    throw new StargateError(Code.InvalidArgument, `not a stargate.v1.SignedPresence: ${messageOf(err)}`, { cause: err })
  }
  if (record.peerId === '') throw new StargateError(Code.InvalidArgument, 'presence record has no peer_id')
  if (signed.signature.length === 0) {
    throw new StargateError(Code.PermissionDenied, `presence record of ${record.peerId} is not signed`)
  }
  const key = publicKeyOf(record.peerId, 'presence peer_id', Code.InvalidArgument)
  let valid = false
  try {
    valid = await key.verify(transcript(PRESENCE_SIGNATURE_DOMAIN, [signed.record]), signed.signature)
  } catch (err: unknown) {
    throw new StargateError(Code.PermissionDenied, `presence signature of ${record.peerId} is invalid: ${messageOf(err)}`, {
      cause: err,
    })
  }
  if (!valid) throw new StargateError(Code.PermissionDenied, `presence record is not signed by ${record.peerId}`)
  return record
}
