"""Limits on abuse: how often one client address, one credential, and every caller together may
make satrouter mint a Lightning invoice or write a row.

Each request that can do either is sorted into one :class:`Kind` by its route and whether it
carries a credential, and counted against that kind's limits before its handler runs: a request
over a limit gets ``429 rate_limited`` with ``Retry-After`` and has minted nothing, written
nothing and never reached LNbits. The global invoice limit keeps an anonymous flood from any
number of addresses from using up the LNbits rate limit that settlement needs (satrouter is
one client address to its LNbits).

Counting is the ``limits`` library's sliding-window counter (two counters per key, in memory:
each replica counts its own). The client address is the connection's peer;
``X-Forwarded-For`` is believed only when the peer is a configured proxy, read right to left
past the trusted hops, so a client cannot choose its own address.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from .problems import Problem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: All of a request's header names and values together (aiohttp itself refuses a single line
#: over 8,190 bytes before any of this runs).
MAX_HEADER_BYTES = 16 * 1024


class Kind(enum.Enum):
    """What a request may cost satrouter, for counting."""

    INVOICE = "invoice"  # may mint a Lightning invoice (and write its row)
    ACCOUNT = "account"  # creates an account
    WRITE = "write"  # a request with a key or task token: writes rows (reservations, tasks)
    # L402, MPP or x402: writes rows; a fresh offer it ends in is counted as INVOICE then
    L402 = "l402"
    PAYOUT = "payout"  # a withdrawal
    REDEEM = "redeem"  # a Cashu token about to be redeemed (a write and a wallet process)


@dataclass(frozen=True, slots=True)
class Rates:
    """The limits, in the ``limits`` notation (``"60/minute"``); ``"off"`` switches one off.
    The defaults never trouble one well-behaved agent; docs/operator.md says why each."""

    invoices_per_address: str = "60/minute"
    invoices_total: str = "600/minute"
    accounts_per_address: str = "30/hour"
    writes_per_credential: str = "3000/minute"
    payouts_per_credential: str = "60/minute"
    redeems_per_address: str = "30/minute"


def kind_of(request: web.Request) -> Kind | None:
    """The kind of a request, or None for one that neither mints nor writes."""
    if request.method != "POST":
        return None
    path = request.path
    scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
    scheme = scheme.upper() if credential.strip() else ""
    if path == "/v1/accounts":
        return Kind.ACCOUNT
    if path == "/v1/accounts/deposits":
        return Kind.INVOICE
    if path == "/v1/accounts/withdrawals":
        return Kind.PAYOUT
    if path in ("/v1/chat/completions", "/v1/tasks"):
        if path == "/v1/chat/completions" and request.headers.get("X-Cashu", "").strip():
            return Kind.REDEEM  # paid with ecash whatever else it carries: a redeem
        # Only what the handlers take as a credential; anything else is answered like an
        # anonymous request (with an invoice) and is counted as one.
        if scheme == "BEARER":
            return Kind.WRITE  # and a Cashu token it opens a balance with, as a redeem
        # A paid form of a 402's offer (L402, MPP, x402) is counted as L402 is.
        paid = scheme in ("L402", "LSAT", "PAYMENT") or "PAYMENT-SIGNATURE" in request.headers
        return Kind.L402 if paid else Kind.INVOICE
    if path == "/mcp" and scheme == "BEARER":
        return Kind.WRITE  # its tools pay and write as the API's do; without a key, a 401
    return None


def client_address(request: web.Request, trusted: Sequence[Network]) -> str:
    """The caller's address: the peer, or (behind trusted proxies) the nearest untrusted hop
    of ``X-Forwarded-For``."""
    peer = request.remote or "unknown"
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _within(hop, trusted):
            return hop if _is_ip(hop) else peer
    return peer


def counted_address(address: str) -> str:
    """What an address is counted as: an IPv4 address itself, an IPv6 address its /64 (one
    subscriber is commonly given a whole /64, so each of its addresses is one caller)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def credential_key(request: web.Request) -> str:
    """A key for the credential a request presents (its hash: the secret stays out of memory
    kept for counting)."""
    presented = request.headers.get("Authorization", "") + "\n"
    presented += request.headers.get("PAYMENT-SIGNATURE", "")
    return hashlib.sha256(presented.encode()).hexdigest()


class Limiter:
    def __init__(self, rates: Rates, trusted_proxies: Sequence[Network] = ()) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._lock = asyncio.Lock()
        self._trusted = tuple(trusted_proxies)

        def item(rate: str) -> RateLimitItem | None:
            return None if rate == "off" else parse(rate)

        per_address, total = item(rates.invoices_per_address), item(rates.invoices_total)
        accounts = item(rates.accounts_per_address)
        writes, payouts = item(rates.writes_per_credential), item(rates.payouts_per_credential)
        redeems = item(rates.redeems_per_address)
        #: kind -> (limit, what it counts per: "address", "credential" or "all")
        self._rules: dict[Kind, list[tuple[RateLimitItem, str]]] = {
            Kind.INVOICE: [(i, w) for i, w in ((per_address, "address"), (total, "all")) if i],
            Kind.ACCOUNT: [(accounts, "address")] if accounts else [],
            Kind.WRITE: [(writes, "credential")] if writes else [],
            # An L402 request may be re-challenged (credit short, expired, price risen): it is
            # also held to the invoice rate per address, in a bucket of its own.
            Kind.L402: [(i, w) for i, w in ((writes, "credential"), (per_address, "address")) if i],
            Kind.PAYOUT: [(payouts, "credential")] if payouts else [],
            Kind.REDEEM: [(redeems, "address")] if redeems else [],
        }

    def address(self, request: web.Request) -> str:
        return client_address(request, self._trusted)

    async def admit(self, request: web.Request) -> None:
        """Count ``request`` against its limits, or refuse it with a 429 problem. Every limit
        is tested before any is counted, so a refused request uses up nothing."""
        kind = kind_of(request)
        if kind is not None:
            await self._admit_as(kind, request)

    async def admit_invoice(self, request: web.Request) -> None:
        """Count an invoice about to be minted for ``request``, which was admitted as another
        kind (a paid form ending in a fresh offer), against the invoice limits: per address
        and of all callers; a 429 problem if over."""
        await self._admit_as(Kind.INVOICE, request)

    async def admit_redeem(self, request: web.Request) -> None:
        """Count a Cashu token about to be redeemed for ``request`` (whatever credential it
        carries) against the redeem limit of its address; a 429 problem if over."""
        await self._admit_as(Kind.REDEEM, request)

    async def _admit_as(self, kind: Kind, request: web.Request) -> None:
        keyed = [
            (item, kind.value, per, self._who(request, per)) for item, per in self._rules[kind]
        ]
        async with self._lock:  # tested and counted as one step: concurrent requests queue
            await self._count(kind, keyed)

    async def _count(self, kind: Kind, keyed: list[tuple[RateLimitItem, str, str, str]]) -> None:
        for item, *ids in keyed:
            if not await self._limiter.test(item, *ids):
                stats = await self._limiter.get_window_stats(item, *ids)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise Problem(
                    429,
                    "rate_limited",
                    f"too many {kind.value} requests {_from(ids[1])}: at most {item} "
                    f"({ids[1]}); retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                    extra={"limit": str(item), "per": ids[1]},
                )
        for item, *ids in keyed:
            await self._limiter.hit(item, *ids)

    def _who(self, request: web.Request, per: str) -> str:
        if per == "address":
            return counted_address(self.address(request))
        return credential_key(request) if per == "credential" else "all"

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def limit(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            size = sum(len(k) + len(v) for k, v in request.raw_headers)
            if size > MAX_HEADER_BYTES:
                raise Problem(
                    431,
                    "headers_too_large",
                    f"the request's headers take {size} bytes; at most {MAX_HEADER_BYTES}",
                )
            await self.admit(request)
            return await handler(request)

        return limit


def _from(per: str) -> str:
    return {"address": "from this address", "credential": "with this credential"}.get(
        per, "from all callers"
    )


def networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.168.1.7"`` as networks (a ValueError names a bad one)."""
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()
    )
