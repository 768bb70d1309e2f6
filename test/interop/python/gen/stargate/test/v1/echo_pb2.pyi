import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Behavior(_message.Message):
    __slots__ = ("delay", "failure")
    DELAY_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    delay: _duration_pb2.Duration
    failure: Failure
    def __init__(self, delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    details: bytes
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[bytes] = ...) -> None: ...

class UnaryRequest(_message.Message):
    __slots__ = ("payload", "behavior")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    behavior: Behavior
    def __init__(self, payload: _Optional[bytes] = ..., behavior: _Optional[_Union[Behavior, _Mapping]] = ...) -> None: ...

class UnaryResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class ServerStreamRequest(_message.Message):
    __slots__ = ("payload", "behavior", "response_count", "response_bytes")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    behavior: Behavior
    response_count: int
    response_bytes: int
    def __init__(self, payload: _Optional[bytes] = ..., behavior: _Optional[_Union[Behavior, _Mapping]] = ..., response_count: _Optional[int] = ..., response_bytes: _Optional[int] = ...) -> None: ...

class ServerStreamResponse(_message.Message):
    __slots__ = ("index", "payload")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    index: int
    payload: bytes
    def __init__(self, index: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ClientStreamRequest(_message.Message):
    __slots__ = ("payload", "behavior")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    behavior: Behavior
    def __init__(self, payload: _Optional[bytes] = ..., behavior: _Optional[_Union[Behavior, _Mapping]] = ...) -> None: ...

class ClientStreamResponse(_message.Message):
    __slots__ = ("received_messages", "received_bytes", "sha256")
    RECEIVED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    received_messages: int
    received_bytes: int
    sha256: bytes
    def __init__(self, received_messages: _Optional[int] = ..., received_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class BidiRequest(_message.Message):
    __slots__ = ("payload", "behavior")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    behavior: Behavior
    def __init__(self, payload: _Optional[bytes] = ..., behavior: _Optional[_Union[Behavior, _Mapping]] = ...) -> None: ...

class BidiResponse(_message.Message):
    __slots__ = ("index", "payload")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    index: int
    payload: bytes
    def __init__(self, index: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...
