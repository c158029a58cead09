"""Request and response bodies of the public API (pydantic: validated at the edge, and the
source of ``/openapi.json``). Requests are strict: ``"1"`` is not a number and ``0`` is not
``false``, so a money field or a privacy opt-in means exactly what was sent."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
)

# The engine's request model, re-exported: the API's schema is built from these.
from ..tasks.requests import (
    MAX_MESSAGES as MAX_MESSAGES,
)
from ..tasks.requests import (
    MAX_MODELS as MAX_MODELS,
)
from ..tasks.requests import (
    OWN_FIELDS as OWN_FIELDS,
)
from ..tasks.requests import (
    REFUSED_FIELDS as REFUSED_FIELDS,
)
from ..tasks.requests import (
    ChatMessage as ChatMessage,
)
from ..tasks.requests import (
    ChatRequest as ChatRequest,
)
from ..tasks.requests import (
    ConsensusSpec as ConsensusSpec,
)
from ..tasks.requests import (
    ModelName as ModelName,
)
from ..tasks.requests import (
    ModelParams as ModelParams,
)
from ..tasks.requests import (
    Reasoning as Reasoning,
)
from .problems import Problem

_M = TypeVar("_M", bound=BaseModel)


class TaskRequest(ModelParams):
    """``POST /v1/tasks`` and ``POST /v1/quote``: the same fields as a chat completion (but
    ``stream``), and the task's own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tier: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$")
    callback_url: HttpUrl | None = None

    def chat(self, default_model: str) -> ChatRequest:
        params = self.params()
        params.pop("tier", None)
        params.pop("callback_url", None)
        params["model"] = (
            self.model
            or (f"tier:{self.tier}" if self.tier else None)
            or (None if self.models or self.consensus else default_model)
        )
        return ChatRequest(**params)


class DepositRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    amount_sat: int = Field(ge=1, le=10_000_000)


class WithdrawalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    invoice: str = Field(min_length=10, max_length=4096)
    fee_limit_msat: int | None = Field(None, ge=0, le=100_000_000)


class PriceBreakdown(BaseModel):
    model: str
    prompt_tokens_max: int
    completion_tokens_max: int
    cost_max_usd: str
    btc_usd: str
    rate_source: str
    rate_at: float
    cost_msat: int
    markup_msat: int
    fee_msat: int
    total_msat: int
    #: where completion_tokens_max comes from: "requested" (max_tokens), "model_max" (the
    #: model's completion limit), "context_length" (the whole context), "local"
    completion_bound: str | None = None
    images: int = 0  # input images, each at the model's per-image price


class QuoteView(PriceBreakdown):
    """``POST /v1/quote``: the price, and where the request would be routed."""

    tier: str | None = None
    task_class: str | None = None  # with "auto": the class the prompt was given


class InvoiceView(BaseModel):
    payment_hash: str
    bolt11: str
    amount_msat: int
    expires_at: float


class TaskView(BaseModel):
    id: str
    status: str
    created_at: float
    updated_at: float
    model: str | None = None
    price: PriceBreakdown | None = None
    invoice: InvoiceView | None = None
    result: dict[str, Any] | None = None
    charge_msat: int | None = None
    change_msat: int | None = None
    provisional: bool | None = None
    consensus: dict[str, Any] | None = None
    cascade: dict[str, Any] | None = None
    tier: str | None = None
    task_class: str | None = None
    error: str | None = None


class TaskCreated(TaskView):
    #: None only when an Idempotency-Key replay finds a task older than derived tokens
    task_token: str | None
    callback_secret: str | None = None


class AccountCreated(BaseModel):
    id: str
    api_key: str
    balance_msat: int


class AccountView(BaseModel):
    id: str
    balance_msat: int
    budgets: list[dict[str, Any]] = []  # each cap that applies, with what is spent against it


class WithdrawalView(BaseModel):
    payment_hash: str
    #: succeeded | pending (in flight or not known yet: the amount stays reserved) | failed
    #: (refunded to the balance)
    status: Literal["succeeded", "pending", "failed"]
    amount_msat: int
    fee_limit_msat: int
    fee_msat: int | None  # what the agent paid for routing, once succeeded
    preimage: str | None  # proof of payment, once succeeded
    error: str | None
    balance_msat: int
    created_at: float
    updated_at: float


class ModelView(BaseModel):
    id: str
    name: str
    context_length: int | None
    max_completion_tokens: int | None
    prompt_msat_per_mtok: int | None
    completion_msat_per_mtok: int | None
    request_msat: int | None
    variable_price: bool


class ModelList(BaseModel):
    """``GET /v1/models``: OpenAI's list shape, prices at the rate named."""

    object: Literal["list"] = "list"
    data: list[ModelView]
    btc_usd: str
    rate_source: str
    catalog_age_s: int


def parse(model: type[_M], data: Any) -> _M:
    """Validate ``data`` as ``model`` or raise a 400 problem that lists what is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems, fields = [], []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
            fields.append(where)
        raise Problem(
            400, "invalid_request", "; ".join(problems), param=fields[0] if fields else None
        ) from None
