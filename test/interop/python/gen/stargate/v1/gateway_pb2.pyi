import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_DIRECT: _ClassVar[Tier]
    TIER_RELAY: _ClassVar[Tier]
    TIER_NATS: _ClassVar[Tier]
    TIER_LOCAL: _ClassVar[Tier]

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SUCCESS: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_FAILED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SKIPPED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CANCELLED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_REMOTE_ERROR: _ClassVar[AttemptOutcome]

class NatType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NAT_TYPE_UNSPECIFIED: _ClassVar[NatType]
    NAT_TYPE_UNKNOWN: _ClassVar[NatType]
    NAT_TYPE_PUBLIC: _ClassVar[NatType]
    NAT_TYPE_PRIVATE: _ClassVar[NatType]
    NAT_TYPE_SYMMETRIC: _ClassVar[NatType]

class NatsState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NATS_STATE_UNSPECIFIED: _ClassVar[NatsState]
    NATS_STATE_DISABLED: _ClassVar[NatsState]
    NATS_STATE_CONNECTED: _ClassVar[NatsState]
    NATS_STATE_RECONNECTING: _ClassVar[NatsState]
    NATS_STATE_DISCONNECTED: _ClassVar[NatsState]

class CallerPolicyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALLER_POLICY_MODE_UNSPECIFIED: _ClassVar[CallerPolicyMode]
    CALLER_POLICY_MODE_OPEN: _ClassVar[CallerPolicyMode]
    CALLER_POLICY_MODE_RESTRICTED: _ClassVar[CallerPolicyMode]

class PeerSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PEER_SOURCE_UNSPECIFIED: _ClassVar[PeerSource]
    PEER_SOURCE_STATIC: _ClassVar[PeerSource]
    PEER_SOURCE_PRESENCE: _ClassVar[PeerSource]
    PEER_SOURCE_CONNECTION: _ClassVar[PeerSource]
TIER_UNSPECIFIED: Tier
TIER_DIRECT: Tier
TIER_RELAY: Tier
TIER_NATS: Tier
TIER_LOCAL: Tier
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_SUCCESS: AttemptOutcome
ATTEMPT_OUTCOME_FAILED: AttemptOutcome
ATTEMPT_OUTCOME_SKIPPED: AttemptOutcome
ATTEMPT_OUTCOME_CANCELLED: AttemptOutcome
ATTEMPT_OUTCOME_REMOTE_ERROR: AttemptOutcome
NAT_TYPE_UNSPECIFIED: NatType
NAT_TYPE_UNKNOWN: NatType
NAT_TYPE_PUBLIC: NatType
NAT_TYPE_PRIVATE: NatType
NAT_TYPE_SYMMETRIC: NatType
NATS_STATE_UNSPECIFIED: NatsState
NATS_STATE_DISABLED: NatsState
NATS_STATE_CONNECTED: NatsState
NATS_STATE_RECONNECTING: NatsState
NATS_STATE_DISCONNECTED: NatsState
CALLER_POLICY_MODE_UNSPECIFIED: CallerPolicyMode
CALLER_POLICY_MODE_OPEN: CallerPolicyMode
CALLER_POLICY_MODE_RESTRICTED: CallerPolicyMode
PEER_SOURCE_UNSPECIFIED: PeerSource
PEER_SOURCE_STATIC: PeerSource
PEER_SOURCE_PRESENCE: PeerSource
PEER_SOURCE_CONNECTION: PeerSource

class CallOptions(_message.Message):
    __slots__ = ("max_retries", "backoff_factor", "backoff_base", "allowed_tiers", "attempt_timeout")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FACTOR_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_BASE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_TIERS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    backoff_factor: float
    backoff_base: _duration_pb2.Duration
    allowed_tiers: _containers.RepeatedScalarFieldContainer[Tier]
    attempt_timeout: _duration_pb2.Duration
    def __init__(self, max_retries: _Optional[int] = ..., backoff_factor: _Optional[float] = ..., backoff_base: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., allowed_tiers: _Optional[_Iterable[_Union[Tier, str]]] = ..., attempt_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("peer_id", "method", "data", "json", "options", "idempotency_key")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    method: str
    data: bytes
    json: _struct_pb2.Value
    options: CallOptions
    idempotency_key: str
    def __init__(self, peer_id: _Optional[str] = ..., method: _Optional[str] = ..., data: _Optional[bytes] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., options: _Optional[_Union[CallOptions, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("tier", "round", "outcome", "reason", "duration", "via")
    TIER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    tier: Tier
    round: int
    outcome: AttemptOutcome
    reason: str
    duration: _duration_pb2.Duration
    via: str
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., round: _Optional[int] = ..., outcome: _Optional[_Union[AttemptOutcome, str]] = ..., reason: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., via: _Optional[str] = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("data", "json", "tier", "attempts", "request_id")
    DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    json: _struct_pb2.Value
    tier: Tier
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    request_id: str
    def __init__(self, data: _Optional[bytes] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., tier: _Optional[_Union[Tier, str]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ErrorStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ServeRequest(_message.Message):
    __slots__ = ("register", "reply")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    register: ServeRegistration
    reply: ServeReply
    def __init__(self, register: _Optional[_Union[ServeRegistration, _Mapping]] = ..., reply: _Optional[_Union[ServeReply, _Mapping]] = ...) -> None: ...

class ServeRegistration(_message.Message):
    __slots__ = ("methods", "capabilities", "shared")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    shared: bool
    def __init__(self, methods: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., shared: _Optional[bool] = ...) -> None: ...

class ServeReply(_message.Message):
    __slots__ = ("call_id", "data", "json", "error")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    data: bytes
    json: _struct_pb2.Value
    error: ErrorStatus
    def __init__(self, call_id: _Optional[str] = ..., data: _Optional[bytes] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[_Union[ErrorStatus, _Mapping]] = ...) -> None: ...

class ServeResponse(_message.Message):
    __slots__ = ("registered", "call")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    registered: ServeRegistered
    call: InboundCall
    def __init__(self, registered: _Optional[_Union[ServeRegistered, _Mapping]] = ..., call: _Optional[_Union[InboundCall, _Mapping]] = ...) -> None: ...

class ServeRegistered(_message.Message):
    __slots__ = ("methods", "peer_id")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    peer_id: str
    def __init__(self, methods: _Optional[_Iterable[str]] = ..., peer_id: _Optional[str] = ...) -> None: ...

class InboundCall(_message.Message):
    __slots__ = ("call_id", "method", "caller_peer_id", "data", "json", "deadline", "tier", "request_id", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CALLER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    method: str
    caller_peer_id: str
    data: bytes
    json: _struct_pb2.Value
    deadline: _timestamp_pb2.Timestamp
    tier: Tier
    request_id: str
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[str] = ..., method: _Optional[str] = ..., caller_peer_id: _Optional[str] = ..., data: _Optional[bytes] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tier: _Optional[_Union[Tier, str]] = ..., request_id: _Optional[str] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NatStatus(_message.Message):
    __slots__ = ("nat_type", "public_addrs", "requires_relay", "detected_at")
    NAT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_ADDRS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_RELAY_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    nat_type: NatType
    public_addrs: _containers.RepeatedScalarFieldContainer[str]
    requires_relay: bool
    detected_at: _timestamp_pb2.Timestamp
    def __init__(self, nat_type: _Optional[_Union[NatType, str]] = ..., public_addrs: _Optional[_Iterable[str]] = ..., requires_relay: _Optional[bool] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class NatsStatus(_message.Message):
    __slots__ = ("state", "url", "subject", "connected_server", "connected_server_name", "known_servers")
    STATE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SERVER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    KNOWN_SERVERS_FIELD_NUMBER: _ClassVar[int]
    state: NatsState
    url: str
    subject: str
    connected_server: str
    connected_server_name: str
    known_servers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, state: _Optional[_Union[NatsState, str]] = ..., url: _Optional[str] = ..., subject: _Optional[str] = ..., connected_server: _Optional[str] = ..., connected_server_name: _Optional[str] = ..., known_servers: _Optional[_Iterable[str]] = ...) -> None: ...

class RelayStatus(_message.Message):
    __slots__ = ("addr", "peer_id", "connected", "reserved", "circuit_addrs")
    ADDR_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_ADDRS_FIELD_NUMBER: _ClassVar[int]
    addr: str
    peer_id: str
    connected: bool
    reserved: bool
    circuit_addrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, addr: _Optional[str] = ..., peer_id: _Optional[str] = ..., connected: _Optional[bool] = ..., reserved: _Optional[bool] = ..., circuit_addrs: _Optional[_Iterable[str]] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("peer_id", "listen_addrs", "announced_addrs", "nat_status", "relays", "nats", "version", "started_at", "methods", "caller_policy", "inflight_calls")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRS_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCED_ADDRS_FIELD_NUMBER: _ClassVar[int]
    NAT_STATUS_FIELD_NUMBER: _ClassVar[int]
    RELAYS_FIELD_NUMBER: _ClassVar[int]
    NATS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    CALLER_POLICY_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_CALLS_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    listen_addrs: _containers.RepeatedScalarFieldContainer[str]
    announced_addrs: _containers.RepeatedScalarFieldContainer[str]
    nat_status: NatStatus
    relays: _containers.RepeatedCompositeFieldContainer[RelayStatus]
    nats: NatsStatus
    version: str
    started_at: _timestamp_pb2.Timestamp
    methods: _containers.RepeatedScalarFieldContainer[str]
    caller_policy: CallerPolicyStatus
    inflight_calls: int
    def __init__(self, peer_id: _Optional[str] = ..., listen_addrs: _Optional[_Iterable[str]] = ..., announced_addrs: _Optional[_Iterable[str]] = ..., nat_status: _Optional[_Union[NatStatus, _Mapping]] = ..., relays: _Optional[_Iterable[_Union[RelayStatus, _Mapping]]] = ..., nats: _Optional[_Union[NatsStatus, _Mapping]] = ..., version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., methods: _Optional[_Iterable[str]] = ..., caller_policy: _Optional[_Union[CallerPolicyStatus, _Mapping]] = ..., inflight_calls: _Optional[int] = ...) -> None: ...

class CallerPolicyStatus(_message.Message):
    __slots__ = ("mode", "rule_count", "policy_file")
    MODE_FIELD_NUMBER: _ClassVar[int]
    RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FILE_FIELD_NUMBER: _ClassVar[int]
    mode: CallerPolicyMode
    rule_count: int
    policy_file: str
    def __init__(self, mode: _Optional[_Union[CallerPolicyMode, str]] = ..., rule_count: _Optional[int] = ..., policy_file: _Optional[str] = ...) -> None: ...

class GetPeerMetricsRequest(_message.Message):
    __slots__ = ("peer_id",)
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    def __init__(self, peer_id: _Optional[str] = ...) -> None: ...

class PeerMetrics(_message.Message):
    __slots__ = ("peer_id", "connection_type", "latency_ms", "success_rate", "total_requests", "failed_requests", "last_call_at")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LAST_CALL_AT_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    connection_type: Tier
    latency_ms: float
    success_rate: float
    total_requests: int
    failed_requests: int
    last_call_at: _timestamp_pb2.Timestamp
    def __init__(self, peer_id: _Optional[str] = ..., connection_type: _Optional[_Union[Tier, str]] = ..., latency_ms: _Optional[float] = ..., success_rate: _Optional[float] = ..., total_requests: _Optional[int] = ..., failed_requests: _Optional[int] = ..., last_call_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPeerMetricsResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerMetrics]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerMetrics, _Mapping]]] = ...) -> None: ...

class GetRelayHealthRequest(_message.Message):
    __slots__ = ("relay",)
    RELAY_FIELD_NUMBER: _ClassVar[int]
    relay: str
    def __init__(self, relay: _Optional[str] = ...) -> None: ...

class RelayHealth(_message.Message):
    __slots__ = ("relay_addr", "relay_peer_id", "is_healthy", "consecutive_failures", "last_success", "last_check", "rtt_ms", "reserved", "last_error")
    RELAY_ADDR_FIELD_NUMBER: _ClassVar[int]
    RELAY_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    IS_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECK_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    relay_addr: str
    relay_peer_id: str
    is_healthy: bool
    consecutive_failures: int
    last_success: _timestamp_pb2.Timestamp
    last_check: _timestamp_pb2.Timestamp
    rtt_ms: float
    reserved: bool
    last_error: str
    def __init__(self, relay_addr: _Optional[str] = ..., relay_peer_id: _Optional[str] = ..., is_healthy: _Optional[bool] = ..., consecutive_failures: _Optional[int] = ..., last_success: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_check: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rtt_ms: _Optional[float] = ..., reserved: _Optional[bool] = ..., last_error: _Optional[str] = ...) -> None: ...

class GetRelayHealthResponse(_message.Message):
    __slots__ = ("relays",)
    RELAYS_FIELD_NUMBER: _ClassVar[int]
    relays: _containers.RepeatedCompositeFieldContainer[RelayHealth]
    def __init__(self, relays: _Optional[_Iterable[_Union[RelayHealth, _Mapping]]] = ...) -> None: ...

class GetPoolStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPoolStatsResponse(_message.Message):
    __slots__ = ("size", "max_size", "ttl", "hits", "misses", "evictions", "expirations")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    size: int
    max_size: int
    ttl: _duration_pb2.Duration
    hits: int
    misses: int
    evictions: int
    expirations: int
    def __init__(self, size: _Optional[int] = ..., max_size: _Optional[int] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ..., expirations: _Optional[int] = ...) -> None: ...

class PeerInfo(_message.Message):
    __slots__ = ("peer_id", "direct_addrs", "circuit_addrs", "capabilities", "nat_type", "source", "last_seen")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECT_ADDRS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_ADDRS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    NAT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    direct_addrs: _containers.RepeatedScalarFieldContainer[str]
    circuit_addrs: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    nat_type: NatType
    source: PeerSource
    last_seen: _timestamp_pb2.Timestamp
    def __init__(self, peer_id: _Optional[str] = ..., direct_addrs: _Optional[_Iterable[str]] = ..., circuit_addrs: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., nat_type: _Optional[_Union[NatType, str]] = ..., source: _Optional[_Union[PeerSource, str]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerInfo]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerInfo, _Mapping]]] = ...) -> None: ...

class DiscoverRequest(_message.Message):
    __slots__ = ("capability",)
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    capability: str
    def __init__(self, capability: _Optional[str] = ...) -> None: ...

class DiscoverResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerInfo]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerInfo, _Mapping]]] = ...) -> None: ...
