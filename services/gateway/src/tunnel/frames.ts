import type {
  MetadataEntry,
  PeerFrame,
  StreamClose,
  StreamData,
  StreamHeaders,
  StreamOpen,
  StreamReset,
  StreamWindow,
} from '@stargate/shared/gen/envelope'

/**
 * Builders of the tunnel's PeerFrames as plain messages (protobuf-es v2 messages are plain objects), so the
 * hot path allocates only what it sends, and the zero-copy wire encoding of data frames.
 */

/**
 * Request data a caller may send on a new stream before the callee grants more (the protocol's opening
 * credit, stated in envelope.proto). Every window is at least this large.
 */
export const OPEN_CREDIT_BYTES = 65_536

/** The frame kinds of tunnelled streams. */
export type StreamFrame = PeerFrame & {
  kind: { case: 'streamOpen' | 'streamHeaders' | 'streamData' | 'streamClose' | 'streamReset' | 'streamWindow' }
}

export function metadataEntry(key: string, value: string): MetadataEntry {
  return { $typeName: 'stargate.v1.MetadataEntry', key, value }
}

export function dataFrame(exchangeId: bigint, data: Uint8Array, endOfStream: boolean): PeerFrame {
  const value: StreamData = { $typeName: 'stargate.v1.StreamData', exchangeId, data, endOfStream }
  return { $typeName: 'stargate.v1.PeerFrame', kind: { case: 'streamData', value }, sequence: 0n }
}

export function windowFrame(exchangeId: bigint, creditBytes: number): PeerFrame {
  const value: StreamWindow = { $typeName: 'stargate.v1.StreamWindow', exchangeId, creditBytes }
  return { $typeName: 'stargate.v1.PeerFrame', kind: { case: 'streamWindow', value }, sequence: 0n }
}

export function resetFrame(exchangeId: bigint, code: number, message: string): PeerFrame {
  const value: StreamReset = { $typeName: 'stargate.v1.StreamReset', exchangeId, code, message }
  return { $typeName: 'stargate.v1.PeerFrame', kind: { case: 'streamReset', value }, sequence: 0n }
}

export function headersFrame(exchangeId: bigint, metadata: MetadataEntry[]): PeerFrame {
  const value: StreamHeaders = { $typeName: 'stargate.v1.StreamHeaders', exchangeId, metadata }
  return { $typeName: 'stargate.v1.PeerFrame', kind: { case: 'streamHeaders', value }, sequence: 0n }
}

export function closeFrame(exchangeId: bigint, code: number, message: string, trailers: MetadataEntry[]): PeerFrame {
  const value: StreamClose = { $typeName: 'stargate.v1.StreamClose', exchangeId, code, message, trailers }
  return { $typeName: 'stargate.v1.PeerFrame', kind: { case: 'streamClose', value }, sequence: 0n }
}

export function openFrame(open: StreamOpen): PeerFrame {
  return { $typeName: 'stargate.v1.PeerFrame', kind: { case: 'streamOpen', value: open }, sequence: 0n }
}

/** Bytes of a protobuf varint. */
export function varintLength(n: number | bigint): number {
  let len = 1
  let v = BigInt(n)
  while (v >= 0x80n) {
    v >>= 7n
    len++
  }
  return len
}

/** Writes a protobuf varint at `at`; returns the position after it. */
export function writeVarint(out: Uint8Array, at: number, n: number | bigint): number {
  let v = BigInt(n)
  while (v >= 0x80n) {
    out[at++] = Number(v & 0x7fn) | 0x80
    v >>= 7n
  }
  out[at++] = Number(v)
  return at
}

/**
 * The length-prefixed wire form (shared/framing.ts: varint length, then a PeerFrame) of a stream_data
 * frame as two chunks: a small header holding the length prefix and every field but the payload, and the
 * payload itself, uncopied. The fields are written exchange_id, end_of_stream, data (protobuf decoders
 * accept any field order), so the payload comes last and can be handed to the transport as it is.
 */
export function encodeDataFrameChunks(exchangeId: bigint, data: Uint8Array, endOfStream: boolean): [Uint8Array, Uint8Array] {
  // StreamData: 0x08 exchange_id, 0x18 end_of_stream, 0x12 len data.
  const inner = 1 + varintLength(exchangeId) + (endOfStream ? 2 : 0) + 1 + varintLength(data.byteLength) + data.byteLength
  // PeerFrame: 0x32 (field 6, length-delimited) len StreamData.
  const frame = 1 + varintLength(inner) + inner
  const headerLength = varintLength(frame) + frame - data.byteLength
  const header = new Uint8Array(headerLength)
  let at = writeVarint(header, 0, frame)
  header[at++] = 0x32
  at = writeVarint(header, at, inner)
  header[at++] = 0x08
  at = writeVarint(header, at, exchangeId)
  if (endOfStream) {
    header[at++] = 0x18
    header[at++] = 0x01
  }
  header[at++] = 0x12
  writeVarint(header, at, data.byteLength)
  return [header, data]
}
