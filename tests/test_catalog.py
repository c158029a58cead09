"""The model catalog: exact prices, variable prices, TTL, persistence, offline restarts."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.pricing import ModelPrice
from service.emulator.app import load_catalog
from service.upstream.catalog import Catalog, CatalogCache, CatalogUnavailable, parse_model
from service.upstream.errors import TransportError
from service.upstream.openrouter import OpenRouterClient

from .conftest import REAL_CATALOGS


def test_prices_are_exact_decimals() -> None:
    catalog = Catalog.from_response(load_catalog())
    opus = catalog.get("anthropic/claude-opus-4")
    assert opus is not None and opus.price is not None
    assert opus.price.prompt == Decimal("0.000015")
    assert opus.price.completion == Decimal("0.000075")
    assert opus.price.request == 0
    assert opus.max_completion_tokens == 32000


def test_variable_price_is_never_free() -> None:
    auto = parse_model({"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}})
    assert auto.price is None and auto.variable_price
    free = parse_model({"id": "x/free:free", "pricing": {"prompt": "0", "completion": "0"}})
    assert free.price == ModelPrice(Decimal(0), Decimal(0))


def test_missing_or_unreadable_prices_are_unknown_not_zero() -> None:
    assert parse_model({"id": "a/b", "pricing": {"prompt": "0.1"}}).price is None
    assert parse_model({"id": "a/b", "pricing": {"prompt": "x", "completion": "1"}}).price is None
    assert parse_model({"id": "a/b"}).price is None
    with pytest.raises(ValueError, match="id"):
        parse_model({"pricing": {}})


def test_long_prompt_overrides_raise_the_price() -> None:
    catalog = Catalog.from_response(load_catalog())
    pro = catalog.get("google/gemini-2.5-pro")
    assert pro is not None and pro.price is not None
    assert pro.price.token_prices(1000) == (Decimal("0.00000125"), Decimal("0.00001"))
    assert pro.price.token_prices(200_000) == (Decimal("0.0000025"), Decimal("0.000015"))


def test_shipped_catalog_has_about_twenty_models_across_tiers() -> None:
    catalog = Catalog.from_response(load_catalog())
    assert 18 <= len(catalog) <= 30
    priced = [m.price.completion for m in catalog if m.price is not None]
    assert min(priced) == 0 and max(priced) >= Decimal("0.00007")


@pytest.mark.parametrize(
    "name", ["openrouter-models-2025-05.json", "openrouter-models-2026-07.json"]
)
def test_real_openrouter_responses_parse_completely(name: str) -> None:
    path = REAL_CATALOGS / name
    body = json.loads(path.read_text())
    catalog = Catalog.from_response(body)
    assert len(catalog) == len(body["data"])
    assert catalog.skipped == ()
    for entry in body["data"]:
        info = catalog.get(entry["id"])
        assert info is not None
        pricing = entry["pricing"]
        variable = any(str(v).startswith("-") for v in pricing.values() if isinstance(v, str))
        if variable:
            assert info.price is None, entry["id"]
        else:
            assert info.price is not None, entry["id"]
            assert info.price.prompt == Decimal(pricing["prompt"])
            assert info.price.completion == Decimal(pricing["completion"])


class _Upstream:
    def __init__(self, body: Any) -> None:
        self.body = body
        self.calls = 0
        self.down = False

    async def __call__(self) -> Any:
        self.calls += 1
        if self.down:
            raise TransportError("network down")
        return self.body


async def test_cache_honours_ttl(tmp_path: Path) -> None:
    upstream = _Upstream(load_catalog())
    cache = CatalogCache(upstream, path=tmp_path / "models.json", ttl=3600)
    first = await cache.get()
    second = await cache.get()
    assert first is second and upstream.calls == 1
    expiring = CatalogCache(upstream, path=None, ttl=0.01)
    await expiring.get()
    await asyncio.sleep(0.02)
    await expiring.get()
    assert upstream.calls == 3


async def test_restart_offline_uses_the_persisted_catalog_and_shows_its_age(
    tmp_path: Path,
) -> None:
    path = tmp_path / "models.json"
    online = _Upstream(load_catalog())
    await CatalogCache(online, path=path, ttl=3600).get()
    saved = json.loads(path.read_text())
    saved["fetched_at"] -= 7200  # pretend it was fetched two hours ago
    path.write_text(json.dumps(saved))

    offline = _Upstream(None)
    offline.down = True
    cache = CatalogCache(offline, path=path, ttl=3600)
    catalog = await cache.get()
    assert offline.calls == 1  # tried to refresh the stale copy
    assert "openai/gpt-4o" in catalog
    assert 7100 < catalog.age() < 7300
    assert cache.last_error is not None and "network down" in cache.last_error


async def test_no_network_and_no_copy_is_a_clear_error(tmp_path: Path) -> None:
    offline = _Upstream(None)
    offline.down = True
    with pytest.raises(CatalogUnavailable, match="network down"):
        await CatalogCache(offline, path=tmp_path / "none.json", ttl=60).get()


async def test_refresher_fetches_in_the_background(client: OpenRouterClient) -> None:
    cache = CatalogCache(client.models, path=None, ttl=3600)
    worker = asyncio.create_task(cache.run(interval=0.05))
    try:
        for _ in range(100):
            if cache.catalog is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        worker.cancel()
    assert cache.catalog is not None and "openai/gpt-4o" in cache.catalog
