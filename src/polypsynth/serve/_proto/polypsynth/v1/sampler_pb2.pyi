from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_PNG: _ClassVar[Encoding]
    ENCODING_RGB8: _ClassVar[Encoding]
ENCODING_UNSPECIFIED: Encoding
ENCODING_PNG: Encoding
ENCODING_RGB8: Encoding

class GenerateRequest(_message.Message):
    __slots__ = ("model", "class_name", "count", "seed", "steps", "scheduler", "encoding", "request_id", "first_index", "guidance_scale")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    model: str
    class_name: str
    count: int
    seed: int
    steps: int
    scheduler: str
    encoding: Encoding
    request_id: str
    first_index: int
    guidance_scale: float
    def __init__(self, model: _Optional[str] = ..., class_name: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., scheduler: _Optional[str] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., request_id: _Optional[str] = ..., first_index: _Optional[int] = ..., guidance_scale: _Optional[float] = ...) -> None: ...

class GenerateCredit(_message.Message):
    __slots__ = ("request", "received")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    request: GenerateRequest
    received: int
    def __init__(self, request: _Optional[_Union[GenerateRequest, _Mapping]] = ..., received: _Optional[int] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("index", "seed", "class_name", "width", "height", "encoding", "data", "model_hash", "request_id", "steps", "guidance_scale", "scheduler", "backend")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    index: int
    seed: int
    class_name: str
    width: int
    height: int
    encoding: Encoding
    data: bytes
    model_hash: str
    request_id: str
    steps: int
    guidance_scale: float
    scheduler: str
    backend: str
    def __init__(self, index: _Optional[int] = ..., seed: _Optional[int] = ..., class_name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., data: _Optional[bytes] = ..., model_hash: _Optional[str] = ..., request_id: _Optional[str] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., scheduler: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Defaults(_message.Message):
    __slots__ = ("steps", "scheduler", "guidance_scale")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    steps: int
    scheduler: str
    guidance_scale: float
    def __init__(self, steps: _Optional[int] = ..., scheduler: _Optional[str] = ..., guidance_scale: _Optional[float] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_count", "max_steps", "max_batch", "max_queued_images", "stream_window")
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    STREAM_WINDOW_FIELD_NUMBER: _ClassVar[int]
    max_count: int
    max_steps: int
    max_batch: int
    max_queued_images: int
    stream_window: int
    def __init__(self, max_count: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_queued_images: _Optional[int] = ..., stream_window: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "classes", "resolution", "backend", "model_hash", "defaults", "limits", "schedulers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    resolution: int
    backend: str
    model_hash: str
    defaults: Defaults
    limits: Limits
    schedulers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., resolution: _Optional[int] = ..., backend: _Optional[str] = ..., model_hash: _Optional[str] = ..., defaults: _Optional[_Union[Defaults, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., schedulers: _Optional[_Iterable[str]] = ...) -> None: ...
