"""BTC/USD sources, each served by a local HTTP server in that source's real format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from billing.rates import (
    FixedRate,
    PriceSource,
    RateOracle,
    RateUnavailable,
    parse_bitstamp,
    parse_coinbase,
    parse_kraken,
)
from service.demo.loopback import serve

COINBASE = {"data": {"amount": "97000.10", "base": "BTC", "currency": "USD"}}
KRAKEN = {
    "error": [],
    "result": {"XXBTZUSD": {"a": ["97010.0", "1", "1.000"], "c": ["97005.30000", "0.00100000"]}},
}
BITSTAMP = {"timestamp": "1732000000", "last": "96990", "bid": "96989", "ask": "96991"}


class PriceServer:
    def __init__(self) -> None:
        self.answers: dict[str, Any] = {
            "coinbase": COINBASE,
            "kraken": KRAKEN,
            "bitstamp": BITSTAMP,
        }
        self.delay: dict[str, float] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await asyncio.sleep(self.delay.get(name, 0))
        answer = self.answers[name]
        if isinstance(answer, int):
            return web.Response(status=answer, text="nope")
        if isinstance(answer, str):
            return web.Response(text=answer, content_type="application/json")
        return web.json_response(answer)

    def sources(self) -> list[PriceSource]:
        parsers = {"coinbase": parse_coinbase, "kraken": parse_kraken, "bitstamp": parse_bitstamp}
        return [PriceSource(n, f"{self.url}/{n}", p) for n, p in parsers.items()]


@pytest.fixture
async def prices() -> AsyncIterator[PriceServer]:
    server = PriceServer()
    app = web.Application()
    app.router.add_get("/{name}", server.handle)
    runner, server.url = await serve(app)
    yield server
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_median_of_three_sources(prices: PriceServer, http: aiohttp.ClientSession) -> None:
    rate = await RateOracle(http, prices.sources()).current()
    assert rate.usd_per_btc == Decimal("97000.10")
    assert rate.source == "median(coinbase,kraken,bitstamp)"
    assert rate.age() < 5


@pytest.mark.parametrize(
    "bad",
    [
        500,
        "not json",
        '{"data": {"amount": "-1"}}',
        '{"data": {"amount": "NaN"}}',
        '{"unexpected": true}',
    ],
)
async def test_bad_answers_are_left_out(
    prices: PriceServer, http: aiohttp.ClientSession, bad: Any
) -> None:
    prices.answers["coinbase"] = bad
    rate = await RateOracle(http, prices.sources()).current()
    # The median of the two that answered.
    assert rate.usd_per_btc == (Decimal("97005.30000") + Decimal("96990")) / 2
    assert rate.source == "median(kraken,bitstamp)"


async def test_kraken_error_array_is_a_failure(
    prices: PriceServer, http: aiohttp.ClientSession
) -> None:
    prices.answers["kraken"] = {"error": ["EQuery:Unknown asset pair"], "result": {}}
    rate = await RateOracle(http, prices.sources()).current()
    assert "kraken" not in rate.source


async def test_slow_source_times_out(prices: PriceServer, http: aiohttp.ClientSession) -> None:
    prices.delay["bitstamp"] = 5
    started = time.monotonic()
    rate = await RateOracle(http, prices.sources(), timeout=0.3).current()
    assert time.monotonic() - started < 2
    assert rate.source == "median(coinbase,kraken)"


async def test_cached_then_refused_when_too_old(
    prices: PriceServer, http: aiohttp.ClientSession
) -> None:
    oracle = RateOracle(http, prices.sources(), refresh=0.05, max_age=0.3)
    first = await oracle.current()
    assert await oracle.current() is first  # cached
    for name in prices.answers:
        prices.answers[name] = 503
    await asyncio.sleep(0.1)
    assert await oracle.current() is first  # stale but within max_age: still used
    await asyncio.sleep(0.3)
    with pytest.raises(RateUnavailable, match="refusing to quote"):
        await oracle.current()


async def test_nothing_ever_answered(http: aiohttp.ClientSession) -> None:
    oracle = RateOracle(http, [PriceSource("x", "http://127.0.0.1:9/", parse_coinbase)])
    with pytest.raises(RateUnavailable, match="never fetched"):
        await oracle.current()


async def test_fixed_rate() -> None:
    rate = await FixedRate(Decimal("95000")).current()
    assert rate.usd_per_btc == Decimal("95000") and rate.source == "fixed"
