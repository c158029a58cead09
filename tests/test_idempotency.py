"""Idempotency-Keys belong to the caller that sent them: another caller's same key is a new
task and learns nothing, a replay hands back no credential the caller did not already hold, and
no credential is stored in clear."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing.store import open_store
from billing.store.sqlite import migrations

from .conftest import Service

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"
#: The migration that strips credentials from earlier idempotency records.
SCRUB = next(v for v, sql in migrations() if "Idempotency records" in sql)
BODY = {
    "messages": [{"role": "user", "content": "Summarise the meeting notes. [[tokens=5]]"}],
    "model": CHEAP,
    "max_tokens": 20,
    "callback_url": "http://127.0.0.1:9/hook",
}


def _from(service: Service, address: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (another loopback address is another
    anonymous caller to satrouter)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=service.url, transport=transport)


async def _create(http: httpx.AsyncClient, key: str, **headers: str) -> dict[str, Any]:
    response = await http.post("/v1/tasks", json=BODY, headers={"Idempotency-Key": key, **headers})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_an_anonymous_key_sent_first_by_someone_else_hijacks_nothing(
    service: Service,
) -> None:
    async with _from(service, "127.0.0.2") as attacker, _from(service, "127.0.0.1") as victim:
        planted = await _create(attacker, "order-1")
        mine = await _create(victim, "order-1")
        assert mine["id"] != planted["id"]
        assert mine["task_token"] != planted["task_token"]
        assert mine["callback_secret"] != planted["callback_secret"]
        # The attacker's token does not open the victim's task.
        peek = await attacker.get(
            f"/v1/tasks/{mine['id']}", headers={"Authorization": f"Bearer {planted['task_token']}"}
        )
        assert peek.status_code == 404
        # A different body under the same key from another caller is no conflict: nothing
        # tells the attacker the key is in use.
        other = await attacker.post(
            "/v1/tasks", json={**BODY, "max_tokens": 21}, headers={"Idempotency-Key": "order-2"}
        )
        probe = await victim.post(
            "/v1/tasks", json={**BODY, "max_tokens": 22}, headers={"Idempotency-Key": "order-2"}
        )
        assert other.status_code == probe.status_code == 201
        # The victim's own retry is its own task again, with the same working token.
        again = await _create(victim, "order-1")
        assert again["id"] == mine["id"]
        assert again["task_token"] == mine["task_token"]
        assert again["callback_secret"] == mine["callback_secret"]
        read = await victim.get(
            f"/v1/tasks/{mine['id']}", headers={"Authorization": f"Bearer {again['task_token']}"}
        )
        assert read.status_code == 200


async def test_an_anonymous_key_cannot_spell_an_accounts_key(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 50)
        paid = await _create(http, "k1", **account["auth"])
        spelled = await _create(http, f"{account['id']}|k1")
        assert spelled["id"] != paid["id"]
        assert spelled["callback_secret"] != paid["callback_secret"]
        assert spelled["invoice"] is not None  # anonymous: its own invoice, not the account's


async def test_no_task_token_is_stored_in_clear(service: Service, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        created = await _create(http, "order-9")
        again = await _create(http, "order-9")
    assert again["task_token"] == created["task_token"]
    database = (tmp_path / "satrouter.db").read_bytes()
    wal = tmp_path / "satrouter.db-wal"
    stored = database + (wal.read_bytes() if wal.exists() else b"")
    secret_part = created["task_token"].split(".", 1)[1]
    assert secret_part.encode() not in stored


async def test_records_of_an_earlier_release_lose_their_secrets(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # a database as the release before left it
        for version, sql in migrations():
            if version < SCRUB:
                conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {SCRUB - 1}")
        conn.execute(
            "INSERT INTO kv (key, value) VALUES ('idem:abc', 'task_1|fp|tt_task_1.secret|cbs')"
        )
    store = await open_store(f"sqlite:///{path}")
    async with store.read() as tx:
        assert await tx.get_value("idem:abc") == "task_1|fp"
    await store.close()
