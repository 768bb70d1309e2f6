import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefusalReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSAL_REASON_UNSPECIFIED: _ClassVar[RefusalReason]
    REFUSAL_REASON_RESERVATION_LIMIT: _ClassVar[RefusalReason]
    REFUSAL_REASON_PERMISSION_DENIED: _ClassVar[RefusalReason]
    REFUSAL_REASON_RATE_LIMITED: _ClassVar[RefusalReason]
    REFUSAL_REASON_PER_PEER_LIMIT: _ClassVar[RefusalReason]
    REFUSAL_REASON_PER_IP_LIMIT: _ClassVar[RefusalReason]
    REFUSAL_REASON_NO_RESERVATION: _ClassVar[RefusalReason]
    REFUSAL_REASON_CONNECTION_LIMIT: _ClassVar[RefusalReason]
    REFUSAL_REASON_CONNECTION_FAILED: _ClassVar[RefusalReason]
    REFUSAL_REASON_SOURCE_RATE_LIMITED: _ClassVar[RefusalReason]
    REFUSAL_REASON_DESTINATION_RATE_LIMITED: _ClassVar[RefusalReason]
    REFUSAL_REASON_SOURCE_CIRCUIT_LIMIT: _ClassVar[RefusalReason]
    REFUSAL_REASON_DESTINATION_CIRCUIT_LIMIT: _ClassVar[RefusalReason]
    REFUSAL_REASON_STOP_TIMEOUT: _ClassVar[RefusalReason]

class CircuitEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_END_UNSPECIFIED: _ClassVar[CircuitEnd]
    CIRCUIT_END_CLOSED: _ClassVar[CircuitEnd]
    CIRCUIT_END_RESET: _ClassVar[CircuitEnd]
    CIRCUIT_END_DATA_LIMIT: _ClassVar[CircuitEnd]
    CIRCUIT_END_DURATION_LIMIT: _ClassVar[CircuitEnd]
    CIRCUIT_END_SHUTDOWN: _ClassVar[CircuitEnd]
    CIRCUIT_END_REPLACED: _ClassVar[CircuitEnd]
    CIRCUIT_END_TARGET_GONE: _ClassVar[CircuitEnd]
    CIRCUIT_END_INITIATOR_GONE: _ClassVar[CircuitEnd]
REFUSAL_REASON_UNSPECIFIED: RefusalReason
REFUSAL_REASON_RESERVATION_LIMIT: RefusalReason
REFUSAL_REASON_PERMISSION_DENIED: RefusalReason
REFUSAL_REASON_RATE_LIMITED: RefusalReason
REFUSAL_REASON_PER_PEER_LIMIT: RefusalReason
REFUSAL_REASON_PER_IP_LIMIT: RefusalReason
REFUSAL_REASON_NO_RESERVATION: RefusalReason
REFUSAL_REASON_CONNECTION_LIMIT: RefusalReason
REFUSAL_REASON_CONNECTION_FAILED: RefusalReason
REFUSAL_REASON_SOURCE_RATE_LIMITED: RefusalReason
REFUSAL_REASON_DESTINATION_RATE_LIMITED: RefusalReason
REFUSAL_REASON_SOURCE_CIRCUIT_LIMIT: RefusalReason
REFUSAL_REASON_DESTINATION_CIRCUIT_LIMIT: RefusalReason
REFUSAL_REASON_STOP_TIMEOUT: RefusalReason
CIRCUIT_END_UNSPECIFIED: CircuitEnd
CIRCUIT_END_CLOSED: CircuitEnd
CIRCUIT_END_RESET: CircuitEnd
CIRCUIT_END_DATA_LIMIT: CircuitEnd
CIRCUIT_END_DURATION_LIMIT: CircuitEnd
CIRCUIT_END_SHUTDOWN: CircuitEnd
CIRCUIT_END_REPLACED: CircuitEnd
CIRCUIT_END_TARGET_GONE: CircuitEnd
CIRCUIT_END_INITIATOR_GONE: CircuitEnd

class GetRelayInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RelayLimits(_message.Message):
    __slots__ = ("max_reservations", "max_connections", "reservation_ttl", "max_circuit_bytes", "max_circuit_duration", "max_reservations_per_peer", "max_reservations_per_ip", "max_connections_per_ip_per_second", "max_reservations_per_ip_per_second", "allowlist_enabled", "max_circuits_per_ip_per_second", "max_circuits_to_peer_per_second", "max_circuits_per_ip", "max_circuits_per_peer", "max_circuits_to_peer", "stop_timeout", "max_stop_failures")
    MAX_RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUIT_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_RESERVATIONS_PER_PEER_FIELD_NUMBER: _ClassVar[int]
    MAX_RESERVATIONS_PER_IP_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_PER_IP_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_RESERVATIONS_PER_IP_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ALLOWLIST_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUITS_PER_IP_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUITS_TO_PEER_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUITS_PER_IP_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUITS_PER_PEER_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUITS_TO_PEER_FIELD_NUMBER: _ClassVar[int]
    STOP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_STOP_FAILURES_FIELD_NUMBER: _ClassVar[int]
    max_reservations: int
    max_connections: int
    reservation_ttl: _duration_pb2.Duration
    max_circuit_bytes: int
    max_circuit_duration: _duration_pb2.Duration
    max_reservations_per_peer: int
    max_reservations_per_ip: int
    max_connections_per_ip_per_second: int
    max_reservations_per_ip_per_second: int
    allowlist_enabled: bool
    max_circuits_per_ip_per_second: int
    max_circuits_to_peer_per_second: int
    max_circuits_per_ip: int
    max_circuits_per_peer: int
    max_circuits_to_peer: int
    stop_timeout: _duration_pb2.Duration
    max_stop_failures: int
    def __init__(self, max_reservations: _Optional[int] = ..., max_connections: _Optional[int] = ..., reservation_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_circuit_bytes: _Optional[int] = ..., max_circuit_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_reservations_per_peer: _Optional[int] = ..., max_reservations_per_ip: _Optional[int] = ..., max_connections_per_ip_per_second: _Optional[int] = ..., max_reservations_per_ip_per_second: _Optional[int] = ..., allowlist_enabled: _Optional[bool] = ..., max_circuits_per_ip_per_second: _Optional[int] = ..., max_circuits_to_peer_per_second: _Optional[int] = ..., max_circuits_per_ip: _Optional[int] = ..., max_circuits_per_peer: _Optional[int] = ..., max_circuits_to_peer: _Optional[int] = ..., stop_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_stop_failures: _Optional[int] = ...) -> None: ...

class GetRelayInfoResponse(_message.Message):
    __slots__ = ("peer_id", "multiaddrs", "version", "limits", "started_at")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    MULTIADDRS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    multiaddrs: _containers.RepeatedScalarFieldContainer[str]
    version: str
    limits: RelayLimits
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, peer_id: _Optional[str] = ..., multiaddrs: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., limits: _Optional[_Union[RelayLimits, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRelayStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RefusalCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: RefusalReason
    count: int
    def __init__(self, reason: _Optional[_Union[RefusalReason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class CircuitEndCount(_message.Message):
    __slots__ = ("end", "count")
    END_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    end: CircuitEnd
    count: int
    def __init__(self, end: _Optional[_Union[CircuitEnd, str]] = ..., count: _Optional[int] = ...) -> None: ...

class GetRelayStatsResponse(_message.Message):
    __slots__ = ("reservations", "active_circuits", "total_circuits", "bytes_from_initiator", "bytes_to_initiator", "refusals", "uptime", "connections", "total_reservations", "reservations_replaced", "reservations_dropped", "circuit_ends")
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CIRCUITS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CIRCUITS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_INITIATOR_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_INITIATOR_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_REPLACED_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_ENDS_FIELD_NUMBER: _ClassVar[int]
    reservations: int
    active_circuits: int
    total_circuits: int
    bytes_from_initiator: int
    bytes_to_initiator: int
    refusals: _containers.RepeatedCompositeFieldContainer[RefusalCount]
    uptime: _duration_pb2.Duration
    connections: int
    total_reservations: int
    reservations_replaced: int
    reservations_dropped: int
    circuit_ends: _containers.RepeatedCompositeFieldContainer[CircuitEndCount]
    def __init__(self, reservations: _Optional[int] = ..., active_circuits: _Optional[int] = ..., total_circuits: _Optional[int] = ..., bytes_from_initiator: _Optional[int] = ..., bytes_to_initiator: _Optional[int] = ..., refusals: _Optional[_Iterable[_Union[RefusalCount, _Mapping]]] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., connections: _Optional[int] = ..., total_reservations: _Optional[int] = ..., reservations_replaced: _Optional[int] = ..., reservations_dropped: _Optional[int] = ..., circuit_ends: _Optional[_Iterable[_Union[CircuitEndCount, _Mapping]]] = ...) -> None: ...
