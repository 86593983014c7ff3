from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("endpoint", "user_id", "candidate_ids", "k", "context", "request_id")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    user_id: str
    candidate_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    context: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, endpoint: _Optional[str] = ..., user_id: _Optional[str] = ..., candidate_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., context: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "endpoint", "variant", "model_name", "model_version", "features_degraded", "request_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    endpoint: str
    variant: str
    model_name: str
    model_version: str
    features_degraded: bool
    request_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., endpoint: _Optional[str] = ..., variant: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., features_degraded: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ClickedItems(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemLabels(_message.Message):
    __slots__ = ("labels",)
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, int]
    def __init__(self, labels: _Optional[_Mapping[str, int]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "clicked", "labels", "timestamp_s")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLICKED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    clicked: ClickedItems
    labels: ItemLabels
    timestamp_s: float
    def __init__(self, request_id: _Optional[str] = ..., clicked: _Optional[_Union[ClickedItems, _Mapping]] = ..., labels: _Optional[_Union[ItemLabels, _Mapping]] = ..., timestamp_s: _Optional[float] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("joined", "reason", "labelled_items", "ignored_items")
    JOINED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LABELLED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    IGNORED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    joined: bool
    reason: str
    labelled_items: int
    ignored_items: int
    def __init__(self, joined: _Optional[bool] = ..., reason: _Optional[str] = ..., labelled_items: _Optional[int] = ..., ignored_items: _Optional[int] = ...) -> None: ...
