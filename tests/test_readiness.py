"""/readyz answers ready only when a task can be paid: the Lightning backend is checked too."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks._report import free_port
from service.app import create_app
from service.demo.loopback import serve

from .conftest import Emulator, Service


async def test_not_ready_while_lnbits_refuses_connections(
    emulator: Emulator, tmp_path: Path
) -> None:
    from service.config import Settings

    refused = free_port()  # nothing listens there
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/r.db",
        openrouter_base_url=emulator.base_url,
        lnbits_url=f"http://127.0.0.1:{refused}",
        lnbits_invoice_key="an-invoice-key",
        btc_usd="100000",
        catalog_cache=tmp_path / "models.json",
        metrics_port=None,
    )
    runner, url = await serve(create_app(settings))
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            answer = await http.get("/readyz")
    finally:
        await runner.cleanup()
    body = answer.json()
    assert answer.status_code == 503, body
    assert body["ready"] is False
    assert body["checks"]["lightning"].startswith("error: lnbits")
    # The other checks still run and pass: it is Lightning that is missing.
    assert body["checks"]["catalog"].startswith("ok")
    assert body["checks"]["routing"].startswith("ok")


@pytest.mark.lnbits
async def test_ready_with_lnbits_up(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"]["lightning"] == "ok (lnbits)"
