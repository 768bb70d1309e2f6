import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import { Code, messageOf, StargateError } from './errors.ts'
import { type PeerFrame, PeerFrameSchema } from './gen/stargate/v1/envelope_pb.js'

/** Serializes a PeerFrame (validated first, so a peer never receives one it would reject). */
export function encodePeerFrame(frame: MessageInitShape<typeof PeerFrameSchema>): Uint8Array {
  const msg = create(PeerFrameSchema, frame)
  validatePeerFrame(msg)
  return toBinary(PeerFrameSchema, msg)
}

/** Decodes and validates a stargate.v1.PeerFrame; anything malformed throws StargateError INVALID_ARGUMENT. */
export function decodePeerFrame(bytes: Uint8Array): PeerFrame {
  let frame: PeerFrame
  try {
    frame = fromBinary(PeerFrameSchema, bytes)
  } catch (err: unknown) {
    // Includes RangeError from a too deeply nested google.protobuf.Value.
    throw new StargateError(Code.InvalidArgument, `peer frame is not a stargate.v1.PeerFrame: ${messageOf(err)}`, { cause: err })
  }
  validatePeerFrame(frame)
  return frame
}

/**
 * The invariants of a PeerFrame: exactly one known kind; a request names its request_id, method
 * and exchange_id; a response its exchange_id, request_id and a result; a cancel its exchange_id;
 * every stream frame its exchange_id, a stream_open its request_id and a gRPC method path, a
 * stream_close / stream_reset a known status code (a reset never OK), a stream_window some credit.
 */
export function validatePeerFrame(frame: PeerFrame): void {
  const bad = (what: string): never => {
    throw new StargateError(Code.InvalidArgument, `invalid peer frame: ${what}`)
  }
  const kind = frame.kind
  switch (kind.case) {
    case 'request': {
      const r = kind.value
      if (r.requestId === '') bad('request without request_id')
      if (r.method === '') bad('request without method')
      if (r.exchangeId === 0n) bad('request without exchange_id')
      if (r.timeout != null && (r.timeout.seconds < 0n || r.timeout.nanos < 0)) bad('request with a negative timeout')
      return
    }
    case 'response': {
      const r = kind.value
      if (r.exchangeId === 0n) bad('response without exchange_id')
      if (r.requestId === '') bad('response without request_id')
      if (r.result.case == null) bad('response without a result (data, json or error)')
      return
    }
    case 'cancel':
      if (kind.value.exchangeId === 0n) bad('cancel without exchange_id')
      return
    case 'streamOpen': {
      const o = kind.value
      if (o.exchangeId === 0n) bad('stream_open without exchange_id')
      if (o.requestId === '') bad('stream_open without request_id')
      if (!GRPC_METHOD_PATH.test(o.method))
        bad(`stream_open method ${JSON.stringify(o.method)} is not a gRPC path "/package.Service/Method"`)
      if (o.timeout != null && (o.timeout.seconds < 0n || o.timeout.nanos < 0)) bad('stream_open with a negative timeout')
      return
    }
    case 'streamData':
    case 'streamHeaders':
      if (kind.value.exchangeId === 0n) bad(`${kind.case === 'streamData' ? 'stream_data' : 'stream_headers'} without exchange_id`)
      return
    case 'streamClose':
    case 'streamReset': {
      const what = kind.case === 'streamClose' ? 'stream_close' : 'stream_reset'
      if (kind.value.exchangeId === 0n) bad(`${what} without exchange_id`)
      if (kind.value.code > MAX_GRPC_CODE) bad(`${what} with unknown status code ${kind.value.code}`)
      if (kind.case === 'streamReset' && kind.value.code === 0) bad('stream_reset with status OK')
      return
    }
    case 'streamWindow':
      if (kind.value.exchangeId === 0n) bad('stream_window without exchange_id')
      if (kind.value.creditBytes === 0) bad('stream_window without credit_bytes')
      return
    default:
      bad('no known kind (request, response, cancel or a stream frame)')
  }
}

/** A gRPC method path: "/" service "/" method, neither empty nor containing "/". */
const GRPC_METHOD_PATH = /^\/[^/]+\/[^/]+$/

/** The largest gRPC status code (UNAUTHENTICATED). */
const MAX_GRPC_CODE = 16
