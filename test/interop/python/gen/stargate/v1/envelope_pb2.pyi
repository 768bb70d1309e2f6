import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from stargate.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerRequest(_message.Message):
    __slots__ = ("request_id", "method", "data", "json", "timeout", "trace_context", "caller_peer_id", "tier", "exchange_id")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CALLER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    method: str
    data: bytes
    json: _struct_pb2.Value
    timeout: _duration_pb2.Duration
    trace_context: _containers.ScalarMap[str, str]
    caller_peer_id: str
    tier: _gateway_pb2.Tier
    exchange_id: int
    def __init__(self, request_id: _Optional[str] = ..., method: _Optional[str] = ..., data: _Optional[bytes] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., caller_peer_id: _Optional[str] = ..., tier: _Optional[_Union[_gateway_pb2.Tier, str]] = ..., exchange_id: _Optional[int] = ...) -> None: ...

class PeerResponse(_message.Message):
    __slots__ = ("exchange_id", "request_id", "data", "json", "error", "responder_peer_id", "replayed")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONDER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    request_id: str
    data: bytes
    json: _struct_pb2.Value
    error: _gateway_pb2.ErrorStatus
    responder_peer_id: str
    replayed: bool
    def __init__(self, exchange_id: _Optional[int] = ..., request_id: _Optional[str] = ..., data: _Optional[bytes] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[_Union[_gateway_pb2.ErrorStatus, _Mapping]] = ..., responder_peer_id: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class PeerCancel(_message.Message):
    __slots__ = ("exchange_id",)
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    def __init__(self, exchange_id: _Optional[int] = ...) -> None: ...

class PeerFrame(_message.Message):
    __slots__ = ("request", "response", "cancel", "stream_open", "stream_headers", "stream_data", "stream_close", "stream_reset", "stream_window", "sequence")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_OPEN_FIELD_NUMBER: _ClassVar[int]
    STREAM_HEADERS_FIELD_NUMBER: _ClassVar[int]
    STREAM_DATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_CLOSE_FIELD_NUMBER: _ClassVar[int]
    STREAM_RESET_FIELD_NUMBER: _ClassVar[int]
    STREAM_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    request: PeerRequest
    response: PeerResponse
    cancel: PeerCancel
    stream_open: StreamOpen
    stream_headers: StreamHeaders
    stream_data: StreamData
    stream_close: StreamClose
    stream_reset: StreamReset
    stream_window: StreamWindow
    sequence: int
    def __init__(self, request: _Optional[_Union[PeerRequest, _Mapping]] = ..., response: _Optional[_Union[PeerResponse, _Mapping]] = ..., cancel: _Optional[_Union[PeerCancel, _Mapping]] = ..., stream_open: _Optional[_Union[StreamOpen, _Mapping]] = ..., stream_headers: _Optional[_Union[StreamHeaders, _Mapping]] = ..., stream_data: _Optional[_Union[StreamData, _Mapping]] = ..., stream_close: _Optional[_Union[StreamClose, _Mapping]] = ..., stream_reset: _Optional[_Union[StreamReset, _Mapping]] = ..., stream_window: _Optional[_Union[StreamWindow, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class MetadataEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class StreamOpen(_message.Message):
    __slots__ = ("exchange_id", "request_id", "method", "metadata", "timeout", "trace_context", "caller_peer_id", "tier", "initial_window_bytes", "data", "end_of_stream", "idempotent")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CALLER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    INITIAL_WINDOW_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    request_id: str
    method: str
    metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    timeout: _duration_pb2.Duration
    trace_context: _containers.ScalarMap[str, str]
    caller_peer_id: str
    tier: _gateway_pb2.Tier
    initial_window_bytes: int
    data: bytes
    end_of_stream: bool
    idempotent: bool
    def __init__(self, exchange_id: _Optional[int] = ..., request_id: _Optional[str] = ..., method: _Optional[str] = ..., metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., caller_peer_id: _Optional[str] = ..., tier: _Optional[_Union[_gateway_pb2.Tier, str]] = ..., initial_window_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., end_of_stream: _Optional[bool] = ..., idempotent: _Optional[bool] = ...) -> None: ...

class StreamRecord(_message.Message):
    __slots__ = ("has_headers", "headers", "data", "code", "message", "trailers")
    HAS_HEADERS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    has_headers: bool
    headers: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    data: bytes
    code: int
    message: str
    trailers: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    def __init__(self, has_headers: _Optional[bool] = ..., headers: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ..., data: _Optional[bytes] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., trailers: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class StreamHeaders(_message.Message):
    __slots__ = ("exchange_id", "metadata")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    def __init__(self, exchange_id: _Optional[int] = ..., metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class StreamData(_message.Message):
    __slots__ = ("exchange_id", "data", "end_of_stream")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    data: bytes
    end_of_stream: bool
    def __init__(self, exchange_id: _Optional[int] = ..., data: _Optional[bytes] = ..., end_of_stream: _Optional[bool] = ...) -> None: ...

class StreamClose(_message.Message):
    __slots__ = ("exchange_id", "code", "message", "trailers")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    code: int
    message: str
    trailers: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    def __init__(self, exchange_id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., trailers: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class StreamReset(_message.Message):
    __slots__ = ("exchange_id", "code", "message")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    code: int
    message: str
    def __init__(self, exchange_id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamWindow(_message.Message):
    __slots__ = ("exchange_id", "credit_bytes")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    credit_bytes: int
    def __init__(self, exchange_id: _Optional[int] = ..., credit_bytes: _Optional[int] = ...) -> None: ...

class SealedMessage(_message.Message):
    __slots__ = ("sender_peer_id", "recipient_peer_id", "ephemeral_public_key", "nonce", "ciphertext", "sent_at", "signature")
    SENDER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sender_peer_id: str
    recipient_peer_id: str
    ephemeral_public_key: bytes
    nonce: bytes
    ciphertext: bytes
    sent_at: _timestamp_pb2.Timestamp
    signature: bytes
    def __init__(self, sender_peer_id: _Optional[str] = ..., recipient_peer_id: _Optional[str] = ..., ephemeral_public_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PresenceRecord(_message.Message):
    __slots__ = ("peer_id", "direct_addrs", "circuit_addrs", "capabilities", "nat_type", "issued_at", "sequence")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECT_ADDRS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_ADDRS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    NAT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    direct_addrs: _containers.RepeatedScalarFieldContainer[str]
    circuit_addrs: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    nat_type: _gateway_pb2.NatType
    issued_at: _timestamp_pb2.Timestamp
    sequence: int
    def __init__(self, peer_id: _Optional[str] = ..., direct_addrs: _Optional[_Iterable[str]] = ..., circuit_addrs: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., nat_type: _Optional[_Union[_gateway_pb2.NatType, str]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class SignedPresence(_message.Message):
    __slots__ = ("record", "signature")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    record: bytes
    signature: bytes
    def __init__(self, record: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
