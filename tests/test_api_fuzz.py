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
import logging
import sys
from pathlib import Path

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
    code, output = await _schemathesis(service, tmp_path, "admin-secret", "^/admin/.")
    assert code == 0, output[-6000:]
    assert (await service.check_ledger()).ok
    # Nothing they sent was an unexpected error on satrouter's side either.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
