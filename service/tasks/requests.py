"""What the engine is asked: an OpenAI-compatible chat completion request, validated once at
the edge (pydantic, strict: ``"1"`` is not a number and ``0`` is not ``false``) and carried
inward as is. The edge's schema module re-exports these models for the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    @property
    def parts(self) -> list[dict[str, Any]]:
        return self.content if isinstance(self.content, list) else []


class ConsensusSpec(BaseModel):
    """Ask several models and report how far they agree; priced as the sum of the calls."""

    model_config = ConfigDict(extra="forbid", strict=True)

    models: list[ModelName] | None = Field(None, min_length=2, max_length=5)
    tier: str | None = Field(None, min_length=1, max_length=40)
    n: int = Field(3, ge=2, le=5)  # with a tier: its first n models
    threshold: float = Field(0.67, ge=0, le=1)  # flag the task when agreement is lower


class Reasoning(BaseModel):
    """OpenRouter's ``reasoning``: reasoning tokens are billed as completion tokens, so a
    budget must fit inside the request's completion bound (checked when it is priced)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    effort: Literal["minimal", "low", "medium", "high"] | None = None
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    exclude: bool | None = None
    enabled: bool | None = None


#: Fields that add cost satrouter cannot bound before the call, refused with the reason.
REFUSED_FIELDS = {
    "plugins": "plugins are not offered: the web plugin adds search results of no published "
    "size to the prompt, and other engines pass their own prices through, so no quote "
    "can bound them",
    "web_search_options": "built-in web search is priced per search context by each provider "
    "and cannot be quoted",
    "prediction": "predicted outputs bill rejected prediction tokens as completion tokens "
    "beyond max_tokens",
    "modalities": "only text output is offered",
    "audio": "audio output is not offered",
    "service_tier": "service tiers change the provider's price after the quote",
}

#: satrouter's own fields: they shape the quote and never reach OpenRouter.
OWN_FIELDS = frozenset(
    {"max_price_msat", "allow_sensitive_cloud", "consensus", "tier", "callback_url"}
)

_MAX_PRICE_KEYS = frozenset({"prompt", "completion", "request", "image", "audio"})


class ModelParams(BaseModel):
    """What an agent may send about the call itself, the same on ``/v1/chat/completions``,
    ``/v1/tasks`` and ``/v1/quote``, passed to OpenRouter as sent. Anything else is refused
    (a clear 400 naming the field): nothing unpriced reaches OpenRouter."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    model: ModelName | None = None
    models: list[ModelName] | None = Field(None, max_length=MAX_MODELS)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    provider: dict[str, Any] | None = None
    #: One completion per request: ``n`` above 1 would multiply the cost.
    n: int | None = Field(None, ge=1, le=1)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = Field(None, max_length=128)  # legacy tools
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    structured_outputs: bool | None = None
    reasoning: Reasoning | None = None
    include_reasoning: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, ge=0, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    #: Alternatives per token are not billed apart; bounded as OpenAI bounds them.
    top_logprobs: int | None = Field(None, ge=0, le=20)
    verbosity: Literal["low", "medium", "high"] | None = None
    user: str | None = Field(None, max_length=256)
    transforms: list[str] | None = None
    stream_options: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None  # the deprecated {include: true}: no effect
    #: The most the caller will pay for this request; a higher quote is refused, never run.
    max_price_msat: int | None = Field(None, ge=1)
    #: Let a prompt with sensitive content go to cloud models (with zero data retention).
    allow_sensitive_cloud: bool = False
    consensus: ConsensusSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unpriced(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, reason in REFUSED_FIELDS.items():
                if name in data:
                    raise ValueError(f"{name}: {reason}")
        return data

    @field_validator("provider")
    @classmethod
    def _max_price_is_prices(cls, provider: dict[str, Any] | None) -> dict[str, Any] | None:
        limits = (provider or {}).get("max_price")
        if limits is None:
            return provider
        if not isinstance(limits, dict) or not set(limits) <= _MAX_PRICE_KEYS:
            raise ValueError(
                "max_price: an object of " + ", ".join(sorted(_MAX_PRICE_KEYS)) + " (USD)"
            )
        for key, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"max_price.{key}: a number of USD, not negative")
        return provider

    @property
    def completion_limit(self) -> int | None:
        return self.max_tokens or self.max_completion_tokens

    def params(self) -> dict[str, Any]:
        """The fields an agent set, as given (nested models included)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class ChatRequest(ModelParams):
    """An OpenAI-compatible chat completion request (see :class:`ModelParams`)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        # As _needs_a_model says, for clients generated from /openapi.json.
        json_schema_extra={"anyOf": [{"required": [k]} for k in ("model", "models", "consensus")]},
    )

    stream: bool = False

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

    def upstream_body(self) -> dict[str, Any]:
        """The request as OpenRouter gets it: what the agent sent, less satrouter's fields."""
        return self.model_dump(
            exclude_none=True,
            exclude={*OWN_FIELDS, "max_completion_tokens", "stream"},
        )

    def billed_input(self) -> tuple[list[dict[str, Any]], list[Any]]:
        """What the upstream bills as prompt: the messages as sent, and the schemas it renders
        into the prompt (each tool or function definition, the output schema)."""
        messages = [m.model_dump(exclude_none=True) for m in self.messages]
        schemas: list[Any] = [*(self.tools or []), *(self.functions or [])]
        for extra in (self.response_format, self.tool_choice, self.function_call):
            if isinstance(extra, dict):
                schemas.append(extra)
        return messages, schemas
