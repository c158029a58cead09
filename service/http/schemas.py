"""Request and response bodies of the public API (pydantic: validated at the edge, and the
source of ``/openapi.json``). Requests are strict: ``"1"`` is not a number and ``0`` is not
``false``, so a money field or a privacy opt-in means exactly what was sent."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from .problems import Problem

_M = TypeVar("_M", bound=BaseModel)

MAX_MESSAGES = 512
MAX_MODELS = 8

#: A model id, an alias, ``auto``, ``cascade`` or ``tier:<name>``: never empty.
ModelName = Annotated[str, Field(min_length=1, max_length=200)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        """The message's words: its content, or the text of its parts (images left out)."""
        if isinstance(self.content, str):
            return self.content
        return " ".join(
            str(part.get("text", "")) for part in self.content or [] if part.get("type") == "text"
        )


class ConsensusSpec(BaseModel):
    """Ask several models and report how far they agree; priced as the sum of the calls."""

    model_config = ConfigDict(extra="forbid", strict=True)

    models: list[ModelName] | None = Field(None, min_length=2, max_length=5)
    tier: str | None = Field(None, min_length=1, max_length=40)
    n: int = Field(3, ge=2, le=5)  # with a tier: its first n models
    threshold: float = Field(0.67, ge=0, le=1)  # flag the task when agreement is lower


class ChatRequest(BaseModel):
    """An OpenAI-compatible chat completion request. Unknown fields are passed to OpenRouter."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        # As _needs_a_model says, for clients generated from /openapi.json.
        json_schema_extra={"anyOf": [{"required": [k]} for k in ("model", "models", "consensus")]},
    )

    model: ModelName | None = None
    models: list[ModelName] | None = Field(None, max_length=MAX_MODELS)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stream: bool = False
    provider: dict[str, Any] | None = None
    #: The most the caller will pay for this request; a higher quote is refused, never run.
    max_price_msat: int | None = Field(None, ge=1)
    #: Let a prompt with sensitive content go to cloud models (with zero data retention).
    allow_sensitive_cloud: bool = False
    consensus: ConsensusSpec | None = None

    @model_validator(mode="after")
    def _needs_a_model(self) -> ChatRequest:
        if not self.model and not self.models and self.consensus is None:
            raise ValueError("set model (or models)")
        return self

    @property
    def chain(self) -> list[str]:
        out: list[str] = []
        for model in [self.model, *(self.models or [])]:
            if model and model not in out:
                out.append(model)
        return out

    @property
    def completion_limit(self) -> int | None:
        return self.max_tokens or self.max_completion_tokens


class TaskRequest(BaseModel):
    """``POST /v1/tasks`` and ``POST /v1/quote``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    model: ModelName | None = None
    models: list[ModelName] | None = Field(None, max_length=MAX_MODELS)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_price_msat: int | None = Field(None, ge=1)
    tier: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$")
    allow_sensitive_cloud: bool = False
    consensus: ConsensusSpec | None = None
    callback_url: HttpUrl | None = None

    def chat(self, default_model: str) -> ChatRequest:
        return ChatRequest(
            model=self.model
            or (f"tier:{self.tier}" if self.tier else None)
            or (None if self.models or self.consensus else default_model),
            models=self.models,
            messages=self.messages,
            max_tokens=self.max_tokens,
            max_price_msat=self.max_price_msat,
            allow_sensitive_cloud=self.allow_sensitive_cloud,
            consensus=self.consensus,
        )


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
    task_token: str
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
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise Problem(400, "invalid_request", "; ".join(problems)) from None
