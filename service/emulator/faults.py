"""Fault injection per model: what the emulator does instead of answering well.

A fault applies to a fraction ``rate`` of the requests for its model (drawn from a seeded RNG,
so a run is repeatable) and, when ``count`` is set, to that many requests only.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultKind = Literal[
    "rate_limit",  # 429 with Retry-After and X-RateLimit-* headers
    "bad_gateway",  # 502: model down
    "unavailable",  # 503: no provider meets the requirements
    "timeout",  # wait `delay` seconds, then 408
    "slow",  # add `delay` seconds before the first token
    "break_stream",  # a stream that drops the connection after `after_tokens` tokens
    "error_chunk",  # a stream that sends an error chunk after `after_tokens` tokens
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    rate: float = 1.0
    count: int | None = None
    retry_after: float = 1.0
    after_tokens: int = 3
    delay: float = 30.0
    #: error_chunk's ``code``: OpenRouter sends integers or strings such as "server_error".
    code: int | str = 502

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if self.count is not None and self.count < 0:
            raise ValueError("count cannot be negative")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultTable:
    """Faults by model id; ``*`` applies to every model without its own."""

    def __init__(self, seed: int = 0) -> None:
        self._faults: dict[str, Fault] = {}
        self._rng = random.Random(seed)

    def set(self, model: str, fault: Fault) -> None:
        self._faults[model] = fault

    def clear(self, model: str | None = None) -> None:
        if model is None:
            self._faults.clear()
        else:
            self._faults.pop(model, None)

    def draw(self, model: str) -> Fault | None:
        """The fault to apply to this request for ``model``, if any (consumes ``count``)."""
        fault = self._faults.get(model) or self._faults.get("*")
        if fault is None or fault.count == 0:
            return None
        if fault.rate < 1.0 and self._rng.random() >= fault.rate:
            return None
        if fault.count is not None:
            fault.count -= 1
        return fault

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {model: fault.as_dict() for model, fault in self._faults.items()}


def parse_fault(spec: str) -> tuple[str, Fault]:
    """``MODEL=KIND[:RATE]`` (the command line form), e.g. ``openai/gpt-4o=rate_limit:0.5``."""
    model, sep, rest = spec.partition("=")
    if not sep or not model or not rest:
        raise ValueError(f"fault {spec!r}: expected MODEL=KIND[:RATE]")
    kind, _, rate = rest.partition(":")
    return model, Fault(kind=kind, rate=float(rate) if rate else 1.0)  # type: ignore[arg-type]
