"""Callbacks: per destination and concurrent (one bad agent stalls nobody else), signed with
Standard Webhooks, sent only for paid tasks, never to private addresses unless allowed, and
never following redirects."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from benchmarks._report import free_port
from billing.store import Store, TaskRow, open_store
from service.app import create_app
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.http.keys import STORE
from service.tasks.callbacks import CallbackSender
from service.tasks.destinations import PublicResolver
from service.tasks.engine import EngineConfig

from .conftest import Emulator, Service, service_settings

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Say hello. [[tokens=5]]"}]


class Receiver:
    """A loopback webhook receiver that records what reached it and when."""

    def __init__(self, delay: float = 0.0, redirect_to: str | None = None) -> None:
        self.delay = delay
        self.redirect_to = redirect_to
        self.got: list[tuple[float, bytes, dict[str, str]]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.got.append((time.time(), body, dict(request.headers)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.redirect_to:
            raise web.HTTPTemporaryRedirect(self.redirect_to)
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner, base = await serve(app, handler_cancellation=True)
        self.url = base + "/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def types(self) -> list[str]:
        return [json.loads(body)["type"] for _, body, _ in self.got]


@pytest.fixture
async def strict(
    lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path
) -> AsyncIterator[Service]:
    """satrouter with callbacks to public addresses only, as it runs on the internet."""
    wallet = lnbits.create_wallet("satrouter")
    agent = lnbits.create_wallet("agent")
    lnbits.fund(agent, 100_000)
    settings = service_settings(tmp_path, emulator, lnbits, wallet, callback_allow_private=False)
    app = create_app(settings, engine_config=EngineConfig(sweep_interval=0.1))
    runner, url = await serve(app)
    yield Service(url, app, emulator, lnbits, agent)
    await runner.cleanup()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0:9/hook",
        "http://224.0.0.1/hook",
        "http://user:secret@93.184.216.34/hook",
        "http://no-such-host.invalid/hook",
    ],
)
async def test_callback_urls_on_private_addresses_are_refused(strict: Service, url: str) -> None:
    async with httpx.AsyncClient(base_url=strict.url) as http:
        refused = await http.post(
            "/v1/tasks", json={"messages": HELLO, "model": CHEAP, "callback_url": url}
        )
    assert refused.status_code == 400, refused.text
    assert refused.json()["type"].endswith("callback_url_refused")
    async with strict.app[STORE].read() as tx:
        assert await tx.count_open_invoices() == 0  # nothing minted, nothing written


async def test_a_public_callback_url_is_accepted(strict: Service) -> None:
    async with httpx.AsyncClient(base_url=strict.url) as http:
        created = await http.post(
            "/v1/tasks",  # left unpaid: nothing is ever sent to it
            json={"messages": HELLO, "model": CHEAP, "callback_url": "https://93.184.216.34/h"},
        )
    assert created.status_code == 201, created.text
    assert created.json()["callback_secret"].startswith("whsec_")


async def _sender_with_one_task(
    tmp_path: Path, url: str, session: aiohttp.ClientSession
) -> tuple[Store, CallbackSender]:
    """A store holding one paid task whose callback_url was accepted earlier, and a sender
    that does not allow private addresses."""
    store = await open_store(f"sqlite:///{tmp_path}/hooks.db")
    now = time.time()
    data = {"callback_url": url, "callback_secret": "whsec_" + "A" * 43 + "="}
    async with store.transaction() as tx:
        await tx.insert_task(TaskRow("task_1", "paid", "task_1", data, now, now))
        await tx.append_event("task.paid", "task_1", {"task": "task_1", "notify": True}, now)
    sender = CallbackSender(
        store, session, lambda t: {"id": t.id}, allow_private=False, retry_delays=(0.05,)
    )
    return store, sender


async def _until_finished(path: Path) -> tuple[str, str | None]:
    """The delivery's end: ``failed`` with its error, or ``delivered`` (its row deleted)."""
    with sqlite3.connect(path) as db:
        for _ in range(200):
            rows = db.execute("SELECT state, error FROM deliveries").fetchall()
            consumed = db.execute("SELECT 1 FROM cursors WHERE consumer = 'callbacks'").fetchall()
            if rows and rows[0][0] != "pending":
                return str(rows[0][0]), rows[0][1]
            if not rows and consumed:
                return "delivered", None
            await asyncio.sleep(0.05)
    raise AssertionError("the delivery did not finish")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_at_connect_time_a_name_that_now_points_inside_reaches_nothing(
    tmp_path: Path, host: str
) -> None:
    async with Receiver() as inside:
        port = inside.url.split(":")[2].split("/")[0]
        url = f"http://{host}:{port}/hook"
        connector = aiohttp.TCPConnector(resolver=PublicResolver())
        async with aiohttp.ClientSession(connector=connector) as session:
            store, sender = await _sender_with_one_task(tmp_path, url, session)
            worker = asyncio.create_task(sender.run())
            state, error = await _until_finished(tmp_path / "hooks.db")
            worker.cancel()
            await store.close()
    assert inside.got == []
    assert state == "failed" and error


async def test_redirects_are_not_followed(service: Service) -> None:
    async with Receiver() as target, Receiver(redirect_to="") as bouncer:
        bouncer.redirect_to = target.url
        async with httpx.AsyncClient(base_url=service.url) as http:
            account = await service.funded_account(http, 20)
            created = await http.post(
                "/v1/tasks",
                json={"messages": HELLO, "model": CHEAP, "callback_url": bouncer.url},
                headers=account["auth"],
            )
            assert created.status_code == 201
            for _ in range(100):
                if len(bouncer.got) >= 2:
                    break
                await asyncio.sleep(0.1)
        assert bouncer.got
        assert target.got == []


async def test_unpaid_tasks_send_nothing(
    lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path
) -> None:
    wallet = lnbits.create_wallet("satrouter")
    settings = service_settings(tmp_path, emulator, lnbits, wallet)
    # Expiry is checked when the invoice comes back: too short a one fails on a busy machine.
    app = create_app(settings, engine_config=EngineConfig(invoice_expiry=3, sweep_interval=0.1))
    runner, url = await serve(app)
    try:
        async with Receiver() as hook, httpx.AsyncClient(base_url=url) as http:
            created = await http.post(
                "/v1/tasks", json={"messages": HELLO, "model": CHEAP, "callback_url": hook.url}
            )
            assert created.status_code == 201, created.text
            task = created.json()
            auth = {"Authorization": f"Bearer {task['task_token']}"}
            for _ in range(300):
                seen = (await http.get(f"/v1/tasks/{task['id']}", headers=auth)).json()
                if seen["status"] == "expired":
                    break
                await asyncio.sleep(0.1)
            assert seen["status"] == "expired"
            await asyncio.sleep(1.5)  # the sender wakes at least once a second
            assert hook.got == []
    finally:
        await runner.cleanup()


async def test_a_dead_and_a_slow_agent_do_not_delay_a_healthy_one(service: Service) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with Receiver(delay=30) as slow, Receiver() as healthy:
        async with httpx.AsyncClient(base_url=service.url) as http:
            account = await service.funded_account(http, 100)

            async def task(callback: str) -> dict[str, Any]:
                created = await http.post(
                    "/v1/tasks",
                    json={"messages": HELLO, "model": CHEAP, "callback_url": callback},
                    headers=account["auth"],
                )
                assert created.status_code == 201, created.text
                return dict(created.json())

            for _ in range(3):
                await task(dead)
                await task(slow.url)
            mine = [await task(healthy.url) for _ in range(3)]
            for _ in range(200):
                if healthy.types().count("task.reconciled") == len(mine):
                    break
                await asyncio.sleep(0.05)
        assert healthy.types().count("task.reconciled") == len(mine)
        async with service.app[STORE].read() as tx:
            created_at = {e.id: e.created_at for t in mine for e in await tx.events_for(t["id"])}
        for arrived, body, headers in healthy.got:
            event_id = json.loads(body)["event_id"]
            assert arrived - created_at[event_id] < 2.0, (event_id, arrived - created_at[event_id])
            secret = next(
                t["callback_secret"] for t in mine if t["id"] == json.loads(body)["task"]["id"]
            )
            assert Webhook(secret).verify(body, headers)["event_id"] == event_id
            assert headers["webhook-id"] == f"msg_{event_id}"
        assert len(slow.got) >= 1  # it was tried, and holds only itself back
