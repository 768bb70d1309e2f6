/**
 * Every default of the relay service, in one place. js-libp2p's own circuit relay defaults
 * (15 reservations, 128 KiB and 2 min per relayed connection, 5 inbound connections/s per IP)
 * are wrong for a relay service; each is set explicitly from here.
 */
export const RELAY_DEFAULTS = {
  host: '0.0.0.0',
  port: 4001,
  maxConnections: 1000,
  /** Reservations held at once; by default as many as connections. */
  maxReservations: 1000,
  reservationTtlMs: 60 * 60 * 1000,
  /** 0 = no data limit per relayed connection (Stargate multiplexes long-lived call streams). */
  maxCircuitBytes: 0,
  /** 0 = no duration limit per relayed connection. */
  maxCircuitDurationMs: 0,
  maxReservationsPerPeer: 1,
  maxReservationsPerIp: 1000,
  maxConnectionsPerIpPerSecond: 100,
  maxReservationsPerIpPerSecond: 100,
  maxInboundHopStreams: 2000,
  maxOutboundStopStreams: 2000,
  hopTimeoutMs: 30_000,
  maxIncomingPendingConnections: 256,
  /** libp2p's connection monitor pings every connection this often (default 10 s: 100 pings/s at 1000 peers). */
  connectionPingIntervalMs: 30_000,
  /** A connection whose ping takes longer is closed (and its reservation ended); libp2p's 5 s minimum is too tight. */
  connectionPingTimeoutMs: 20_000,
  adminHost: '127.0.0.1',
  adminPort: 4002,
  identityFile: '.stargate/relay.key',
  shutdownGraceMs: 5_000,
  /** UDP port of the STUN responder gateways use for NAT detection (RFC 5389 default port). */
  stunPort: 3478,
} as const
