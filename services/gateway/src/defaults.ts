/** Every default of the gateway, in one place (the README's configuration table and a test refer to it). */
export const GATEWAY_DEFAULTS = {
  apiHost: '127.0.0.1',
  apiPort: 50051,
  identityFile: '.stargate/gateway.key',
  /** Deadline of a Call when the client sets none. */
  callDeadlineMs: 30_000,
  /** Timeout of one tier attempt (dial + call), capped by the remaining deadline. */
  attemptTimeoutMs: 5_000,
  /** Retries of the whole tier chain after every tier failed (transport failures only). */
  maxRetries: 3,
  backoffFactor: 2.0,
  // Retries wait 2 s, 4 s, 8 s (the reference schedule) plus jitter.
  backoffBaseMs: 2_000,
  /** Jitter added to each backoff delay, as a fraction of it (0.2 = up to +20 %). */
  backoffJitter: 0.2,
  /** Start the next tier if the current one has not connected after this long. */
  tierStaggerMs: 250,
  /** Skip a tier that failed toward a peer for this long (probing it in the background). */
  tierCooldownMs: 60_000,
  poolMaxPeers: 50,
  poolTtlMs: 300_000,
  maxPayloadBytes: 4 * 1024 * 1024,
  /** An inbound stream whose frame stays incomplete this long is closed. */
  frameStallTimeoutMs: 10_000,
  /** Concurrent inbound calls one remote peer may have in flight here. */
  maxInboundCallsPerPeer: 256,
  /** How long outcomes are remembered to answer duplicate requests without running them again. */
  dedupeWindowMs: 5 * 60_000,
  /**
   * Requests remembered at once, of all callers; when full, new requests are refused (never forgotten early).
   * Each entry costs about 300 bytes of memory besides its id and response.
   */
  dedupeMaxEntries: 400_000,
  /** Requests remembered at once for one caller (so one caller cannot take every entry). */
  dedupeMaxEntriesPerCaller: 200_000,
  /** Bytes of request ids and responses remembered; past it the oldest responses are kept only as "already ran". */
  dedupeMaxBytes: 64 * 1024 * 1024,
  /** The same, for one caller. */
  dedupeMaxBytesPerCaller: 32 * 1024 * 1024,
  /** Longest request id (idempotency key) accepted from a peer. */
  maxRequestIdBytes: 128,
  /** Longest method name accepted from a peer. */
  maxMethodBytes: 256,
  /** File name of the request journal's directory inside the state directory: `<peer id>.journal`. */
  requestJournalSuffix: '.journal',
  /** The --request-journal value that turns the journal off. */
  requestJournalOff: 'off',
  /** Bytes of the request journal on disk at most. */
  requestJournalMaxBytes: 128 * 1024 * 1024,
  /** Journal records are fdatasync'ed in batches at least this often. */
  requestJournalSyncIntervalMs: 100,
  relayHealthIntervalMs: 5_000,
  relayHealthTimeoutMs: 2_000,
  relayUnhealthyAfterFailures: 2,
  /** Relays to hold reservations on at once. */
  maxReservedRelays: 2,
  presenceIntervalMs: 30_000,
  presenceTtlMs: 120_000,
  natsSubjectPrefix: 'stargate',
  shutdownGraceMs: 5_000,
  /** EWMA smoothing of per-peer latency. */
  latencyEwmaAlpha: 0.2,
  /** With API auth on, grpc.health.v1 still answers without a token (for probes). */
  authHealthOpen: true,
  /** NAT detection: re-run this often (and whenever local addresses change). */
  natDetectIntervalMs: 5 * 60_000,
  /** NAT detection: poll os.networkInterfaces() this often to notice address changes. */
  natAddrPollMs: 5_000,
  /** NAT detection: STUN port probed on each relay's host when no --stun is given. */
  stunPort: 3478,
  /** NAT detection: an observer that has not answered after this long counts as silent. */
  stunTimeoutMs: 3_000,
  /** NAT detection: first STUN retransmission interval, doubled each time (RFC 5389). */
  stunRetransmitMs: 250,
  /** Tunnelled gRPC: flow-control window of each stream and direction (what a receiver buffers at most). */
  tunnelWindowBytes: 256 * 1024,
  /** Tunnelled gRPC: streams open at once on one peer link (each side refuses more). */
  tunnelMaxStreamsPerLink: 256,
  /** Tunnelled gRPC: largest gRPC message (its length prefix) in either direction. */
  tunnelMaxMessageBytes: 4 * 1024 * 1024,
  /** --expose backends: a connection not established within this long fails its calls with UNAVAILABLE. */
  exposeConnectTimeoutMs: 5_000,
  /** --expose backends: an HTTP/2 session idle this long is closed (reopened on the next call). */
  exposeSessionIdleMs: 300_000,
} as const
