from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentFailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_NONE: _ClassVar[PaymentFailureReason]
    FAILURE_REASON_TIMEOUT: _ClassVar[PaymentFailureReason]
    FAILURE_REASON_NO_ROUTE: _ClassVar[PaymentFailureReason]
    FAILURE_REASON_ERROR: _ClassVar[PaymentFailureReason]
    FAILURE_REASON_INCORRECT_PAYMENT_DETAILS: _ClassVar[PaymentFailureReason]
    FAILURE_REASON_INSUFFICIENT_BALANCE: _ClassVar[PaymentFailureReason]
    FAILURE_REASON_CANCELED: _ClassVar[PaymentFailureReason]
FAILURE_REASON_NONE: PaymentFailureReason
FAILURE_REASON_TIMEOUT: PaymentFailureReason
FAILURE_REASON_NO_ROUTE: PaymentFailureReason
FAILURE_REASON_ERROR: PaymentFailureReason
FAILURE_REASON_INCORRECT_PAYMENT_DETAILS: PaymentFailureReason
FAILURE_REASON_INSUFFICIENT_BALANCE: PaymentFailureReason
FAILURE_REASON_CANCELED: PaymentFailureReason

class Invoice(_message.Message):
    __slots__ = ("memo", "r_preimage", "r_hash", "value", "value_msat", "settled", "creation_date", "settle_date", "payment_request", "description_hash", "expiry", "fallback_addr", "cltv_expiry", "private", "add_index", "settle_index", "amt_paid", "amt_paid_sat", "amt_paid_msat", "state", "is_keysend", "payment_addr", "is_amp")
    class InvoiceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OPEN: _ClassVar[Invoice.InvoiceState]
        SETTLED: _ClassVar[Invoice.InvoiceState]
        CANCELED: _ClassVar[Invoice.InvoiceState]
        ACCEPTED: _ClassVar[Invoice.InvoiceState]
    OPEN: Invoice.InvoiceState
    SETTLED: Invoice.InvoiceState
    CANCELED: Invoice.InvoiceState
    ACCEPTED: Invoice.InvoiceState
    MEMO_FIELD_NUMBER: _ClassVar[int]
    R_PREIMAGE_FIELD_NUMBER: _ClassVar[int]
    R_HASH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_MSAT_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    CREATION_DATE_FIELD_NUMBER: _ClassVar[int]
    SETTLE_DATE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_HASH_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ADDR_FIELD_NUMBER: _ClassVar[int]
    CLTV_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    ADD_INDEX_FIELD_NUMBER: _ClassVar[int]
    SETTLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    AMT_PAID_FIELD_NUMBER: _ClassVar[int]
    AMT_PAID_SAT_FIELD_NUMBER: _ClassVar[int]
    AMT_PAID_MSAT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IS_KEYSEND_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    IS_AMP_FIELD_NUMBER: _ClassVar[int]
    memo: str
    r_preimage: bytes
    r_hash: bytes
    value: int
    value_msat: int
    settled: bool
    creation_date: int
    settle_date: int
    payment_request: str
    description_hash: bytes
    expiry: int
    fallback_addr: str
    cltv_expiry: int
    private: bool
    add_index: int
    settle_index: int
    amt_paid: int
    amt_paid_sat: int
    amt_paid_msat: int
    state: Invoice.InvoiceState
    is_keysend: bool
    payment_addr: bytes
    is_amp: bool
    def __init__(self, memo: _Optional[str] = ..., r_preimage: _Optional[bytes] = ..., r_hash: _Optional[bytes] = ..., value: _Optional[int] = ..., value_msat: _Optional[int] = ..., settled: _Optional[bool] = ..., creation_date: _Optional[int] = ..., settle_date: _Optional[int] = ..., payment_request: _Optional[str] = ..., description_hash: _Optional[bytes] = ..., expiry: _Optional[int] = ..., fallback_addr: _Optional[str] = ..., cltv_expiry: _Optional[int] = ..., private: _Optional[bool] = ..., add_index: _Optional[int] = ..., settle_index: _Optional[int] = ..., amt_paid: _Optional[int] = ..., amt_paid_sat: _Optional[int] = ..., amt_paid_msat: _Optional[int] = ..., state: _Optional[_Union[Invoice.InvoiceState, str]] = ..., is_keysend: _Optional[bool] = ..., payment_addr: _Optional[bytes] = ..., is_amp: _Optional[bool] = ...) -> None: ...

class AddInvoiceResponse(_message.Message):
    __slots__ = ("r_hash", "payment_request", "add_index", "payment_addr")
    R_HASH_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ADD_INDEX_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    r_hash: bytes
    payment_request: str
    add_index: int
    payment_addr: bytes
    def __init__(self, r_hash: _Optional[bytes] = ..., payment_request: _Optional[str] = ..., add_index: _Optional[int] = ..., payment_addr: _Optional[bytes] = ...) -> None: ...

class PaymentHash(_message.Message):
    __slots__ = ("r_hash_str", "r_hash")
    R_HASH_STR_FIELD_NUMBER: _ClassVar[int]
    R_HASH_FIELD_NUMBER: _ClassVar[int]
    r_hash_str: str
    r_hash: bytes
    def __init__(self, r_hash_str: _Optional[str] = ..., r_hash: _Optional[bytes] = ...) -> None: ...

class InvoiceSubscription(_message.Message):
    __slots__ = ("add_index", "settle_index")
    ADD_INDEX_FIELD_NUMBER: _ClassVar[int]
    SETTLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    add_index: int
    settle_index: int
    def __init__(self, add_index: _Optional[int] = ..., settle_index: _Optional[int] = ...) -> None: ...

class PayReqString(_message.Message):
    __slots__ = ("pay_req",)
    PAY_REQ_FIELD_NUMBER: _ClassVar[int]
    pay_req: str
    def __init__(self, pay_req: _Optional[str] = ...) -> None: ...

class PayReq(_message.Message):
    __slots__ = ("destination", "payment_hash", "num_satoshis", "timestamp", "expiry", "description", "description_hash", "fallback_addr", "cltv_expiry", "payment_addr", "num_msat")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_HASH_FIELD_NUMBER: _ClassVar[int]
    NUM_SATOSHIS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_HASH_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ADDR_FIELD_NUMBER: _ClassVar[int]
    CLTV_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    NUM_MSAT_FIELD_NUMBER: _ClassVar[int]
    destination: str
    payment_hash: str
    num_satoshis: int
    timestamp: int
    expiry: int
    description: str
    description_hash: str
    fallback_addr: str
    cltv_expiry: int
    payment_addr: bytes
    num_msat: int
    def __init__(self, destination: _Optional[str] = ..., payment_hash: _Optional[str] = ..., num_satoshis: _Optional[int] = ..., timestamp: _Optional[int] = ..., expiry: _Optional[int] = ..., description: _Optional[str] = ..., description_hash: _Optional[str] = ..., fallback_addr: _Optional[str] = ..., cltv_expiry: _Optional[int] = ..., payment_addr: _Optional[bytes] = ..., num_msat: _Optional[int] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("payment_hash", "value", "creation_date", "fee", "payment_preimage", "value_sat", "value_msat", "payment_request", "status", "fee_sat", "fee_msat", "creation_time_ns", "payment_index", "failure_reason")
    class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[Payment.PaymentStatus]
        IN_FLIGHT: _ClassVar[Payment.PaymentStatus]
        SUCCEEDED: _ClassVar[Payment.PaymentStatus]
        FAILED: _ClassVar[Payment.PaymentStatus]
        INITIATED: _ClassVar[Payment.PaymentStatus]
    UNKNOWN: Payment.PaymentStatus
    IN_FLIGHT: Payment.PaymentStatus
    SUCCEEDED: Payment.PaymentStatus
    FAILED: Payment.PaymentStatus
    INITIATED: Payment.PaymentStatus
    PAYMENT_HASH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATION_DATE_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_PREIMAGE_FIELD_NUMBER: _ClassVar[int]
    VALUE_SAT_FIELD_NUMBER: _ClassVar[int]
    VALUE_MSAT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FEE_SAT_FIELD_NUMBER: _ClassVar[int]
    FEE_MSAT_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    payment_hash: str
    value: int
    creation_date: int
    fee: int
    payment_preimage: str
    value_sat: int
    value_msat: int
    payment_request: str
    status: Payment.PaymentStatus
    fee_sat: int
    fee_msat: int
    creation_time_ns: int
    payment_index: int
    failure_reason: PaymentFailureReason
    def __init__(self, payment_hash: _Optional[str] = ..., value: _Optional[int] = ..., creation_date: _Optional[int] = ..., fee: _Optional[int] = ..., payment_preimage: _Optional[str] = ..., value_sat: _Optional[int] = ..., value_msat: _Optional[int] = ..., payment_request: _Optional[str] = ..., status: _Optional[_Union[Payment.PaymentStatus, str]] = ..., fee_sat: _Optional[int] = ..., fee_msat: _Optional[int] = ..., creation_time_ns: _Optional[int] = ..., payment_index: _Optional[int] = ..., failure_reason: _Optional[_Union[PaymentFailureReason, str]] = ...) -> None: ...

class ChannelBalanceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Amount(_message.Message):
    __slots__ = ("sat", "msat")
    SAT_FIELD_NUMBER: _ClassVar[int]
    MSAT_FIELD_NUMBER: _ClassVar[int]
    sat: int
    msat: int
    def __init__(self, sat: _Optional[int] = ..., msat: _Optional[int] = ...) -> None: ...

class ChannelBalanceResponse(_message.Message):
    __slots__ = ("balance", "pending_open_balance", "local_balance", "remote_balance", "unsettled_local_balance", "unsettled_remote_balance", "pending_open_local_balance", "pending_open_remote_balance")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    PENDING_OPEN_BALANCE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_BALANCE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_LOCAL_BALANCE_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_REMOTE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    PENDING_OPEN_LOCAL_BALANCE_FIELD_NUMBER: _ClassVar[int]
    PENDING_OPEN_REMOTE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: int
    pending_open_balance: int
    local_balance: Amount
    remote_balance: Amount
    unsettled_local_balance: Amount
    unsettled_remote_balance: Amount
    pending_open_local_balance: Amount
    pending_open_remote_balance: Amount
    def __init__(self, balance: _Optional[int] = ..., pending_open_balance: _Optional[int] = ..., local_balance: _Optional[_Union[Amount, _Mapping]] = ..., remote_balance: _Optional[_Union[Amount, _Mapping]] = ..., unsettled_local_balance: _Optional[_Union[Amount, _Mapping]] = ..., unsettled_remote_balance: _Optional[_Union[Amount, _Mapping]] = ..., pending_open_local_balance: _Optional[_Union[Amount, _Mapping]] = ..., pending_open_remote_balance: _Optional[_Union[Amount, _Mapping]] = ...) -> None: ...
