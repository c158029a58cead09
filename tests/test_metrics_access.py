"""/metrics tells revenue, cost and the OpenRouter balance: never to anyone who asks. Without
a token only the separate (loopback) listener serves them; with one, the main port does too,
behind it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.demo.loopback import serve
from service.metrics import METRICS

from .conftest import METRICS_AUTH, METRICS_TOKEN, Service, offline_settings


async def test_without_a_token_metrics_are_only_on_the_loopback_listener(tmp_path: Path) -> None:
    app = create_app(offline_settings(tmp_path, database_url=f"sqlite:///{tmp_path}/m.db"))
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient() as http:
            public = await http.get(url + "/metrics")
            assert public.status_code == 404
            assert "satrouter_revenue_msat" not in public.text
            listener = app[METRICS].listener_url
            assert listener is not None
            assert listener.startswith("http://127.0.0.1:")
            scraped = await http.get(listener)
            assert scraped.status_code == 200
            assert "satrouter_revenue_msat" in scraped.text
    finally:
        await runner.cleanup()
    assert app[METRICS].listener_url is None  # closed with the app


@pytest.mark.lnbits
async def test_with_a_token_metrics_need_it_on_either_port(service: Service) -> None:
    listener = service.app[METRICS].listener_url
    assert listener is not None
    async with httpx.AsyncClient() as http:
        for where in (service.url + "/metrics", listener):
            assert (await http.get(where)).status_code == 401
            for wrong in ("Bearer", "Bearer nope", f"Basic {METRICS_TOKEN}"):
                refused = await http.get(where, headers={"Authorization": wrong})
                assert refused.status_code == 401, wrong
                assert "satrouter_" not in refused.text
            allowed = await http.get(where, headers=METRICS_AUTH)
            assert allowed.status_code == 200
            assert "satrouter_http_requests_total" in allowed.text
