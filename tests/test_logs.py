"""Logs: JSON lines with the request id (echoed as X-Request-Id), task, payer, status and cost;
and not one secret in them after a whole paid flow logged at DEBUG."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from service import logs
from service.demo.loopback import serve
from service.emulator.app import DEFAULT_API_KEY, DEFAULT_MANAGEMENT_KEY
from service.http.keys import SETTINGS

from .conftest import (
    CHEAP,
    HELLO,
    METRICS_AUTH,
    METRICS_TOKEN,
    Service,
    offline_service,
    task_until,
    until,
)

ADMIN_TOKEN = "admin-secret-for-tests"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of every logger, at DEBUG, as the JSON lines the service would write."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logs.quiet_header_loggers()  # as configure() does
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


@pytest.mark.lnbits
async def test_a_paid_flow_at_debug_logs_ids_and_no_secret(
    service: Service, captured: io.StringIO
) -> None:
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner, base = await serve(receiver)
    secrets: dict[str, str] = {}
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            # A prepaid key: deposit, a chat completion, a withdrawal.
            account = await service.funded_account(http, 2_000)
            secrets["api key"] = account["api_key"]
            chat = await http.post(
                "/v1/chat/completions",
                json={"model": CHEAP, "messages": HELLO, "max_tokens": 20},
                headers={**account["auth"], "X-Request-Id": "req-from-the-agent-1"},
            )
            assert chat.status_code == 200, chat.text
            assert chat.headers["X-Request-Id"] == "req-from-the-agent-1"
            invoice = await service.agent_invoice(100)
            withdrawal = await http.post(
                "/v1/accounts/withdrawals",
                headers=account["auth"],
                json={"invoice": invoice},
            )
            assert withdrawal.status_code == 200, withdrawal.text

            # A task paid by invoice, with a signed callback, read with its task token.
            task = (
                await http.post(
                    "/v1/tasks",
                    json={"messages": HELLO, "model": CHEAP, "callback_url": base + "/hook"},
                )
            ).json()
            secrets["task token"] = task["task_token"].split(".", 1)[1]
            secrets["callback secret"] = task["callback_secret"]
            paid = await service.pay(task["invoice"]["bolt11"])
            secrets["task preimage"] = paid["preimage"]
            await task_until(http, task, "reconciled")

            # L402: the challenge, the payment, the paid retry.
            body = {"model": CHEAP, "messages": HELLO, "max_tokens": 20}
            challenge = (await http.post("/v1/chat/completions", json=body)).json()
            l402 = await service.pay(challenge["invoice"])
            secrets["macaroon"] = challenge["macaroon"]
            secrets["l402 preimage"] = l402["preimage"]
            answer = await http.post(
                "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"L402 {challenge['macaroon']}:{l402['preimage']}"},
            )
            assert answer.status_code == 200, answer.text

            # The operator's side, and a wrong admin token.
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            assert (await http.get("/admin/status", headers=admin)).status_code == 200
            assert (await http.get("/metrics", headers=METRICS_AUTH)).status_code == 200
            wrong = "Bearer a-wrong-admin-token-000"
            assert (
                await http.get("/admin/status", headers={"Authorization": wrong})
            ).status_code == 401
            await until(lambda: asyncio.sleep(0, result=bool(received)), timeout=30)
    finally:
        await runner.cleanup()

    settings = service.app[SETTINGS]
    secrets.update(
        {
            "admin token": ADMIN_TOKEN,
            "wrong admin token": "a-wrong-admin-token-000",
            "metrics token": METRICS_TOKEN,
            "service invoice key": settings.lnbits_invoice_key.get_secret_value(),  # type: ignore[union-attr]
            "service admin key": settings.lnbits_admin_key.get_secret_value(),  # type: ignore[union-attr]
            "agent invoice key": service.agent.inkey,
            "agent admin key": service.agent.adminkey,
            "openrouter key": DEFAULT_API_KEY,
            "openrouter management key": DEFAULT_MANAGEMENT_KEY,
        }
    )
    text = captured.getvalue()
    lines = _lines(captured)
    assert len(lines) > 50  # DEBUG really was on
    assert logging.getLogger("service").isEnabledFor(logging.DEBUG)
    for name, secret in secrets.items():
        assert secret
        leaks = [line for line in text.splitlines() if secret in line]
        assert not leaks, f"the {name} is in the logs: {leaks[0][:300]}"

    # Every request's line names its request id; the agent's own id is kept.
    requests = [line for line in lines if line["logger"] == "satrouter.access"]
    assert requests
    assert all(line.get("request_id") and "status" in line for line in requests)
    mine = [line for line in requests if line["request_id"] == "req-from-the-agent-1"]
    assert [line["status"] for line in mine] == [200]
    assert account["id"] in mine[0]["payer_id"]
    # The reconciliation names the task, its payer and what it cost.
    reconciled = [
        line for line in lines if line.get("task_id") == task["id"] and "cost_nusd" in line
    ]
    assert reconciled
    assert reconciled[0]["payer_id"] == task["id"]
    assert reconciled[0]["cost_nusd"] > 0
    assert {line["request_id"] for line in requests} >= {"req-from-the-agent-1"}


async def test_request_ids_are_kept_when_sane_and_made_otherwise(
    tmp_path: Path, captured: io.StringIO
) -> None:
    async with offline_service(tmp_path) as http:
        kept = await http.get("/healthz", headers={"X-Request-Id": "abc-123_x.y:z"})
        made = await http.get("/healthz")
        too_long = await http.get("/healthz", headers={"X-Request-Id": "a" * 129})
        odd = await http.get("/nowhere", headers={"X-Request-Id": "<script>"})
    assert kept.headers["X-Request-Id"] == "abc-123_x.y:z"
    ids = [r.headers["X-Request-Id"] for r in (made, too_long, odd)]
    assert all(len(i) == 32 for i in ids)
    assert len(set(ids)) == 3
    access = {
        line["request_id"]: line
        for line in _lines(captured)
        if line["logger"] == "satrouter.access"
    }
    assert access["abc-123_x.y:z"]["status"] == 200
    assert access[ids[2]]["status"] == 404


def test_the_command_logs_json_lines_when_asked(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "service", "audit", "verify"],
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "SATROUTER_DATABASE_URL": f"sqlite:///{tmp_path}/c.db",
            "SATROUTER_LOG_FORMAT": "json",
            "LNBITS_DATA_FOLDER": "./data",  # LNbits' own, from a shared env file
        },
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["message"] for line in lines] == [
        "ignoring LNBITS_DATA_FOLDER: another program's variable, not a satrouter setting"
    ]
    assert lines[0]["level"] == "WARNING"
