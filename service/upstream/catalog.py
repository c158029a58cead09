"""The model catalog: OpenRouter's ``/models`` as typed prices, cached and persisted.

Prices are exact ``Decimal`` USD per token (per request for ``request``). A price of ``"-1"``
means *variable* (router models such as ``openrouter/auto``): such a model has no
:class:`~billing.pricing.ModelPrice` and can never be quoted, least of all as free. A missing
``prompt`` or ``completion`` price is unknown and treated the same way; other missing keys are
zero (recent responses leave zero-priced keys out).

:class:`CatalogCache` keeps the last good catalog in memory and on disk, refreshes it when it is
older than its TTL (in the background when run as a worker), and falls back to the persisted copy
when the network is down, so a restart offline still prices requests; ``age`` says how old it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from billing.pricing import ModelPrice, PriceTier

from .errors import UpstreamError

log = logging.getLogger(__name__)


class CatalogUnavailable(Exception):
    """No catalog could be fetched and none was persisted."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model of the catalog."""

    id: str
    name: str
    context_length: int | None
    max_completion_tokens: int | None
    #: None when the model's price is variable or unknown.
    price: ModelPrice | None
    raw_pricing: Mapping[str, Any]

    @property
    def variable_price(self) -> bool:
        return self.price is None


def _decimal(value: Any) -> Decimal | None:
    """A price string as Decimal; None for variable (negative) or unparseable prices."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return amount


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_model(entry: Mapping[str, Any]) -> ModelInfo:
    """Parse one ``/models`` ``data`` entry. Raises ``ValueError`` when it has no usable id."""
    model_id = entry.get("id")
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("model entry without an id")
    pricing = entry.get("pricing")
    pricing = pricing if isinstance(pricing, Mapping) else {}
    top = entry.get("top_provider")
    top = top if isinstance(top, Mapping) else {}
    context_length = _int_or_none(top.get("context_length")) or _int_or_none(
        entry.get("context_length")
    )
    return ModelInfo(
        id=model_id,
        name=str(entry.get("name") or model_id),
        context_length=context_length,
        max_completion_tokens=_int_or_none(top.get("max_completion_tokens")),
        price=_parse_price(pricing),
        raw_pricing=dict(pricing),
    )


def _parse_price(pricing: Mapping[str, Any]) -> ModelPrice | None:
    if "prompt" not in pricing or "completion" not in pricing:
        return None
    prompt = _decimal(pricing["prompt"])
    completion = _decimal(pricing["completion"])
    # Optional components: a missing key is zero; one that is there but variable or
    # unreadable makes the model unpriceable rather than under-priced.
    request, image, reasoning, cache_write = (
        _decimal(pricing.get(key, "0"))
        for key in ("request", "image", "internal_reasoning", "input_cache_write")
    )
    if (
        prompt is None
        or completion is None
        or request is None
        or image is None
        or reasoning is None
        or cache_write is None
    ):
        return None
    tiers: list[PriceTier] = []
    overrides = pricing.get("overrides")
    for override in overrides if isinstance(overrides, list) else []:
        if not isinstance(override, Mapping):
            return None
        threshold = _int_or_none(override.get("min_prompt_tokens"))
        tier_prompt = _decimal(override.get("prompt", pricing["prompt"]))
        tier_completion = _decimal(override.get("completion", pricing["completion"]))
        if threshold is None or tier_prompt is None or tier_completion is None:
            return None  # an override we cannot read: refuse to price rather than under-price
        tiers.append(PriceTier(threshold, tier_prompt, tier_completion))
    return ModelPrice(
        prompt=prompt,
        completion=completion,
        request=request,
        tiers=tuple(tiers),
        image=image,
        reasoning=reasoning,
        cache_write=cache_write,
    )


@dataclass(frozen=True, slots=True)
class Catalog:
    """An immutable snapshot of the model catalog."""

    models: Mapping[str, ModelInfo]
    fetched_at: float  # unix seconds
    skipped: tuple[str, ...] = ()

    @classmethod
    def from_response(cls, body: Any, *, fetched_at: float | None = None) -> Catalog:
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, list):
            raise ValueError("/models response has no data array")
        models: dict[str, ModelInfo] = {}
        skipped: list[str] = []
        for entry in data:
            try:
                info = parse_model(entry if isinstance(entry, Mapping) else {})
            except ValueError:
                skipped.append(repr(entry)[:80])
                continue
            models[info.id] = info
        return cls(models, fetched_at if fetched_at is not None else time.time(), tuple(skipped))

    def get(self, model_id: str) -> ModelInfo | None:
        return self.models.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.models

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def age(self, now: float | None = None) -> float:
        """Seconds since this catalog was fetched from upstream."""
        return max(0.0, (now if now is not None else time.time()) - self.fetched_at)


Fetcher = Callable[[], Awaitable[Any]]


class CatalogCache:
    """The current catalog: fetched with a TTL, persisted to ``path``, last good copy kept."""

    def __init__(self, fetch: Fetcher, *, path: Path | None, ttl: float) -> None:
        self._fetch = fetch
        self._path = path
        self._ttl = ttl
        self._catalog: Catalog | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def catalog(self) -> Catalog | None:
        return self._catalog

    async def get(self) -> Catalog:
        """The catalog, refreshed first if stale. Raises :class:`CatalogUnavailable`."""
        catalog = self._catalog or self._load()
        if catalog is None or catalog.age() >= self._ttl:
            catalog = await self.refresh()
        return catalog

    async def refresh(self) -> Catalog:
        """Fetch now; on failure keep (and return) the last known catalog."""
        async with self._lock:
            try:
                body = await self._fetch()
                catalog = Catalog.from_response(body)
            except (UpstreamError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                known = self._catalog or self._load()
                if known is None:
                    raise CatalogUnavailable(f"no model catalog: {self.last_error}") from exc
                log.warning(
                    "catalog refresh failed, keeping one %.0f s old: %s",
                    known.age(),
                    self.last_error,
                )
                self._catalog = known
                return known
            self.last_error = None
            self._catalog = catalog
            self._save(body, catalog.fetched_at)
            return catalog

    async def run(self, *, interval: float | None = None) -> None:
        """Refresh forever (a background worker). Failures are logged, never raised."""
        interval = interval or self._ttl
        while True:
            with contextlib.suppress(CatalogUnavailable):
                await self.refresh()
            await asyncio.sleep(interval)

    def _load(self) -> Catalog | None:
        if self._path is None or not self._path.is_file():
            return None
        try:
            saved = json.loads(self._path.read_text())
            self._catalog = Catalog.from_response(saved["body"], fetched_at=saved["fetched_at"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable catalog cache %s: %s", self._path, exc)
            return None
        return self._catalog

    def _save(self, body: Any, fetched_at: float) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(self._path.suffix + ".tmp")
        tmp.write_text(json.dumps({"fetched_at": fetched_at, "body": body}, default=str))
        os.replace(tmp, self._path)  # atomic: a crash never leaves half a catalog
