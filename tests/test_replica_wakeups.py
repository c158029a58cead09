"""Replicas that wake each other: every task move is a note on the shared PostgreSQL
(``LISTEN/NOTIFY``), so an event stream open on one replica hears the moves another replica
makes, a task paid while its replica is busy runs at once on another, and a lost listening
connection comes back. The sweeps are set an hour apart here: only a note can explain a
replica hearing of another's work within the tests' bounds. And a completed task is claimed
by one replica (``FOR UPDATE SKIP LOCKED`` and a lease): the others' sweeps leave it alone."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import httpx
import pytest
from aiohttp import web

from billing.store import Store
from billing.store.postgres.notify import APPLICATION
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve

from .conftest import CHEAP, HELLO, Emulator, ServiceProcess, until
from .lnbits_proxy import LnbitsProxy
from .test_callbacks import Receiver
from .test_replicas import StartReplica, _account, cluster

__all__ = ["cluster"]  # the fixture, shared with test_replicas
pytestmark = [pytest.mark.lnbits, pytest.mark.postgresql]

SLOW = {"SATROUTER_SWEEP_SECONDS": "3600"}  # no sweep between start-up and the test's end
BOUND = 30  # seconds a test waits at most for what a note brings (a bound, not a target)
EVERY_STATE = ["paid", "running", "completed", "reconciled"]


class DeafProxy(LnbitsProxy):
    """LNbits without its push socket: the replica behind it creates invoices but never hears
    that one was paid."""

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()


class LookupProxy(LnbitsProxy):
    """LNbits, with the invoice status lookups one replica makes recorded (by payment hash)
    and each slowed a little, so that two sweeps at once would overlap."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.looked_up: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.path.removeprefix("/api/v1/payments/")
        if request.method == "GET" and tail != request.path and len(tail) == 64:
            self.looked_up.append(tail)
            await asyncio.sleep(0.2)
        return await super()._handle(request)


class Tap:
    """A loopback proxy in front of the OpenRouter emulator for one replica: the generation
    ids that replica looked up."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._origin, self._path = f"{parts.scheme}://{parts.netloc}", parts.path
        self.looked_up: set[str] = set()
        self.base_url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Tap:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner, url = await serve(app)
        self.base_url = url + self._path
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if request.path.endswith("/generation"):
            self.looked_up.add(request.query.get("id", ""))
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        async with self._session.request(
            request.method,
            self._origin + request.path_qs,
            data=await request.read(),
            headers=headers,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")},
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


class Stream:
    """A task's event stream on one replica, read in the background: the states it told."""

    def __init__(self, http: httpx.AsyncClient, url: str, auth: dict[str, str]) -> None:
        self.states: list[str] = []
        self._reader = asyncio.create_task(self._read(http, url, auth))

    async def _read(self, http: httpx.AsyncClient, url: str, auth: dict[str, str]) -> None:
        async with http.stream("GET", url, headers=auth) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    self.states.append(line.removeprefix("event: "))
                    if self.states[-1] in ("reconciled", "refunded", "expired"):
                        return

    async def opened(self) -> None:
        async def told() -> bool:
            return bool(self.states)

        await until(told)

    async def ended(self) -> list[str]:
        await asyncio.wait_for(self._reader, BOUND)
        return self.states


async def _state(store: Store, task_id: str) -> str:
    async with store.read() as tx:
        task = await tx.task(task_id)
    assert task is not None
    return task.state


async def _watch_a_task_run_elsewhere(
    http: httpx.AsyncClient, watcher: ServiceProcess, runner: ServiceProcess, store: Store
) -> None:
    """A task created and run on ``runner`` while its stream is open on ``watcher``: the
    stream tells every state, in order."""
    account = await _account(http, runner, store, 10_000_000)
    created = await http.post(
        runner.url + "/v1/tasks",
        json={"messages": HELLO, "model": CHEAP, "max_tokens": 10},
        headers=account["auth"],
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    stream = Stream(http, f"{watcher.url}/v1/tasks/{task_id}/events", account["auth"])
    await stream.opened()
    # the stream was open before the task ended: what follows came while it listened
    assert await _state(store, task_id) in ("paid", "running")
    assert await stream.ended() == EVERY_STATE


async def test_an_event_stream_on_one_replica_tells_a_task_another_runs(
    cluster: tuple[StartReplica, Emulator, Store],
) -> None:
    start, emulator, store = cluster
    emulator.state.config.ttft = 2.0  # the task runs a while: the stream opens meanwhile
    one, two = await start("one", **SLOW), await start("two", **SLOW)
    async with httpx.AsyncClient(timeout=60) as http:
        await _watch_a_task_run_elsewhere(http, one, two, store)
        await _watch_a_task_run_elsewhere(http, two, one, store)


async def test_a_task_paid_while_its_replica_is_busy_runs_at_once_on_another(
    cluster: tuple[StartReplica, Emulator, Store], lnbits: LnbitsServer
) -> None:
    """Replica "busy" runs one task at a time and is running one; replica "deaf" never hears
    of payments. A task created on "deaf" and paid: "busy" notices the settlement and marks
    the task paid, and "deaf", told by the note, runs it while "busy" is still busy."""
    start, emulator, store = cluster
    agent = lnbits.create_wallet("agent-wakeups")
    lnbits.fund(agent, 1_000_000)
    busy = await start("busy", SATROUTER_MAX_CONCURRENT_RUNS="1", **SLOW)
    async with httpx.AsyncClient(timeout=60) as http:
        account = await _account(http, busy, store, 10_000_000)
        emulator.state.config.ttft = 120.0  # longer than the test: "busy" stays busy
        blocker = await http.post(
            busy.url + "/v1/tasks",
            json={"messages": HELLO, "model": CHEAP, "max_tokens": 10},
            headers=account["auth"],
        )
        blocking = blocker.json()["id"]
        await until(lambda: _is(_state(store, blocking), "running"))
        emulator.state.config.ttft = 0.0
        proxy = await DeafProxy(lnbits.url).start()
        try:
            deaf = await start("deaf", LNBITS_URL=proxy.url, **SLOW)
            created = (
                await http.post(
                    deaf.url + "/v1/tasks",
                    json={"messages": HELLO, "model": CHEAP, "max_tokens": 10},
                )
            ).json()
            auth = {"Authorization": f"Bearer {created['task_token']}"}
            stream = Stream(http, f"{deaf.url}/v1/tasks/{created['id']}/events", auth)
            await stream.opened()
            paid = await asyncio.to_thread(lnbits.pay, agent, created["invoice"]["bolt11"])
            assert paid.status_code < 300, paid.text
            assert await stream.ended() == ["awaiting_payment", *EVERY_STATE]
            assert await _state(store, blocking) == "running"  # "busy" could not have run it
        finally:
            await proxy.close()


async def test_replicas_hear_each_other_again_after_their_listeners_are_killed(
    cluster: tuple[StartReplica, Emulator, Store], postgres_url: str
) -> None:
    start, emulator, store = cluster
    emulator.state.config.ttft = 2.0
    one, two = await start("one", **SLOW), await start("two", **SLOW)
    admin = await asyncpg.connect(postgres_url)
    try:

        async def listeners() -> set[int]:
            rows = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION
            )
            return {row["pid"] for row in rows}

        async def both() -> set[int] | None:
            found = await listeners()
            return found if len(found) == 2 else None

        before = await until(both)
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            APPLICATION,
        )
        assert killed == 2

        async def replaced() -> bool:
            found = await listeners()
            return len(found) == 2 and not found & before

        await until(replaced)
        async with httpx.AsyncClient(timeout=60) as http:
            await _watch_a_task_run_elsewhere(http, one, two, store)
            await _watch_a_task_run_elsewhere(http, two, one, store)
    finally:
        await admin.close()


async def test_the_callback_sender_hears_the_moves_of_both_replicas(
    cluster: tuple[StartReplica, Emulator, Store],
) -> None:
    """The sender runs on one replica (a singleton) and its own poll is an hour apart: a task
    on one replica, then one on the other; every callback of each arrives before the next
    task starts, so the sender heard of the task on the replica it does not run on."""
    start, _, store = cluster
    env = {"SATROUTER_CALLBACK_ALLOW_PRIVATE": "true", **SLOW}
    one, two = await start("one", **env), await start("two", **env)
    async with Receiver() as hook, httpx.AsyncClient(timeout=60) as http:
        account = await _account(http, one, store, 10_000_000)
        body = {"messages": HELLO, "model": CHEAP, "max_tokens": 10, "callback_url": hook.url}
        for told, replica in enumerate((one, two), start=1):
            created = await http.post(replica.url + "/v1/tasks", json=body, headers=account["auth"])
            assert created.status_code == 201, created.text

            async def all_told(told: int = told) -> bool:  # paid, running, completed, reconciled
                return len(hook.got) >= 4 * told

            await until(all_told, timeout=BOUND)


async def test_each_completed_task_is_reconciled_by_one_replica(
    cluster: tuple[StartReplica, Emulator, Store],
) -> None:
    """Sweeps every tenth of a second on both replicas while each task's cost takes seconds to
    appear at OpenRouter: the replica that ran a task looks its cost up; the other's sweeps,
    finding it completed, leave it to its claim."""
    start, emulator, store = cluster
    emulator.state.config.generation_delay = 2.0
    fast = {"SATROUTER_SWEEP_SECONDS": "0.1"}
    async with Tap(emulator.base_url) as tap_one, Tap(emulator.base_url) as tap_two:
        one = await start("one", OPENROUTER_BASE_URL=tap_one.base_url, **fast)
        await start("two", OPENROUTER_BASE_URL=tap_two.base_url, **fast)
        async with httpx.AsyncClient(timeout=60) as http:
            account = await _account(http, one, store, 10_000_000)
            ids = []
            for _ in range(3):
                created = await http.post(
                    one.url + "/v1/tasks",
                    json={"messages": HELLO, "model": CHEAP, "max_tokens": 10},
                    headers=account["auth"],
                )
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])

            async def reconciled() -> bool:
                return all([await _is(_state(store, i), "reconciled") for i in ids])

            await until(reconciled, timeout=BOUND)
    assert len(tap_one.looked_up | tap_two.looked_up) == len(ids)
    assert not tap_one.looked_up & tap_two.looked_up  # no cost looked up by both


async def _is(state: Any, *wanted: str) -> bool:
    return await state in wanted


async def test_each_expired_invoice_is_looked_up_by_one_replica(
    cluster: tuple[StartReplica, Emulator, Store], lnbits: LnbitsServer, postgres_url: str
) -> None:
    """Sweeps every tenth of a second on both replicas, each status lookup slow: every invoice
    that ran out unpaid is asked about by the one replica that claimed it, then expired."""
    start, _, store = cluster
    proxies = [await LookupProxy(lnbits.url).start() for _ in range(2)]
    try:
        fast = {"SATROUTER_SWEEP_SECONDS": "0.1"}
        one = await start("one", LNBITS_URL=proxies[0].url, **fast)
        await start("two", LNBITS_URL=proxies[1].url, **fast)
        async with httpx.AsyncClient(timeout=60) as http:
            body = {"messages": HELLO, "model": CHEAP, "max_tokens": 10}
            ids = [
                (await http.post(one.url + "/v1/tasks", json=body)).json()["id"] for _ in "123456"
            ]
        conn = await asyncpg.connect(postgres_url)
        try:
            for proxy in proxies:
                proxy.looked_up.clear()
            # Run out now rather than after the ten minutes an invoice is valid.
            ran_out = await conn.fetch(
                "UPDATE invoices SET expires_at = 1 WHERE status = 'open' RETURNING payment_hash"
            )
        finally:
            await conn.close()
        assert len(ran_out) == len(ids)

        async def expired() -> bool:
            return all([await _is(_state(store, i), "expired") for i in ids])

        await until(expired, timeout=BOUND)
        looked_up = proxies[0].looked_up + proxies[1].looked_up
        assert sorted(looked_up) == sorted(r["payment_hash"] for r in ran_out)  # each once
    finally:
        for proxy in proxies:
            await proxy.close()
