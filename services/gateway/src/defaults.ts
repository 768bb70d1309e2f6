import { SEAL_DEFAULTS } from '@stargate/shared/seal'
import { OPEN_CREDIT_BYTES } from './tunnel/frames.ts'

/**
 * Every default of the gateway, in one place. The README's flag tables are generated from the CLI flags,
 * which take their defaults from here, and test/unit/readme.test.ts checks the numbers the README and the
 * proto comments quote against this object, so documents and code cannot drift.
 */
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
  /** Delay before the first retry: retries wait 2 s, 4 s, 8 s (the reference schedule) plus jitter. */
  backoffBaseMs: 2_000,
  /** Jitter added to each backoff delay, as a fraction of it (0.2 = up to +20 %). */
  backoffJitter: 0.2,
  /** Start the next tier if the current one has not connected after this long. */
  tierStaggerMs: 250,
  /** Skip a tier that failed toward a peer for this long (probing it in the background). */
  tierCooldownMs: 60_000,
  poolMaxPeers: 50,
  poolTtlMs: 300_000,
  /** The pool looks for idle channels every ttl/4, at most this far apart. */
  poolSweepMaxIntervalMs: 30_000,
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
  /**
   * Duplicate memory: dead slots one of its queues leaves at its front before compacting (a design constant,
   * not a limit: it only saves copying small arrays; compaction copies at most as many live entries as it
   * frees, so a shift stays O(1) amortised).
   */
  dedupeCompactMinDeadEntries: 1_024,
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
  /** Reconnecting to a relay that went away backs off from this delay, doubling per attempt... */
  relayReconnectBaseMs: 500,
  /** ...up to this delay. */
  relayReconnectMaxMs: 30_000,
  /** A reservation request that gets no answer within this long counts as refused. */
  relayReservationTimeoutMs: 10_000,
  presenceIntervalMs: 30_000,
  presenceTtlMs: 120_000,
  /** Presence queries are answered at most this often, however many arrive. */
  presenceQueryDebounceMs: 250,
  natsSubjectPrefix: 'stargate',
  /** Start-up waits this long for the first NATS connection; afterwards it keeps trying in the background. */
  natsFirstConnectWaitMs: 3_000,
  natsReconnectWaitMs: 500,
  /** NATS client pings this often and declares the connection stale after natsMaxPingsOut unanswered pings. */
  natsPingIntervalMs: 5_000,
  natsMaxPingsOut: 2,
  /** NATS: when the client gave up (e.g. its credentials were refused), connect again after this long. */
  natsRetryConnectMs: 5_000,
  /** NATS: sender sessions the replay guard tracks at most; when full, messages of new sessions are refused. */
  natsReplayMaxSessions: SEAL_DEFAULTS.replayMaxSessions,
  /** A peer learned from a connection is forgotten this long after its last connection closed. */
  connectionPeerTtlMs: 300_000,
  /** Peers learned from presence records and connections, at most (the least recently heard of goes first). */
  maxLearnedPeers: 10_000,
  /** Peer ids kept parsed (a call names its target as a string; the decode runs once per id), at most. */
  peerIdCacheMaxEntries: 1_024,
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
  /** Peer channels: bytes added to the largest payload to size the largest acceptable frame. */
  frameOverheadBytes: 64 * 1024,
  /** Peer channels: frames up to this size written in one event-loop turn leave in one stream send. */
  batchFrameMaxBytes: 16 * 1024,
  /**
   * Peer channels: when calls wait and nothing arrived for this long, the connection is pinged; a call sent on a
   * channel silent this long is raced by a ping from the start.
   */
  livenessProbeMs: 500,
  /** Peer channels: a liveness ping unanswered for this long fails the connection's calls (they move on). */
  livenessProbeTimeoutMs: 1_000,
  /** Relay tier: within one attempt, the next circuit starts when the ones started have not opened after this long. */
  relayStaggerMs: 300,
  /** Relay tier: a circuit that failed toward a peer is tried last for this long (probed in the background). */
  circuitCooldownMs: 60_000,
  /** Relay tier: (peer, relay) failures remembered at most; the oldest is forgotten first. */
  circuitHistoryMaxEntries: 10_000,
  /**
   * libp2p: ping streams open at once per connection, each way. Three pingers run on their own schedules (libp2p's
   * connection monitor, a channel's liveness probe, relay health) and libp2p aborts a connection whose monitor ping
   * cannot open its stream, so each needs a place, plus one for a ping stream still closing. libp2p's default is
   * one outbound (and two inbound).
   */
  maxPingStreamsPerConnection: 4,
  /** libp2p: streams per protocol and connection, each way (calls are multiplexed; this is headroom). */
  maxStreamsPerConnection: 4_096,
  /** libp2p: connections kept beyond the pool's two per peer and the relays. */
  extraConnections: 64,
  /** libp2p: inbound connections accepted per second before new ones are refused. */
  inboundConnectionsPerSecond: 100,
  /** libp2p: a dial that has not completed after this long fails. */
  dialTimeoutMs: 10_000,
  /** libp2p: largest yamux frame sent. */
  yamuxMaxMessageBytes: 256 * 1024,
  /** Tunnelled gRPC: flow-control window of each stream and direction (what a receiver buffers at most). */
  tunnelWindowBytes: 256 * 1024,
  /** Tunnelled gRPC: streams open at once on one peer link (each side refuses more). */
  tunnelMaxStreamsPerLink: 256,
  /** Tunnelled gRPC: largest gRPC message (its length prefix) in either direction. */
  tunnelMaxMessageBytes: 4 * 1024 * 1024,
  /** Loopback tier (a gateway calling itself): frame bytes queued in one direction before the link reports congestion. */
  loopbackHighWaterMarkBytes: 1024 * 1024,
  /**
   * Loopback link with the wire encoding on (tests of the protocol): largest frame its decoder takes. Both ends
   * are this process and the endpoints bound what they send, so it is no bound (the largest int32).
   */
  loopbackMaxFrameBytes: 2 ** 31 - 1,
  /** --expose backends: a connection not established within this long fails its calls with UNAVAILABLE. */
  exposeConnectTimeoutMs: 5_000,
  /** --expose backends: an HTTP/2 session idle this long is closed (reopened on the next call). */
  exposeSessionIdleMs: 300_000,
  /**
   * Tunnelled gRPC, idempotent calls: request bytes one call keeps (caller) and response bytes one call
   * records (callee) so it can be retried on another tier without running twice; larger calls are not kept.
   */
  tunnelReplayMaxBytesPerCall: 1024 * 1024,
  /** The same, all calls at once (per gateway and side). */
  tunnelReplayMaxBytes: 64 * 1024 * 1024,
  /** Server reflection over several --expose backends: one question to one backend fails after this long. */
  tunnelReflectionQuestionTimeoutMs: 10_000,
  /** Serve: calls waiting at most in one Serve stream's queue (not yet written to its client). */
  serveQueueMaxCalls: 1_000,
  /** Serve: payload bytes waiting at most in one Serve stream's queue. */
  serveQueueMaxBytes: 16 * 1024 * 1024,
  /**
   * Inbound /stargate/call streams one libp2p connection may have open at once. A caller keeps one per tier,
   * but a burst of first calls to a peer opens one each until the pool holds a channel, so the default
   * matches maxInboundCallsPerPeer; bytes are bounded separately (maxInboundBufferedBytesPerConnection).
   */
  maxInboundStreamsPerConnection: 256,
  /** Bytes one libp2p connection may have buffered here: partial frames, requests being handled, answers being written. */
  maxInboundBufferedBytesPerConnection: 64 * 1024 * 1024,
  /** Tunnelled gRPC on NATS: a stream that heard nothing from its peer for this long probes the peer. */
  natsStreamProbeMs: 5_000,
  /** Tunnelled gRPC on NATS: a probe unanswered for this long ends the stream UNAVAILABLE. */
  natsStreamProbeTimeoutMs: 5_000,
  /** Tunnelled gRPC on NATS: streams served at once for all callers (each caller also at most tunnelMaxStreamsPerLink). */
  natsMaxInboundStreams: 4_096,
  /** Router: (peer, tier) failures remembered for the cool-down at most; the oldest is forgotten first. */
  tierHistoryMaxEntries: 10_000,
  /** Per-peer call metrics (GetPeerMetrics) kept at most; the peer called least recently is forgotten first. */
  peerMetricsMaxEntries: 10_000,
} as const

/** Bounds of options, enforced for CallOptions, GatewayOptions, tunnel endpoints and the flags alike. */
export const GATEWAY_LIMITS = {
  maxRetries: { min: 0, max: 100 },
  backoffFactor: { min: 1, max: 100 },
  /** At least the protocol's opening credit; at most HTTP/2's largest flow-control window. */
  tunnelWindowBytes: { min: OPEN_CREDIT_BYTES, max: 2 ** 31 - 1 },
  tunnelMaxStreamsPerLink: { min: 1, max: 2 ** 31 - 1 },
  /** At most the largest length a gRPC message prefix can declare (4 bytes). */
  tunnelMaxMessageBytes: { min: 1, max: 2 ** 32 - 1 },
} as const
