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
  /** Past it, a new reservation of the peer replaces its oldest one (a reconnecting peer wins, as in DERP). */
  maxReservationsPerPeer: 1,
  /**
   * Reservations one IP (an IPv6 /64) may hold: far below maxReservations, so one host cannot take every slot
   * (go-libp2p's relay allows 8 per IP too).
   */
  maxReservationsPerIp: 8,
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
  /**
   * Inbound ping streams per connection: a gateway's connection monitor and its relay health check ping on their own
   * schedules (libp2p's default of two leaves no room for a ping stream still closing).
   */
  maxInboundPingStreams: 4,
  adminHost: '127.0.0.1',
  adminPort: 4002,
  identityFile: '.stargate/relay.key',
  shutdownGraceMs: 5_000,
  /** CONNECTs per second from one source IP (an IPv6 /64), whatever their destination. */
  maxCircuitsPerIpPerSecond: 100,
  /** CONNECTs per second to one reservation holder, from all sources. */
  maxCircuitsToPeerPerSecond: 100,
  /** Relayed connections open at once from one source IP (STOP handshakes under way included). */
  maxCircuitsPerIp: 256,
  /** Relayed connections open at once from one source peer (a gateway pools at most 50 peers by default). */
  maxCircuitsPerPeer: 128,
  /** Relayed connections open at once to one reservation holder. */
  maxCircuitsToPeer: 256,
  /** A CONNECT fails with CONNECTION_FAILED when the holder has not answered STOP within this long. */
  stopTimeoutMs: 2_000,
  /** Consecutive unanswered STOPs after which a holder's reservation is dropped and its connection closed. */
  maxStopFailures: 3,
  /** UDP port of the STUN responder gateways use for NAT detection (RFC 5389 default port). */
  stunPort: 3478,
} as const
