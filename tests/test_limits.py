"""Limits on abuse: an anonymous flood gets 429s after its bound, mints a bounded number of
invoices, leaves a bounded database behind once unpaid state expires, and never gets in the way
of agents that pay."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from billing import mpp
from service.app import create_app
from service.config import Settings
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.http.keys import SETTINGS
from service.http.limits import client_address, counted_address, networks
from service.tasks.engine import EngineConfig

from .conftest import LIMITS_OFF, Emulator, Service, service_settings

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"
JSON = {"Content-Type": "application/json"}
BODY = {"model": CHEAP, "messages": [{"role": "user", "content": "hi [[tokens=5]]"}]}


async def _guarded(
    lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path, expiry: int
) -> AsyncIterator[Service]:
    wallet = lnbits.create_wallet("satrouter")
    agent = lnbits.create_wallet("agent")
    lnbits.fund(agent, 100_000)
    defaults = {name: Settings.model_fields[name].default for name in LIMITS_OFF}
    settings = service_settings(tmp_path, emulator, lnbits, wallet, unpaid_retention=1, **defaults)
    app = create_app(
        settings, engine_config=EngineConfig(invoice_expiry=expiry, sweep_interval=0.1)
    )
    runner, url = await serve(app)
    yield Service(url, app, emulator, lnbits, agent)
    await runner.cleanup()


@pytest.fixture
async def guarded(
    lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path
) -> AsyncIterator[Service]:
    """satrouter with its default limits."""
    async for service in _guarded(lnbits, emulator, tmp_path, 600):
        yield service


@pytest.fixture
async def short_lived(
    lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path
) -> AsyncIterator[Service]:
    """satrouter whose invoices expire in seconds and whose unpaid state is kept for one."""
    async for service in _guarded(lnbits, emulator, tmp_path, 3):
        yield service


COUNTS = {
    "invoices": "SELECT COUNT(*) FROM invoices",
    # the tokens' root keys (the MPP challenge secret, kept in the same table, is no token's)
    "l402_root_keys": "SELECT COUNT(*) FROM l402_root_keys WHERE id_hash != :mpp_secret",
    "tasks": "SELECT COUNT(*) FROM tasks",
    "outbox": "SELECT COUNT(*) FROM outbox",
}


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(COUNTS[table], {"mpp_secret": mpp.SECRET_ID}).fetchone()[0])


async def _lnbits_invoices(service: Service) -> int:
    """How many invoices satrouter's LNbits wallet has issued."""
    key = service.app[SETTINGS].lnbits_invoice_key
    assert key is not None
    async with httpx.AsyncClient(base_url=service.lnbits.url) as lnbits:
        listed = await lnbits.get(
            "/api/v1/payments",
            params={"limit": 5000},
            headers={"X-Api-Key": key.get_secret_value()},
        )
    assert listed.status_code == 200, listed.text
    return sum(1 for p in listed.json() if p["amount"] > 0)


async def test_an_anonymous_flood_is_bounded_and_paying_agents_go_on(
    guarded: Service, tmp_path: Path
) -> None:
    database = tmp_path / "satrouter.db"
    async with httpx.AsyncClient(
        base_url=guarded.url, limits=httpx.Limits(max_connections=50), timeout=60
    ) as http:
        began = time.time()  # the deposit below counts against the same limit
        account = await guarded.funded_account(http, 50)
        flood = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=BODY) for _ in range(2000))
        )
        ended = time.time()
        statuses = [r.status_code for r in flood]
        # The default: 60 invoices a minute per address, the deposit above among them. The
        # counter's windows are clock minutes; a flood that crosses into the next one is
        # allowed that window's share of another 60 (a sliding window's weighting).
        allowed = 59
        if int(began // 60) != int(ended // 60):
            allowed += math.ceil(60 * (ended % 60) / 60) + 1
        challenged = statuses.count(402)
        # An admitted request whose invoice LNbits was too slow to make (a loaded machine) is
        # a 503 lightning_unavailable: it used its place under the limit all the same.
        slow = [r for r in flood if r.status_code == 503]
        assert all(r.json()["type"].endswith("lightning_unavailable") for r in slow)
        admitted = challenged + len(slow)
        assert 59 <= admitted <= allowed, (challenged, len(slow), began, ended)
        assert statuses.count(429) == 2000 - admitted, collections.Counter(statuses)
        refused = next(r for r in flood if r.status_code == 429)
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("rate_limited")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # LNbits was asked for those invoices and no more: the deposit and the challenges.
        assert 1 + challenged <= await _lnbits_invoices(guarded) <= 1 + admitted
        assert _count(database, "invoices") == 1 + challenged
        # A paying agent with a key is not held back by the flood from its address.
        paid = await http.post("/v1/chat/completions", json=BODY, headers=account["auth"])
        assert paid.status_code == 200, paid.text
    # Another address still gets its challenge, pays it and is served.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=guarded.url, transport=transport) as other:
        body = json.dumps(BODY).encode()
        headers = {"Content-Type": "application/json"}
        challenge = await other.post("/v1/chat/completions", content=body, headers=headers)
        assert challenge.status_code == 402, challenge.text
        problem = challenge.json()
        receipt = await guarded.pay(problem["invoice"])
        auth = {**headers, "Authorization": f"L402 {problem['macaroon']}:{receipt['preimage']}"}
        served = await other.post("/v1/chat/completions", content=body, headers=auth)
        assert served.status_code == 200, served.text
    # The deposit, the challenges and the paid one.
    assert _count(database, "invoices") == 2 + challenged
    assert _count(database, "l402_root_keys") == 1 + challenged
    assert (await guarded.check_ledger()).ok


async def test_unpaid_tasks_and_challenges_expire_and_are_pruned(
    short_lived: Service, tmp_path: Path
) -> None:
    database = tmp_path / "satrouter.db"
    async with httpx.AsyncClient(base_url=short_lived.url) as http:
        account = await short_lived.funded_account(http, 20)
        for _ in range(5):
            assert (await http.post("/v1/tasks", json=BODY)).status_code == 201
            assert (await http.post("/v1/chat/completions", json=BODY)).status_code == 402
            deposit = await http.post(
                "/v1/accounts/deposits", json={"amount_sat": 5}, headers=account["auth"]
            )
            assert deposit.status_code == 201
        for _ in range(300):
            if _count(database, "l402_root_keys") == 0 and _count(database, "tasks") == 0:
                break
            await asyncio.sleep(0.1)
    assert _count(database, "tasks") == 0
    assert _count(database, "outbox") == 0
    assert _count(database, "l402_root_keys") == 0
    with sqlite3.connect(database) as db:
        left = db.execute("SELECT status, COUNT(*) FROM invoices GROUP BY status").fetchall()
    assert dict(left) == {"settled": 1}  # the deposit that was paid
    assert (await short_lived.check_ledger()).ok


def test_forwarded_addresses_are_believed_only_from_trusted_proxies() -> None:
    from aiohttp.test_utils import make_mocked_request

    def request(peer: str, forwarded: str) -> object:
        req = make_mocked_request("POST", "/v1/tasks", headers={"X-Forwarded-For": forwarded})
        return req.clone(remote=peer)

    proxies = networks("10.0.0.0/8, 127.0.0.1")
    assert client_address(request("203.0.113.9", "1.2.3.4"), proxies) == "203.0.113.9"
    assert client_address(request("127.0.0.1", "1.2.3.4, 10.0.0.5"), proxies) == "1.2.3.4"
    assert client_address(request("127.0.0.1", "6.6.6.6, 1.2.3.4"), proxies) == "1.2.3.4"
    assert client_address(request("127.0.0.1", "not-an-ip"), proxies) == "127.0.0.1"
    assert client_address(request("127.0.0.1", "1.2.3.4"), ()) == "127.0.0.1"


def test_an_ipv6_caller_is_counted_by_its_64() -> None:
    """One subscriber commonly holds a whole /64: counted per address, each of its 2^64
    addresses had a limit of its own."""
    assert counted_address("2001:db8:1:2:aaaa::1") == counted_address("2001:db8:1:2:bbbb::9")
    assert counted_address("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert counted_address("2001:db8:1:3::1") != counted_address("2001:db8:1:2::1")
    assert counted_address("::ffff:203.0.113.9") == "203.0.113.9"
    assert counted_address("203.0.113.9") == "203.0.113.9"
    assert counted_address("unknown") == "unknown"


async def test_event_streams_per_task_are_bounded(guarded: Service) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as http:
        task = (await http.post("/v1/tasks", json=BODY)).json()
        auth = {"Authorization": f"Bearer {task['task_token']}"}
        path = f"/v1/tasks/{task['id']}/events"
        async with contextlib.AsyncExitStack() as streams:
            for _ in range(8):  # the default bound per task
                opened = await streams.enter_async_context(http.stream("GET", path, headers=auth))
                assert opened.status_code == 200
            refused = await http.get(path, headers=auth)
            assert refused.status_code == 429
            assert refused.json()["type"].endswith("too_many_listeners")
            assert refused.headers["Retry-After"]
        # Another task's stream is its own.
        other = (await http.post("/v1/tasks", json=BODY)).json()
        mine = {"Authorization": f"Bearer {other['task_token']}"}
        async with http.stream("GET", f"/v1/tasks/{other['id']}/events", headers=mine) as own:
            assert own.status_code == 200


async def test_oversized_headers_are_a_problem(guarded: Service) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        many = {f"X-Pad-{i}": "x" * 4000 for i in range(5)}  # each line within aiohttp's own
        refused = await http.get("/v1/models", headers=many)
    assert refused.status_code == 431
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("headers_too_large")


async def test_an_authorization_header_no_handler_takes_is_counted_as_anonymous(
    lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path
) -> None:
    """A scheme the handlers do not take is answered with a challenge like an anonymous
    request: it was counted per credential (its own header), so varying it minted invoices
    past every invoice limit."""
    wallet = lnbits.create_wallet("satrouter")
    settings = service_settings(
        tmp_path, emulator, lnbits, wallet, limit_invoices_per_address="3/day"
    )
    app = create_app(settings, engine_config=EngineConfig(sweep_interval=0.1))
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            answers = [
                await http.post(
                    "/v1/chat/completions", json=BODY, headers={"Authorization": f"Junk {n}"}
                )
                for n in range(6)
            ]
            empty = await http.post(
                "/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer"}
            )
    finally:
        await runner.cleanup()
    assert [a.status_code for a in answers] == [402, 402, 402, 429, 429, 429]
    assert empty.status_code == 429


async def test_mpp_and_x402_payments_are_not_held_to_the_anonymous_invoice_limit(
    lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path
) -> None:
    """An agent that answers its challenges with MPP or x402 is a paying agent, held to the
    limits of paid credentials (as L402 is), not to the anonymous invoice limit that its own
    unpaid requests have used up: they were counted as anonymous and refused 429 once paid."""
    wallet = lnbits.create_wallet("satrouter")
    agent = lnbits.create_wallet("agent")
    lnbits.fund(agent, 10_000)
    settings = service_settings(
        tmp_path, emulator, lnbits, wallet, limit_invoices_per_address="3/day"
    )
    app = create_app(settings, engine_config=EngineConfig(sweep_interval=0.1))
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            bodies = [json.dumps({**BODY, "max_tokens": 10 + n}).encode() for n in range(4)]
            offered = [
                await http.post("/v1/chat/completions", content=body, headers=JSON)
                for body in bodies
            ]
            assert [o.status_code for o in offered] == [402, 402, 402, 429]
            answered = []
            for body, challenge, scheme in zip(bodies, offered, ("mpp", "x402"), strict=False):
                problem = challenge.json()
                paid = await asyncio.to_thread(lnbits.pay, agent, problem["invoice"])
                assert paid.status_code < 300, paid.text
                preimage = (
                    await asyncio.to_thread(
                        httpx.get,
                        f"{lnbits.url}/api/v1/payments/{paid.json()['payment_hash']}",
                        headers={"X-Api-Key": agent.adminkey},
                    )
                ).json()["preimage"]
                _, payment, required = problem["offers"]
                if scheme == "mpp":
                    echo = {k: payment[k] for k in ("id", "realm", "method", "intent", "request")}
                    token = {"challenge": {**echo, "expires": payment["expires"]}}
                    token["payload"] = {"preimage": preimage}
                    credential = {
                        "Authorization": "Payment " + mpp.b64url(json.dumps(token).encode())
                    }
                else:
                    accepted = required["accepts"][0]
                    signature = {
                        "x402Version": 2,
                        "scheme": "exact",
                        "network": accepted["network"],
                        "accepted": accepted,
                    }
                    signature["payload"] = {"invoice": problem["invoice"]}
                    encoded = base64.b64encode(json.dumps(signature).encode()).decode()
                    credential = {"PAYMENT-SIGNATURE": encoded}
                answered.append(
                    await http.post(
                        "/v1/chat/completions", content=body, headers={**JSON, **credential}
                    )
                )
    finally:
        await runner.cleanup()
    assert [a.status_code for a in answered] == [200, 200], [a.text for a in answered]
