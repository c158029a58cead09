"""BTC/USD rates: the median of several public price sources, cached, with a maximum age.

Quotes convert dollars to sats at a rate, and the rate and its source are stored with every
quote. When no source answered for longer than ``max_age``, :meth:`RateOracle.current` raises
:class:`RateUnavailable`: refusing to quote is better than quoting at a guess. For offline use a
:class:`FixedRate` (``SATROUTER_BTC_USD``) stands in for the oracle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import aiohttp

log = logging.getLogger(__name__)


class RateUnavailable(Exception):
    """No rate recent enough to quote with."""


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per BTC, where it came from, and when (unix seconds)."""

    usd_per_btc: Decimal
    source: str
    at: float

    def age(self, now: float | None = None) -> float:
        return max(0.0, (now if now is not None else time.time()) - self.at)


class RateProvider(Protocol):
    async def current(self) -> Rate: ...


@dataclass(frozen=True, slots=True)
class FixedRate:
    """An operator-set rate: always current, source ``fixed``."""

    usd_per_btc: Decimal

    async def current(self) -> Rate:
        return Rate(self.usd_per_btc, "fixed", time.time())


def _positive(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"not a positive price: {value!r}")
    return amount


def parse_coinbase(body: Any) -> Decimal:
    """``GET /v2/prices/BTC-USD/spot`` -> ``{"data": {"amount": "97000.12", ...}}``."""
    data = body["data"]
    if data.get("base", "BTC") != "BTC" or data.get("currency", "USD") != "USD":
        raise ValueError("not a BTC-USD price")
    return _positive(data["amount"])


def parse_kraken(body: Any) -> Decimal:
    """``GET /0/public/Ticker?pair=XBTUSD`` -> ``{"error": [], "result": {pair: {"c": [last,
    volume], ...}}}``."""
    if body.get("error"):
        raise ValueError(f"kraken error: {body['error']}")
    result = body["result"]
    if len(result) != 1:
        raise ValueError("expected one pair in the result")
    (ticker,) = result.values()
    return _positive(ticker["c"][0])


def parse_bitstamp(body: Any) -> Decimal:
    """``GET /api/v2/ticker/btcusd/`` -> ``{"last": "97000", ...}``."""
    return _positive(body["last"])


@dataclass(frozen=True, slots=True)
class PriceSource:
    name: str
    url: str
    parse: Callable[[Any], Decimal]


DEFAULT_SOURCES: tuple[PriceSource, ...] = (
    PriceSource("coinbase", "https://api.coinbase.com/v2/prices/BTC-USD/spot", parse_coinbase),
    PriceSource("kraken", "https://api.kraken.com/0/public/Ticker?pair=XBTUSD", parse_kraken),
    PriceSource("bitstamp", "https://www.bitstamp.net/api/v2/ticker/btcusd/", parse_bitstamp),
)

PARSERS: Mapping[str, Callable[[Any], Decimal]] = {
    "coinbase": parse_coinbase,
    "kraken": parse_kraken,
    "bitstamp": parse_bitstamp,
}


class RateOracle:
    """The median of the sources that answer, refreshed every ``refresh`` seconds and trusted
    for at most ``max_age`` seconds after the last successful refresh."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        sources: Sequence[PriceSource] = DEFAULT_SOURCES,
        *,
        refresh: float = 60.0,
        max_age: float = 600.0,
        timeout: float = 5.0,
    ) -> None:
        if not sources:
            raise ValueError("a rate oracle needs at least one source")
        self._http = http
        self._sources = tuple(sources)
        self._refresh = refresh
        self._max_age = max_age
        self._timeout = timeout
        self._rate: Rate | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> Rate:
        rate = self._rate
        if rate is not None and rate.age() < self._refresh:
            return rate
        async with self._lock:
            rate = self._rate
            if rate is None or rate.age() >= self._refresh:
                fresh = await self.fetch()
                if fresh is not None:
                    self._rate = rate = fresh
        if rate is None or rate.age() >= self._max_age:
            age = "never fetched" if rate is None else f"last fetched {rate.age():.0f} s ago"
            raise RateUnavailable(
                f"no BTC/USD rate newer than {self._max_age:.0f} s ({age}); refusing to quote"
            )
        return rate

    async def fetch(self) -> Rate | None:
        """Ask every source at once; the median of those that answer, or None."""
        results = await asyncio.gather(*(self._ask(s) for s in self._sources))
        prices = sorted(p for p in results if p is not None)
        if not prices:
            return None
        answered = [s.name for s, p in zip(self._sources, results, strict=True) if p is not None]
        median = statistics.median(prices)
        return Rate(Decimal(median), "median(" + ",".join(answered) + ")", time.time())

    async def _ask(self, source: PriceSource) -> Decimal | None:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with self._http.get(source.url, timeout=timeout) as response:
                response.raise_for_status()
                body = await response.read()
            return source.parse(json.loads(body, parse_float=Decimal))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("rate source %s unreachable: %s", source.name, type(exc).__name__)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("rate source %s answered badly: %s", source.name, exc)
        return None
