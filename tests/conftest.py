"""Shared fixtures: the OpenRouter emulator on a real loopback port, a client bound to it, and
satrouter itself, in this process (`service`) or as its own `satrouter serve` process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from benchmarks._report import free_port
from billing import ledger
from service.app import create_app as create_service
from service.config import Settings
from service.demo.lnbits import LnbitsServer, Wallet
from service.demo.loopback import serve
from service.emulator.app import (
    DEFAULT_API_KEY,
    DEFAULT_MANAGEMENT_KEY,
    STATE,
    EmulatorConfig,
    EmulatorState,
    create_app,
)
from service.http.keys import STORE
from service.tasks.engine import EngineConfig
from service.upstream.openrouter import OpenRouterClient

# The throwaway PostgreSQL cluster's fixtures (postgres_cluster, postgres_url), for every test
# directory: a sub-directory's conftest may not register plugins.
pytest_plugins = ["tests.postgres"]

#: /models responses OpenRouter really sent (May 2025, July 2026), kept with the tests.
REAL_CATALOGS = Path(__file__).resolve().parent / "fixtures" / "openrouter"
#: The emulator catalog's cheapest chat model.
CHEAP = "meta-llama/llama-3.1-8b-instruct"
#: A short prompt whose reply the emulator makes 10 tokens long.
HELLO = [{"role": "user", "content": "Hello there, agent! [[tokens=10]]"}]


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    """The first truthy value ``predicate`` returns, polled every 0.1 s; fails the test after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def task_until(http: httpx.AsyncClient, task: dict[str, Any], state: str) -> Any:
    """The task's view once it reaches ``state`` (read with its task token)."""
    auth = {"Authorization": f"Bearer {task['task_token']}"}

    async def reached() -> dict[str, Any] | None:
        body = (await http.get(f"/v1/tasks/{task['id']}", headers=auth)).json()
        return body if body["status"] == state else None

    return await until(reached)


def offline_settings(tmp_path: Path, **overrides: str) -> Settings:
    """Settings whose upstreams are unreachable: the admin API only reads the database."""
    defaults: dict[str, Any] = {
        "lnbits_url": "http://127.0.0.1:9",
        "lnbits_invoice_key": "unused",
        "btc_usd": "100000",
        "openrouter_base_url": "http://127.0.0.1:9/api/v1",
        "catalog_cache": tmp_path / "none.json",
        "metrics_port": 0,
    }
    return Settings(**{**defaults, **overrides})


@contextlib.asynccontextmanager
async def offline_service(tmp_path: Path, **overrides: str) -> AsyncIterator[httpx.AsyncClient]:
    """satrouter on loopback with :func:`offline_settings` and a fresh SQLite file, and a client
    bound to it; stopped on leaving."""
    settings = offline_settings(
        tmp_path, **{"database_url": f"sqlite:///{tmp_path}/offline.db", **overrides}
    )
    runner, url = await serve(create_service(settings))
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            yield http
    finally:
        await runner.cleanup()


@dataclass
class Emulator:
    url: str  # http://127.0.0.1:PORT
    app: web.Application

    @property
    def base_url(self) -> str:
        return self.url + "/api/v1"

    @property
    def state(self) -> EmulatorState:
        return self.app[STATE]

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient() as http:
            response = await http.request(method, self.url + "/_emulator" + path, json=body)
            response.raise_for_status()
            return response.json()


async def start_emulator(config: EmulatorConfig | None = None) -> tuple[Emulator, web.AppRunner]:
    app = create_app(config or EmulatorConfig(generation_delay=0.0))
    runner, url = await serve(app, handler_cancellation=True)
    return Emulator(url, app), runner


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu, runner = await start_emulator()
    yield emu
    await runner.cleanup()


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[OpenRouterClient]:
    async with OpenRouterClient(
        base_url=emulator.base_url,
        api_key=DEFAULT_API_KEY,
        management_key=DEFAULT_MANAGEMENT_KEY,
        referer="https://agents.example",
        title="satrouter tests",
        timeout=10,
    ) as c:
        yield c


#: Fixtures that start LNbits (directly or through ``lnbits``).
LNBITS_FIXTURES = frozenset({"lnbits"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse to run a test that starts LNbits without the ``lnbits`` marker, so that
    ``-m "not lnbits"`` skips every LNbits start. Runs before ``-m`` deselects anything."""
    unmarked = [
        item.nodeid
        for item in items
        if LNBITS_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("lnbits") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use LNbits but lack the lnbits marker: " + ", ".join(unmarked)
        )


@pytest.fixture(scope="session")
def lnbits() -> Iterator[LnbitsServer]:
    """A real LNbits server (FakeWallet) for the whole session."""
    server = LnbitsServer()
    server.start()
    yield server
    server.stop()


@dataclass
class Service:
    """satrouter on loopback with a real LNbits, the emulator and a SQLite file."""

    url: str
    app: web.Application
    emulator: Emulator
    lnbits: LnbitsServer
    agent: Wallet

    async def check_ledger(self) -> ledger.LedgerCheck:
        async with self.app[STORE].read() as tx:
            return await ledger.check(tx)

    async def journal_size(self) -> int:
        async with self.app[STORE].read() as tx:
            return (await tx.ledger_totals()).entries

    async def funded_account(self, http: httpx.AsyncClient, sats: int) -> dict[str, Any]:
        """A prepaid account whose deposit of ``sats`` the agent paid and satrouter credited."""
        account = dict((await http.post("/v1/accounts")).json())
        auth = {"Authorization": f"Bearer {account['api_key']}"}
        deposit = (
            await http.post("/v1/accounts/deposits", json={"amount_sat": sats}, headers=auth)
        ).json()
        await self.pay(deposit["bolt11"])
        for _ in range(200):
            me = (await http.get("/v1/accounts/me", headers=auth)).json()
            if me["balance_msat"] == sats * 1000:
                return {**account, "auth": auth}
            await asyncio.sleep(0.05)
        raise AssertionError("the deposit was not credited")

    async def agent_invoice(self, sats: int, memo: str = "withdraw") -> str:
        """A BOLT11 invoice for ``sats`` to the agent's own wallet (for withdrawals)."""
        response = await asyncio.to_thread(
            httpx.post,
            f"{self.lnbits.url}/api/v1/payments",
            json={"out": False, "amount": sats, "memo": memo},
            headers={"X-Api-Key": self.agent.inkey},
        )
        response.raise_for_status()
        return str(response.json()["bolt11"])

    async def pay(self, bolt11: str) -> dict[str, Any]:
        response = await asyncio.to_thread(self.lnbits.pay, self.agent, bolt11)
        assert response.status_code < 300, response.text
        payment_hash = response.json()["payment_hash"]
        status = await asyncio.to_thread(
            httpx.get,
            f"{self.lnbits.url}/api/v1/payments/{payment_hash}",
            headers={"X-Api-Key": self.agent.adminkey},
        )
        return dict(status.json())


METRICS_TOKEN = "metrics-secret-for-tests"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}

#: The request limits switched off.
LIMITS_OFF = {
    name: "off"
    for name in (
        "limit_invoices_per_address",
        "limit_invoices_total",
        "limit_accounts_per_address",
        "limit_writes_per_credential",
        "limit_payouts_per_credential",
        "limit_redeems_per_address",
    )
}


def service_settings(
    tmp_path: Path, emulator: Emulator, lnbits: LnbitsServer, wallet: Wallet, **overrides: Any
) -> Settings:
    """satrouter's settings against the emulator and an LNbits wallet, on a fresh SQLite file."""
    base: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path}/satrouter.db",
        "openrouter_base_url": emulator.base_url,
        "openrouter_api_key": DEFAULT_API_KEY,
        "openrouter_management_key": DEFAULT_MANAGEMENT_KEY,
        "lnbits_url": lnbits.url,
        "lnbits_invoice_key": wallet.inkey,
        "lnbits_admin_key": wallet.adminkey,
        "btc_usd": "100000",
        "catalog_cache": tmp_path / "models.json",
        "admin_token": "admin-secret-for-tests",
        "metrics_token": METRICS_TOKEN,
        "metrics_port": 0,  # the separate loopback listener, on a free port
        "callback_allow_private": True,  # the tests' callback receivers are on loopback
        **LIMITS_OFF,  # tests that count requests; tests/test_limits.py runs the defaults
    }
    return Settings(**{**base, **overrides})


@pytest.fixture
async def service(lnbits: LnbitsServer, tmp_path: Path) -> AsyncIterator[Service]:
    emulator, emulator_runner = await start_emulator(EmulatorConfig(generation_delay=0.2))
    wallet = lnbits.create_wallet("satrouter")
    agent = lnbits.create_wallet("agent")
    lnbits.fund(agent, 1_000_000)
    settings = service_settings(tmp_path, emulator, lnbits, wallet)
    app = create_service(
        settings,
        engine_config=EngineConfig(generation_deadline=3, sweep_interval=0.1, invoice_expiry=60),
    )
    runner, url = await serve(app)
    yield Service(url, app, emulator, lnbits, agent)
    await runner.cleanup()
    await emulator_runner.cleanup()


class ServiceProcess:
    """``satrouter serve`` in its own process, restartable on the same port and database."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "serve",
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                try:
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("satrouter did not start")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


@pytest.fixture
async def service_process(
    lnbits: LnbitsServer, tmp_path: Path
) -> AsyncIterator[tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path]]:
    emulator, runner = await start_emulator(EmulatorConfig(generation_delay=0.1))
    wallet = lnbits.create_wallet("satrouter")
    agent = lnbits.create_wallet("agent")
    lnbits.fund(agent, 1_000_000)
    port = free_port()
    db = tmp_path / "satrouter.db"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SATROUTER_", "OPENROUTER_", "LNBITS_", "LND_"))
    }
    env.update(
        {
            "SATROUTER_DATABASE_URL": f"sqlite:///{db}",
            "SATROUTER_PORT": str(port),
            "SATROUTER_BTC_USD": "100000",
            "SATROUTER_CALLBACK_ALLOW_PRIVATE": "true",
            "SATROUTER_CATALOG_CACHE": str(tmp_path / "models.json"),
            "SATROUTER_METRICS_PORT": "0",
            "OPENROUTER_BASE_URL": emulator.base_url,
            "OPENROUTER_API_KEY": DEFAULT_API_KEY,
            "LNBITS_URL": lnbits.url,
            "LNBITS_INVOICE_KEY": wallet.inkey,
            "LNBITS_ADMIN_KEY": wallet.adminkey,
        }
    )
    server = ServiceProcess(env, port)
    yield server, emulator, lnbits, agent, db
    if server.proc is not None and server.proc.returncode is None:
        await server.kill()
    await runner.cleanup()


async def satrouter_command(
    *args: str, database_url: str | None = None, settings: dict[str, str] | None = None
) -> tuple[int, str]:
    """A ``satrouter`` command in its own process, with none of the environment's own
    satrouter, OpenRouter, LNbits or LND settings but ``settings``: ``(exit code, what it
    printed)``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SATROUTER_", "OPENROUTER_", "LNBITS_", "LND_"))
    }
    if database_url is not None:
        env["SATROUTER_DATABASE_URL"] = database_url
    env |= settings or {}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()
