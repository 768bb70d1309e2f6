import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { GATEWAY_DEFAULTS } from './defaults.ts'

/** Parsed peer ids by their string form, oldest first (bounded by GATEWAY_DEFAULTS.peerIdCacheMaxEntries). */
const parsed = new Map<string, PeerId>()

/**
 * The PeerId a string names, as `peerIdFromString` gives it (and throwing as it does), parsed once per id:
 * every call names its target peer as a string, and the base58 and multihash decode showed up in the CPU
 * profile of a calling gateway. Only valid ids are kept, at most peerIdCacheMaxEntries (the oldest goes).
 */
export function parsePeerId(peerId: string): PeerId {
  let id = parsed.get(peerId)
  if (id === undefined) {
    id = peerIdFromString(peerId)
    if (parsed.size >= GATEWAY_DEFAULTS.peerIdCacheMaxEntries) parsed.delete(parsed.keys().next().value as string)
    parsed.set(peerId, id)
  }
  return id
}
