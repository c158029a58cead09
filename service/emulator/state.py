"""The emulator's configuration, its state at run time, and the model catalog it serves."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from .faults import FaultTable

DEFAULT_MANAGEMENT_KEY = "sk-or-v1-emulator-management"
DEFAULT_API_KEY = "sk-or-v1-emulator"
LOCAL_MODELS = ("llama3.2:3b", "qwen2.5:7b-instruct")
#: What ``openrouter/auto`` picks in the emulator.
AUTO_PICK = "openai/gpt-4o-mini"
#: OpenRouter's fee on a BYOK request, as a fraction of the provider's cost.
BYOK_FEE = Decimal("0.05")


@dataclass(slots=True)
class EmulatorConfig:
    """Knobs settable at start-up and through ``POST /_emulator/config``."""

    generation_delay: float = 1.0  # seconds /generation answers 404 after a completion
    ttft: float = 0.0  # seconds to first token
    tokens_per_second: float = 0.0  # 0: instant
    credits: Decimal = Decimal("100")  # total_credits, USD
    generation_cost_ratio: Decimal = Decimal(1)  # /generation total_cost = inline cost x this
    #: Answer as a request served with the operator's own provider key: ``usage.cost`` and
    #: ``total_cost`` are only OpenRouter's fee, the provider's cost ``upstream_inference_cost``
    byok: bool = False
    management_key: str = DEFAULT_MANAGEMENT_KEY
    seed: int = 0
    catalog_path: Path | None = None


@dataclass(slots=True)
class Generation:
    ready_at: float
    record: dict[str, Any]


@dataclass(slots=True)
class EmulatorState:
    config: EmulatorConfig
    catalog: dict[str, dict[str, Any]]
    catalog_body: dict[str, Any]
    faults: FaultTable
    usage: Decimal = Decimal(0)
    generations: dict[str, Generation] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    counters: dict[str, int] = field(
        default_factory=lambda: {"completions": 0, "streams_cancelled": 0, "errors": 0}
    )

    @property
    def balance(self) -> Decimal:
        return self.config.credits - self.usage


STATE: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)


def load_catalog(path: Path | None = None) -> dict[str, Any]:
    if path is not None:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    source = resources.files("service.emulator").joinpath("catalog.json")
    return json.loads(source.read_text())  # type: ignore[no-any-return]
