from . import lightning_pb2 as _lightning_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SendPaymentRequest(_message.Message):
    __slots__ = ("dest", "amt", "payment_hash", "final_cltv_delta", "payment_request", "timeout_seconds", "fee_limit_sat", "cltv_limit", "amt_msat", "fee_limit_msat", "allow_self_payment", "max_parts", "no_inflight_updates", "outgoing_chan_ids")
    DEST_FIELD_NUMBER: _ClassVar[int]
    AMT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_HASH_FIELD_NUMBER: _ClassVar[int]
    FINAL_CLTV_DELTA_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FEE_LIMIT_SAT_FIELD_NUMBER: _ClassVar[int]
    CLTV_LIMIT_FIELD_NUMBER: _ClassVar[int]
    AMT_MSAT_FIELD_NUMBER: _ClassVar[int]
    FEE_LIMIT_MSAT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SELF_PAYMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_PARTS_FIELD_NUMBER: _ClassVar[int]
    NO_INFLIGHT_UPDATES_FIELD_NUMBER: _ClassVar[int]
    OUTGOING_CHAN_IDS_FIELD_NUMBER: _ClassVar[int]
    dest: bytes
    amt: int
    payment_hash: bytes
    final_cltv_delta: int
    payment_request: str
    timeout_seconds: int
    fee_limit_sat: int
    cltv_limit: int
    amt_msat: int
    fee_limit_msat: int
    allow_self_payment: bool
    max_parts: int
    no_inflight_updates: bool
    outgoing_chan_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dest: _Optional[bytes] = ..., amt: _Optional[int] = ..., payment_hash: _Optional[bytes] = ..., final_cltv_delta: _Optional[int] = ..., payment_request: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., fee_limit_sat: _Optional[int] = ..., cltv_limit: _Optional[int] = ..., amt_msat: _Optional[int] = ..., fee_limit_msat: _Optional[int] = ..., allow_self_payment: _Optional[bool] = ..., max_parts: _Optional[int] = ..., no_inflight_updates: _Optional[bool] = ..., outgoing_chan_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class TrackPaymentRequest(_message.Message):
    __slots__ = ("payment_hash", "no_inflight_updates")
    PAYMENT_HASH_FIELD_NUMBER: _ClassVar[int]
    NO_INFLIGHT_UPDATES_FIELD_NUMBER: _ClassVar[int]
    payment_hash: bytes
    no_inflight_updates: bool
    def __init__(self, payment_hash: _Optional[bytes] = ..., no_inflight_updates: _Optional[bool] = ...) -> None: ...
