from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ValueType(_message.Message):
    __slots__ = ()
    class Enum(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INVALID: _ClassVar[ValueType.Enum]
        BYTES: _ClassVar[ValueType.Enum]
        STRING: _ClassVar[ValueType.Enum]
        INT32: _ClassVar[ValueType.Enum]
        INT64: _ClassVar[ValueType.Enum]
        DOUBLE: _ClassVar[ValueType.Enum]
        FLOAT: _ClassVar[ValueType.Enum]
        BOOL: _ClassVar[ValueType.Enum]
        UNIX_TIMESTAMP: _ClassVar[ValueType.Enum]
        NULL: _ClassVar[ValueType.Enum]
    INVALID: ValueType.Enum
    BYTES: ValueType.Enum
    STRING: ValueType.Enum
    INT32: ValueType.Enum
    INT64: ValueType.Enum
    DOUBLE: ValueType.Enum
    FLOAT: ValueType.Enum
    BOOL: ValueType.Enum
    UNIX_TIMESTAMP: ValueType.Enum
    NULL: ValueType.Enum
    def __init__(self) -> None: ...

class Value(_message.Message):
    __slots__ = ("bytes_val", "string_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val", "unix_timestamp_val")
    BYTES_VAL_FIELD_NUMBER: _ClassVar[int]
    STRING_VAL_FIELD_NUMBER: _ClassVar[int]
    INT32_VAL_FIELD_NUMBER: _ClassVar[int]
    INT64_VAL_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VAL_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VAL_FIELD_NUMBER: _ClassVar[int]
    BOOL_VAL_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIMESTAMP_VAL_FIELD_NUMBER: _ClassVar[int]
    bytes_val: bytes
    string_val: str
    int32_val: int
    int64_val: int
    double_val: float
    float_val: float
    bool_val: bool
    unix_timestamp_val: int
    def __init__(self, bytes_val: _Optional[bytes] = ..., string_val: _Optional[str] = ..., int32_val: _Optional[int] = ..., int64_val: _Optional[int] = ..., double_val: _Optional[float] = ..., float_val: _Optional[float] = ..., bool_val: _Optional[bool] = ..., unix_timestamp_val: _Optional[int] = ...) -> None: ...
