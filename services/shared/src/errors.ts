import { Code, ConnectError } from '@connectrpc/connect'

export { Code }

/**
 * The one error type of Stargate. Its code set is the gRPC status codes (connect-es `Code`
 * has the same numbers), so an error crosses the API, the peer envelope and the CLI unchanged.
 */
export class StargateError extends ConnectError {
  // `name` stays "ConnectError" so connect-es and grpc adapters recognise it as theirs.
  static override [Symbol.hasInstance](v: unknown): boolean {
    return typeof v === 'object' && v != null && Object.prototype.isPrototypeOf.call(StargateError.prototype, v)
  }

  constructor(code: Code, message: string, options: { cause?: unknown } = {}) {
    super(message, code, undefined, undefined, options.cause)
    // ConnectError pins its own prototype; restore ours so `instanceof StargateError` holds.
    Object.setPrototypeOf(this, new.target.prototype)
  }

  /** Normalises anything thrown into a StargateError, keeping the original as `cause`. */
  static override from(err: unknown, fallback: Code = Code.Unknown): StargateError {
    if (err instanceof StargateError) return err
    if (err instanceof ConnectError) return new StargateError(err.code, err.rawMessage, { cause: err })
    const mapped = classify(err)
    if (mapped != null) return new StargateError(mapped.code, `${mapped.reason}: ${messageOf(err)}`, { cause: err })
    return new StargateError(fallback, messageOf(err), { cause: err })
  }
}

interface Mapping {
  code: Code
  reason: string
}

/**
 * Infrastructure errors (libp2p, NATS, sockets) mapped to gRPC codes, with a one-line reason.
 * Keys are error `name`s, NATS `code`s or errno strings.
 */
const ERROR_TABLE: Record<string, Mapping> = {
  // libp2p
  DialError: { code: Code.Unavailable, reason: 'libp2p dial failed' },
  NoValidAddressesError: { code: Code.Unavailable, reason: 'no dialable address for peer' },
  ConnectionClosedError: { code: Code.Unavailable, reason: 'libp2p connection closed' },
  StreamResetError: { code: Code.Unavailable, reason: 'libp2p stream reset' },
  StreamClosedError: { code: Code.Unavailable, reason: 'libp2p stream closed' },
  StreamStateError: { code: Code.Unavailable, reason: 'libp2p stream unusable' },
  UnsupportedProtocolError: { code: Code.Unimplemented, reason: 'peer does not speak the Stargate protocol' },
  LimitedConnectionError: { code: Code.Unavailable, reason: 'relayed connection refused the stream' },
  TooManyOutboundProtocolStreamsError: { code: Code.ResourceExhausted, reason: 'too many streams to peer' },
  EncryptionFailedError: { code: Code.Unavailable, reason: 'noise handshake failed' },
  UnexpectedPeerError: { code: Code.Unavailable, reason: 'dialled address belongs to another peer' },
  InvalidMultiaddrError: { code: Code.InvalidArgument, reason: 'invalid multiaddr' },
  InvalidParametersError: { code: Code.InvalidArgument, reason: 'invalid parameters' },
  TimeoutError: { code: Code.DeadlineExceeded, reason: 'timed out' },
  AbortError: { code: Code.Canceled, reason: 'aborted' },
  // NATS (nats.js error codes)
  '503': { code: Code.Unavailable, reason: 'no NATS responder for subject' },
  TIMEOUT: { code: Code.DeadlineExceeded, reason: 'NATS request timed out' },
  CONNECTION_CLOSED: { code: Code.Unavailable, reason: 'NATS connection closed' },
  CONNECTION_REFUSED: { code: Code.Unavailable, reason: 'NATS connection refused' },
  DISCONNECT: { code: Code.Unavailable, reason: 'NATS disconnected' },
  MAX_PAYLOAD_EXCEEDED: { code: Code.ResourceExhausted, reason: 'payload larger than NATS max_payload' },
  // sockets
  ECONNREFUSED: { code: Code.Unavailable, reason: 'connection refused' },
  ECONNRESET: { code: Code.Unavailable, reason: 'connection reset' },
  EHOSTUNREACH: { code: Code.Unavailable, reason: 'host unreachable' },
  ENETUNREACH: { code: Code.Unavailable, reason: 'network unreachable' },
  ETIMEDOUT: { code: Code.DeadlineExceeded, reason: 'connect timed out' },
  EPIPE: { code: Code.Unavailable, reason: 'broken pipe' },
  EADDRINUSE: { code: Code.FailedPrecondition, reason: 'address already in use' },
  EACCES: { code: Code.PermissionDenied, reason: 'permission denied' },
  // files (the request journal)
  ENOSPC: { code: Code.ResourceExhausted, reason: 'no space left on device' },
  EDQUOT: { code: Code.ResourceExhausted, reason: 'disk quota exceeded' },
  EROFS: { code: Code.FailedPrecondition, reason: 'read-only file system' },
}

/** Looks an error up in the table by name, code or errno. */
export function classify(err: unknown): Mapping | undefined {
  if (typeof err !== 'object' || err == null) return undefined
  const e = err as { name?: unknown; code?: unknown; errno?: unknown }
  for (const key of [e.code, e.name]) {
    if (typeof key === 'string' && key in ERROR_TABLE) return ERROR_TABLE[key]
  }
  if ('errors' in err && Array.isArray((err as AggregateError).errors)) {
    for (const inner of (err as AggregateError).errors) {
      const m = classify(inner)
      if (m != null) return m
    }
  }
  return undefined
}

/** A printable message for anything thrown. */
export function messageOf(err: unknown): string {
  if (err instanceof ConnectError) return err.rawMessage
  if (err instanceof Error) return err.message === '' ? err.name : err.message
  return String(err)
}

/** True when an error means the transport failed (worth another tier or a retry). */
export function isTransportFailure(err: StargateError): boolean {
  return (
    err.code === Code.Unavailable ||
    err.code === Code.DeadlineExceeded ||
    err.code === Code.Canceled ||
    err.code === Code.Aborted ||
    err.code === Code.ResourceExhausted
  )
}
