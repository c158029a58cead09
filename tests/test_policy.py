"""The routing policy: validation with line numbers, chains, aliases, budget step-down, reload."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from billing.budget import Budgets, Cap
from billing.money import NanoUsd
from service.demo.lnbits import LnbitsServer, Wallet
from service.emulator.app import load_catalog
from service.http.keys import ENGINE, STORE
from service.routing.policy import PolicyError, PolicyHolder, builtin, load, parse
from service.tasks.engine import EngineConfig
from service.upstream.catalog import Catalog

from .conftest import HELLO, REAL_CATALOGS, Emulator, Service, ServiceProcess, task_until

CATALOG = Catalog.from_response(load_catalog())
KNOWN = CATALOG.__contains__
ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[tiers]
cheap = ["meta-llama/llama-3.1-8b-instruct"]
smart = ["openai/gpt-4o", "anthropic/claude-sonnet-4"]

[fallback]
smart = "cheap"

[budget]
smart = 0.5

[aliases]
"sonnet" = "anthropic/claude-sonnet-4"
[[aliases.patterns]]
match = "llama-(.*)"
replace = "meta-llama/llama-\\\\1"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tiers]\na = ["openai/gpt-4o"]\nb = ["openai/gpt-4o"\n', "policy: "),
        ('[tiers]\na = ["openai/gpt-4o"]\nb = "nobody/none"\n', ":3: tier 'b' must be a list"),
        ("[tiers]\na = []\n", ":2: tier 'a' is empty"),
        (
            '[tiers]\na = ["openai/gpt-4o"]\nb = ["openai/gpt-4o"]\n[fallback]\na = "b"\nb = "a"\n',
            "fallback cycle: a -> b -> a",
        ),
        ('[tiers]\na = ["openai/gpt-4o"]\n[fallback]\na = "zz"\n', ":4: fallback names tier 'zz'"),
        ('[tiers]\na = ["openai/gpt-4o"]\n[routing]\ndefault_tier = "b"\n', ":4: default_tier"),
        ('[tiers]\na = ["openai/gpt-4o"]\n[budget]\na = 2\n', "from 0 to 1"),
        ("tiers = nope", "policy: "),
        ('[tiers]\na = ["openai/gpt-4o"]\n[classes]\npoetry = "a"\n', ":4: [classes] 'poetry'"),
        ('[tiers]\na = ["openai/gpt-4o"]\n[classes]\ncode = "b"\n', ":4: [classes] 'code' names"),
        ('[tiers]\na = ["openai/gpt-4o"]\n[cascade]\nsteps = ["a"]\n', ":4: [cascade] steps"),
        (
            '[tiers]\na = ["openai/gpt-4o"]\nb = ["openai/gpt-4o"]\n[cascade]\nsteps = ["a", "b"]\n'
            "judge = 7\n",
            ":6: [cascade] judge",
        ),
        # A tier whose models are all gone is disabled, not forgotten: names are still checked.
        (
            '[tiers]\na = ["openai/gpt-4o"]\nb = ["nobody/none"]\n[fallback]\na = "c"\n',
            "fallback names tier 'c'",
        ),
        ('[tiers]\na = ["openai/gpt-4o"]\n[routing]\nlast_resort = "b"\n', ":4: last_resort 'b'"),
        (
            '[tiers]\na = ["openai/gpt-4o"]\n[routing]\nlast_resort = "a"\n',
            ":4: last_resort 'a' runs at the local endpoint; 'openai/gpt-4o' is a cloud model",
        ),
    ],
)
def test_mistakes_are_named_with_their_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse(text, KNOWN)


def _real_catalog(name: str) -> Catalog:
    """A /models response OpenRouter really sent (``tests/fixtures/openrouter/``)."""
    return Catalog.from_response(json.loads((REAL_CATALOGS / name).read_text()))


def test_models_the_catalog_lost_are_dropped_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # OpenRouter's May 2025 catalog did not have google/gemini-2.5-pro yet.
    catalog = _real_catalog("openrouter-models-2025-05.json")
    policy = builtin(catalog.__contains__)
    assert policy.dropped == {"premium": ("google/gemini-2.5-pro",)}
    assert policy.disabled == ()
    assert policy.tiers["premium"] == ("anthropic/claude-sonnet-4", "openai/gpt-4.1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'google/gemini-2.5-pro' is not in the catalog" in warnings[0]
    assert "default_policy.toml:11:" in warnings[0]  # the line it is on


def test_a_catalog_without_any_shipped_model_disables_every_cloud_tier() -> None:
    # By July 2026 none of the shipped policy's cloud models was listed any more.
    policy = builtin(_real_catalog("openrouter-models-2026-07.json").__contains__)
    assert set(policy.disabled) == {"economy", "standard", "premium", "code", "reasoning"}
    assert set(policy.tiers) == {"local"}
    assert policy.serving == ()
    assert policy.cascade is None  # its tiers are gone
    assert policy.names == {}  # both aliases pointed at retired models
    assert len(policy.notes) == 3
    report = policy.degradation()
    assert report["disabled_tiers"] == list(policy.disabled)
    assert report["dropped_models"]["code"] == [
        "qwen/qwen-2.5-coder-32b-instruct",
        "mistralai/codestral-2501",
    ]


def test_disabled_tiers_are_passed_over_by_fallbacks_step_down_and_auto() -> None:
    known = {"openai/gpt-4o", "anthropic/claude-sonnet-4"}
    text = GOOD + '\n[cascade]\nsteps = ["cheap", "smart"]\njudge = "openai/gpt-4.1"\n'
    policy = parse(
        text.replace("[fallback]", '[classes]\nchat = "cheap"\n\n[fallback]'), known.__contains__
    )
    assert policy.disabled == ("cheap",)
    assert policy.chain("smart") == ["openai/gpt-4o", "anthropic/claude-sonnet-4"]
    assert policy.step_down("smart", Decimal("0.4")) is None  # nothing left below smart
    assert policy.step_down("smart", None) == "smart"
    assert policy.usable("cheap") is None
    assert policy.usable("smart") == "smart"
    assert policy.cascade is None
    assert policy.serving == ("smart",)
    # Mistakes in the file still stop the load, even in a tier that lost its models.
    with pytest.raises(PolicyError, match="fallback cycle"):
        parse(
            GOOD.replace('smart = "cheap"', 'smart = "cheap"\ncheap = "smart"'), known.__contains__
        )


def test_chains_aliases_and_step_down() -> None:
    policy = parse(GOOD, KNOWN)
    assert policy.chain("smart") == [
        "openai/gpt-4o",
        "anthropic/claude-sonnet-4",
        "meta-llama/llama-3.1-8b-instruct",
    ]
    assert policy.resolve("sonnet") == "anthropic/claude-sonnet-4"
    assert policy.resolve("llama-3.1-8b-instruct") == "meta-llama/llama-3.1-8b-instruct"
    assert policy.resolve("openai/gpt-4o") == "openai/gpt-4o"
    assert policy.step_down("smart", None) == "smart"
    assert policy.step_down("smart", Decimal("0.6")) == "smart"
    assert policy.step_down("smart", Decimal("0.4")) == "cheap"
    assert policy.step_down("cheap", Decimal("0")) is None


def test_the_shipped_policy_loads_and_the_example_is_a_copy() -> None:
    policy = builtin(KNOWN)
    assert policy.default_tier == "standard"
    assert {"economy", "standard", "premium", "code", "reasoning", "local"} <= set(policy.tiers)
    shipped = (ROOT / "service" / "routing" / "default_policy.toml").read_text()
    assert (ROOT / "deploy" / "policy.example.toml").read_text() == shipped


def test_reload_keeps_the_old_policy_when_the_new_one_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    holder = PolicyHolder(load(path, KNOWN), path, KNOWN)
    path.write_text(GOOD + '\n[classes]\ncode = "nowhere"\n')
    with pytest.raises(PolicyError, match="names tier 'nowhere'"):
        holder.reload()
    assert "smart" in holder.policy.tiers
    path.write_text(GOOD.replace("cheap", "budget"))
    assert "budget" in holder.reload().tiers


@pytest.mark.lnbits
async def test_tier_routed_tasks_record_their_tier_and_step_down(
    service: Service, tmp_path: Path
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    engine = service.app[ENGINE]
    engine.reconfigure(routing=PolicyHolder(load(path, KNOWN), path, KNOWN))
    async with httpx.AsyncClient(base_url=service.url) as http:
        unknown = await http.post("/v1/tasks", json={"messages": HELLO, "tier": "nope"})
        assert unknown.status_code == 400
        assert unknown.json()["type"].endswith("unknown_tier")
        task = (await http.post("/v1/tasks", json={"messages": HELLO, "tier": "smart"})).json()
        await service.pay(task["invoice"]["bolt11"])
        done = await task_until(http, task, "reconciled")
        assert done["model"] == "openai/gpt-4o"
        # Most of the day's budget is gone: "smart" steps down to "cheap".
        engine.reconfigure(
            config=EngineConfig(budgets=Budgets(global_daily=Cap(usd=NanoUsd(10**9))))
        )
        day, _ = engine.config.budgets.periods(time.time())
        async with service.app[STORE].transaction() as tx:
            await tx.add_budget_usage("global", day, 0, 700_000_000)
        cheaper = (await http.post("/v1/tasks", json={"messages": HELLO, "tier": "smart"})).json()
        assert cheaper["model"] == "meta-llama/llama-3.1-8b-instruct"
        margins = (
            await http.get(
                "/admin/margins",
                params={"group_by": "tier"},
                headers={"Authorization": "Bearer admin-secret-for-tests"},
            )
        ).json()
        reloaded = await http.post(
            "/admin/policy/reload", headers={"Authorization": "Bearer admin-secret-for-tests"}
        )
    assert [r["group"] for r in margins["rows"]] == ["smart"]
    assert reloaded.status_code == 200
    assert reloaded.json()["tiers"]["cheap"] == ["meta-llama/llama-3.1-8b-instruct"]
    async with service.app[STORE].read() as tx:
        stored = await tx.task(cheaper["id"])
    assert stored is not None
    assert stored.data["tier"] == "cheap"


@pytest.mark.lnbits
async def test_sighup_reloads_a_running_service_and_keeps_a_good_policy(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path], tmp_path: Path
) -> None:
    server = service_process[0]
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    server.env["SATROUTER_POLICY"] = str(path)
    await server.start()
    assert server.proc is not None
    quote = {"messages": HELLO, "tier": "cheap"}

    async def cheap_model(http: httpx.AsyncClient) -> str:
        response = await http.post("/v1/quote", json=quote)
        assert response.status_code == 200, response.text
        return str(response.json()["model"])

    async with httpx.AsyncClient(base_url=server.url) as http:
        assert await cheap_model(http) == "meta-llama/llama-3.1-8b-instruct"
        path.write_text(
            GOOD.replace("meta-llama/llama-3.1-8b-instruct", "qwen/qwen-2.5-7b-instruct")
        )
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while await cheap_model(http) != "qwen/qwen-2.5-7b-instruct":
            assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
            await asyncio.sleep(0.05)
        # A broken file is refused: the running policy stays, and so does the service.
        path.write_text(GOOD.replace('smart = "cheap"', 'smart = "cheap"\ncheap = "smart"'))
        server.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert server.proc.returncode is None
        assert await cheap_model(http) == "qwen/qwen-2.5-7b-instruct"


def _retire(emulator: Emulator, *models: str) -> None:
    """The emulator's /models without ``models``, as after OpenRouter retired them."""
    state = emulator.state
    state.catalog_body = {
        **state.catalog_body,
        "data": [m for m in state.catalog_body["data"] if m["id"] not in models],
    }
    state.catalog = {m["id"]: m for m in state.catalog_body["data"]}


ECONOMY = (
    "meta-llama/llama-3.1-8b-instruct",
    "qwen/qwen-2.5-7b-instruct",
    "mistralai/mistral-small-3.1-24b-instruct",
)


@pytest.mark.lnbits
async def test_serve_starts_and_serves_when_the_catalog_lost_shipped_models(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path],
) -> None:
    server, emulator, lnbits, agent, _ = service_process
    _retire(emulator, *ECONOMY, "google/gemini-2.5-pro")
    await server.start()  # the shipped policy; this used to exit: tier 'economy': unknown model
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        report = ready.json()
        assert report["checks"]["routing"].startswith("ok (degraded")
        assert report["routing"]["disabled_tiers"] == ["economy"]
        assert report["routing"]["dropped_models"] == {
            "economy": list(ECONOMY),
            "premium": ["google/gemini-2.5-pro"],
        }
        # The disabled tier is refused clearly; the others serve.
        refused = await http.post("/v1/quote", json={"messages": HELLO, "tier": "economy"})
        assert refused.status_code == 503
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert refused.json()["type"] == "urn:satrouter:problem:tier_unavailable"
        assert refused.json()["tier"] == "economy"
        premium = await http.post("/v1/quote", json={"messages": HELLO, "tier": "premium"})
        assert premium.status_code == 200, premium.text
        # "auto" sends a short chat to economy; with economy gone it goes to the default tier.
        task = (await http.post("/v1/tasks", json={"messages": HELLO})).json()
        assert task["tier"] == "standard", task
        paid = await asyncio.to_thread(lnbits.pay, agent, task["invoice"]["bolt11"])
        assert paid.status_code < 300, paid.text
        done = await task_until(http, task, "reconciled")
        assert done["result"]["model"] == "openai/gpt-4o-mini"
        # More retired while running: a reload (admin or SIGHUP) drops them too.
        _retire(emulator, "openai/gpt-4o-mini")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "standard" not in (await http.get("/readyz")).json()["routing"]["dropped_models"]:
            assert time.monotonic() < deadline, "SIGHUP did not reload against the catalog"
            await asyncio.sleep(0.05)
        routing = (await http.get("/readyz")).json()["routing"]
        assert routing["dropped_models"]["standard"] == ["openai/gpt-4o-mini"]
        quote = await http.post("/v1/quote", json={"messages": HELLO, "tier": "standard"})
        assert quote.status_code == 200, quote.text


@pytest.mark.lnbits
async def test_serve_starts_on_a_catalog_with_none_of_the_policy_models(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path],
) -> None:
    server, emulator, *_ = service_process
    # What OpenRouter really listed in July 2026: none of the shipped policy's models.
    body = json.loads((REAL_CATALOGS / "openrouter-models-2026-07.json").read_text())
    emulator.state.catalog_body = body
    emulator.state.catalog = {m["id"]: m for m in body["data"]}
    await server.start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        refused = await http.post("/v1/quote", json={"messages": HELLO, "tier": "standard"})
    assert ready.status_code == 503
    assert ready.json()["checks"]["routing"] == "error: no tier has a model in the catalog"
    assert refused.status_code == 503
    assert refused.json()["type"] == "urn:satrouter:problem:tier_unavailable"
