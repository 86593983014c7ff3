import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from switchyard.protos import feast_types_pb2 as _feast_types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Registry(_message.Message):
    __slots__ = ("entities", "feature_views", "registry_schema_version")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VIEWS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    feature_views: _containers.RepeatedCompositeFieldContainer[FeatureView]
    registry_schema_version: str
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., feature_views: _Optional[_Iterable[_Union[FeatureView, _Mapping]]] = ..., registry_schema_version: _Optional[str] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: EntitySpecV2
    def __init__(self, spec: _Optional[_Union[EntitySpecV2, _Mapping]] = ...) -> None: ...

class EntitySpecV2(_message.Message):
    __slots__ = ("name", "value_type", "join_key", "project")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    JOIN_KEY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: _feast_types_pb2.ValueType.Enum
    join_key: str
    project: str
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[_feast_types_pb2.ValueType.Enum, str]] = ..., join_key: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class FeatureView(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: FeatureViewSpec
    def __init__(self, spec: _Optional[_Union[FeatureViewSpec, _Mapping]] = ...) -> None: ...

class FeatureViewSpec(_message.Message):
    __slots__ = ("name", "project", "entities", "features", "ttl", "online", "entity_columns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    project: str
    entities: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedCompositeFieldContainer[FeatureSpecV2]
    ttl: _duration_pb2.Duration
    online: bool
    entity_columns: _containers.RepeatedCompositeFieldContainer[FeatureSpecV2]
    def __init__(self, name: _Optional[str] = ..., project: _Optional[str] = ..., entities: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[_Union[FeatureSpecV2, _Mapping]]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., online: _Optional[bool] = ..., entity_columns: _Optional[_Iterable[_Union[FeatureSpecV2, _Mapping]]] = ...) -> None: ...

class FeatureSpecV2(_message.Message):
    __slots__ = ("name", "value_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: _feast_types_pb2.ValueType.Enum
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[_feast_types_pb2.ValueType.Enum, str]] = ...) -> None: ...
