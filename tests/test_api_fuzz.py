"""Requests generated from satrouter's own ``/openapi.json`` (schemathesis) against the real
service: no 5xx, every answer in its documented shape and content type, a 405 naming the allowed
methods, a created task readable where it says; and the books still balance afterwards.

The seed is fixed so that a run is repeatable; run the same command with another seed (or
none) to explore further. Requests the schema allows but satrouter refuses for a reason the
schema cannot state (an unknown tier, an invoice that does not decode) are expected, so that
one check is left out.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Service

pytestmark = pytest.mark.lnbits
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


async def _schemathesis(service: Service, workdir: Path, token: str, paths: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        service.url + "/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--include-path-regex",
        paths,
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "25",
        "--seed",
        "7",
        # One worker: a run with two worker threads once failed inside Hypothesis with CPython
        # 3.11's "AST constructor recursion depth mismatch" (gh-106905, seen in threaded programs).
        "--workers",
        "1",
        cwd=workdir,  # where it keeps its cache
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


async def test_generated_requests_get_documented_answers(
    service: Service, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 500)
    code, output = await _schemathesis(
        service, tmp_path, account["api_key"], "^/(v1|healthz|readyz|openapi|metrics)"
    )
    assert code == 0, output[-6000:]
    code, output = await _schemathesis(service, tmp_path, "admin-secret-for-tests", "^/admin/.")
    assert code == 0, output[-6000:]
    assert (await service.check_ledger()).ok
    # Nothing they sent was an unexpected error on satrouter's side either.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _row_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        # Table names come from the schema itself, not from outside.
        count = 'SELECT count(*) FROM "{}"'
        return {t: con.execute(count.format(t)).fetchone()[0] for t in tables}


def _mutations(macaroon: str, rng: random.Random, count: int) -> list[str]:
    """Every truncation of a genuine macaroon (some end inside a length prefix, where
    pymacaroons raises a bare ``Exception``), then seeded byte flips and insertions."""
    raw = base64.b64decode(macaroon)
    out = [base64.b64encode(raw[:end]).decode() for end in range(1, len(raw))]
    for n in range(count):
        mutated = bytearray(raw)
        at = rng.randrange(len(mutated))
        if n % 2 == 0:
            mutated[at] = rng.randrange(256)
        else:
            mutated[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        out.append(base64.b64encode(bytes(mutated)).decode())
    return out


DEEP = (
    b'{"model": "auto", "messages": [{"role": "user", "content": "hi", "x": '
    + (b"[" * 1000 + b"]" * 1000)
    + b"}]}"
)
HOSTILE_BODIES: list[tuple[bytes, str]] = [
    (DEEP, "json_too_deep"),
    (b"[" * 100_000 + b"]" * 100_000, "json_too_deep"),
    (b'{"a": ' * 65 + b"1" + b"}" * 65, "json_too_deep"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}', "invalid_text"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "a\\udc00b"}]}', "invalid_text"),
    (
        b'{"model": "auto", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        "invalid_text",
    ),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "\xff"}]}', "invalid_text"),
    (b'{"model": "auto", "max_tokens": 1e400, "messages": []}', "number_out_of_range"),
    (b'{"model": "auto", "temperature": -1e400, "messages": []}', "number_out_of_range"),
    (b'{"amount_sat": ' + b"9" * 5000 + b"}", "number_out_of_range"),
    (b'{"amount_sat": 99999999999999999999999, "max_price_msat": 1}', "number_out_of_range"),
    (b'{"model": "auto", "temperature": NaN, "messages": []}', "malformed_json"),
    (b"\xef\xbb\xbf{}", "malformed_json"),
    (b"", "malformed_json"),
    (b"[]", "invalid_request"),
    (b'"hi"', "invalid_request"),
    (b"null", "invalid_request"),
    (b"1", "invalid_request"),
]
JSON_ROUTES = (
    "/v1/chat/completions",
    "/v1/quote",
    "/v1/tasks",
    "/v1/accounts/deposits",
    "/v1/accounts/withdrawals",
)


async def test_hostile_input_is_a_4xx_problem_everywhere_and_changes_nothing(
    service: Service, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What schemathesis does not generate: bodies nested 1,000 deep, lone surrogates, numbers
    beyond any range, bodies that are not objects, wrong content types, huge headers, and
    mutated macaroons in ``Authorization: L402`` (seeded). Every answer is a 4xx problem and no
    row of the database changes."""
    db = tmp_path / "satrouter.db"
    rng = random.Random(12)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        account = await service.funded_account(http, 50)
        challenge = await http.post(
            "/v1/chat/completions",
            json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert challenge.status_code == 402
        macaroon = challenge.json()["macaroon"]
        before = _row_counts(db)
        answers: list[tuple[str, httpx.Response]] = []

        expected: list[tuple[str, str, str]] = []

        async def send(label: str, path: str, **kwargs: Any) -> None:
            answers.append((f"{label} -> {path}", await http.post(path, **kwargs)))

        json_type = {"Content-Type": "application/json"}
        for path in JSON_ROUTES:
            for body, kind in HOSTILE_BODIES:
                for auth in ({}, account["auth"]):
                    await send(kind, path, content=body, headers={**json_type, **auth})
                    if auth:  # with a credential, the body is what is refused
                        got = answers[-1][1].headers.get("Content-Type", "")
                        if got.startswith("application/problem+json"):
                            got = answers[-1][1].json()["type"]
                        expected.append((path, got, kind))
        for path in JSON_ROUTES[1:]:
            for content_type in ("text/plain", "application/x-www-form-urlencoded", "image/png"):
                await send(
                    content_type, path, content=b"a=1", headers={"Content-Type": content_type}
                )
        await send("huge header", "/v1/quote", json={}, headers={"X-Padding": "x" * 100_000})
        await send(
            "many headers", "/v1/quote", json={}, headers={f"X-H{i}": "1" for i in range(500)}
        )
        hello = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        # Header bytes that are not UTF-8 reach handlers as lone surrogates.
        for value in (b"Bearer \xff\xfe", b"Bearer sk-sat-\xed\xa0\x80", b"Bearer tt_\xff.x"):
            for method, path in (
                ("GET", "/v1/accounts/me"),
                ("GET", "/v1/tasks/t1"),
                ("GET", "/admin/status"),
                ("POST", "/v1/chat/completions"),
                ("POST", "/v1/accounts/withdrawals"),
            ):
                answer = await http.request(
                    method, path, json=hello, headers={"Authorization": value}
                )
                answers.append((f"undecodable header -> {path}", answer))
        for mutated in _mutations(macaroon, rng, 100):
            for scheme in ("L402", "LSAT"):
                auth = {"Authorization": f"{scheme} {mutated}:{'0' * 64}"}
                await send("mutated macaroon", "/v1/chat/completions", json=hello, headers=auth)
                answers.append(
                    ("mutated macaroon -> me", await http.get("/v1/accounts/me", headers=auth))
                )
        after = _row_counts(db)
    wrong = [
        f"{label}: {r.status_code} {r.headers.get('Content-Type')} {r.text[:200]}"
        for label, r in answers
        if not 400 <= r.status_code < 500
        or not (
            r.headers.get("Content-Type", "").startswith("application/problem+json")
            # aiohttp's own parser answers an oversized header before any handler runs
            or label.startswith(("huge header", "many headers"))
        )
    ]
    assert wrong == []
    assert [(p, got, kind) for p, got, kind in expected if not got.endswith(":" + kind)] == []
    assert after == before
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
