"""The operator dashboard in a real headless Chromium (Debian's), against a running server with
real paid tasks: it loads without console errors, shows the same figures as the API, follows
tasks live, and leaves a screenshot in build/screenshots/."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from .conftest import CHEAP, HELLO, Service, task_until

pytestmark = pytest.mark.lnbits
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
# Without the background-networking flags Chromium tries to reach the internet at start.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _sat(msat: int) -> str:
    """The page's number format: en-US grouping, at most three decimals."""
    text = f"{Decimal(msat) / 1000:,.3f}".rstrip("0").rstrip(".")
    return text or "0"


async def test_dashboard_shows_what_the_api_says(service: Service) -> None:
    from playwright.async_api import async_playwright

    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for this test: run `make browser` (as root)")
    auth = {"Authorization": "Bearer admin-secret-for-tests"}
    async with httpx.AsyncClient(base_url=service.url) as http:
        for model in (CHEAP, "openai/gpt-4o-mini"):
            task = (await http.post("/v1/tasks", json={"messages": HELLO, "model": model})).json()
            await service.pay(task["invoice"]["bolt11"])
            await task_until(http, task, "reconciled")
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        total = (
            await http.get(
                "/admin/margins", headers=auth, params={"group_by": "total", "since": today}
            )
        ).json()["rows"][0]
        models = (
            await http.get(
                "/admin/margins", headers=auth, params={"group_by": "model", "since": today}
            )
        ).json()["rows"]
        status = (await http.get("/admin/status", headers=auth)).json()

    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        await page.goto(service.url + "/admin/")
        await page.fill("#token", "admin-secret-for-tests")
        await page.click("button[type=submit]")
        await page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        await page.wait_for_selector("#feed li", timeout=15_000)  # the live feed is flowing

        async def shown(testid: str) -> str:
            return (await page.text_content(f'[data-testid="{testid}"]') or "").strip()

        assert await shown("revenue-sat") == _sat(total["revenue_msat"])
        assert await shown("margin-sat") == _sat(total["margin_msat"])
        assert await shown("margin-pct") == f"{total['margin_pct']} %"
        assert await shown("cost-usd") == f"${total['cost_nusd'] / 1e9:.6f}"
        assert await shown("balance-usd") == f"${float(status['openrouter_balance_usd']):.2f}"
        assert await shown("ledger") == "balanced"
        assert await shown("world") == "match"
        first_model = await page.text_content('[data-testid="models"] tbody tr td')
        assert first_model == models[0]["group"]
        assert await page.locator('[data-testid="models"] tbody tr').count() == len(models)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        await browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == []
