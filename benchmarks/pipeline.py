"""``make bench-pipeline``: what satrouter's billing adds on top of a bare proxy.

In one process, against the emulator (its own process, zero latency): (a) a raw aiohttp
pass-through proxy with no billing (the floor), (b) satrouter prepaid chat completions,
(c) satrouter L402 requests with an already-paid credential (spending the token's credit), at
concurrency 1, 16 and 128: requests/s, p50/p99 latency and the added latency over the floor,
and the process's peak RSS. Then the time from a settlement push to the upstream request
starting, over 50 tasks, on the real LNbits and on the LND backend against the gRPC stand-in
node the tests use. A real LNbits funds everything.
The fixed fee is 0 here so that one L402 payment covers the whole run; fees do not change the
work done per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from benchmarks._report import Call, emulator_process, machine, measure, percentile, write_section
from service.app import create_app
from service.config import Settings
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.emulator.app import DEFAULT_API_KEY
from service.http.keys import STORE
from service.tasks.engine import EngineConfig, Hooks
from tests.lnd_node import MACAROON, lnd_settings, start_node

MESSAGES = [{"role": "user", "content": "Say something short. [[tokens=16]]"}]
BODY = {"model": "meta-llama/llama-3.1-8b-instruct", "messages": MESSAGES, "max_tokens": 16}


def raw_proxy(upstream: str) -> web.Application:
    """The floor: forward the body to the emulator and the answer back, nothing else."""
    app = web.Application()
    key: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as s:
            app[key] = s
            yield

    async def forward(request: web.Request) -> web.Response:
        async with request.app[key].post(
            upstream + "/chat/completions",
            data=await request.read(),
            headers={
                "Authorization": f"Bearer {DEFAULT_API_KEY}",
                "Content-Type": "application/json",
            },
        ) as response:
            return web.Response(
                body=await response.read(), status=response.status, content_type="application/json"
            )

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", forward)
    return app


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Milliseconds per task: push to upstream request, push to confirmed, paid to request."""

    total: list[float]
    confirm: list[float]
    engine: list[float]

    def row(self, backend: str) -> str:
        def p(values: list[float], q: float) -> str:
            return f"{percentile(values, q):.1f} ms"

        return (
            f"| {backend} | {p(self.total, 50)} | {p(self.total, 99)} | {p(self.confirm, 50)} "
            f"| {p(self.engine, 50)} | {p(self.engine, 99)} |\n"
        )


class Stamps:
    """When each payment's push arrived and each task's upstream call started (the engine's
    metrics hooks, attached when the app is built)."""

    def __init__(self) -> None:
        self.pushed: dict[str, float] = {}
        self.dispatched: dict[str, float] = {}

    def hooks(self) -> Hooks:
        return Hooks(pushed=self._pushed, dispatched=self._dispatched)

    def _pushed(self, payment_hash: str) -> None:
        self.pushed.setdefault(payment_hash, time.time())

    def _dispatched(self, task_id: str) -> None:
        self.dispatched[task_id] = time.time()


async def settlement_to_dispatch(
    http: aiohttp.ClientSession,
    app: web.Application,
    url: str,
    pay: Callable[[dict[str, Any]], Awaitable[None]],
    stamps: Stamps,
    tasks: int = 50,
) -> Dispatch:
    """Create ``tasks`` tasks, pay each, and time each from its push to its upstream call."""
    hashes: dict[str, str] = {}
    for _ in range(tasks):
        async with http.post(url + "/v1/tasks", json={"messages": MESSAGES, "max_tokens": 16}) as r:
            task = await r.json()
        await pay(task)
        hashes[task["id"]] = task["invoice"]["payment_hash"]
        await asyncio.sleep(0.05)
    for _ in range(100):
        if all(t in stamps.dispatched for t in hashes):
            break
        await asyncio.sleep(0.1)
    paid: dict[str, float] = {}
    async with app[STORE].read() as tx:
        for task_id in hashes:
            row = await tx.task(task_id)
            if row is not None and row.data.get("paid_at"):
                paid[task_id] = row.data["paid_at"]
    pushed, dispatched = stamps.pushed, stamps.dispatched
    done = [(t, h) for t, h in hashes.items() if t in dispatched and t in paid and h in pushed]
    return Dispatch(
        [(dispatched[t] - pushed[h]) * 1e3 for t, h in done],
        [(paid[t] - pushed[h]) * 1e3 for t, h in done],
        [(dispatched[t] - paid[t]) * 1e3 for t, h in done],
    )


async def _on_lnd(http: aiohttp.ClientSession, emulator: str, workdir: Path) -> Dispatch:
    """The same measurement on the LND backend, against the gRPC stand-in node."""
    node, _, _ = await start_node(MACAROON)
    settings = Settings(
        database_url=f"sqlite:///{workdir}/lnd.db",
        openrouter_base_url=emulator + "/api/v1",
        openrouter_api_key=DEFAULT_API_KEY,
        **lnd_settings(node, workdir),
        btc_usd="100000",
        catalog_cache=workdir / "models.json",
        limit_invoices_per_address="off",
        limit_invoices_total="off",
        metrics_port=None,
    )
    stamps = Stamps()
    app = create_app(
        settings, engine_config=EngineConfig(generation_deadline=5), engine_hooks=stamps.hooks()
    )
    runner, url = await serve(app, access_log=None)

    async def settle(task: dict[str, Any]) -> None:
        node.settle(task["invoice"]["payment_hash"])

    try:
        return await settlement_to_dispatch(http, app, url, settle, stamps)
    finally:
        await runner.cleanup()
        await node.server.stop(None)


async def run(emulator: str, seconds: float) -> str:
    lnbits = LnbitsServer()
    await asyncio.to_thread(lnbits.start)
    workdir = Path(tempfile.mkdtemp(prefix="satrouter-bench-"))
    runners: list[web.AppRunner] = []
    try:
        wallet, agent = lnbits.create_wallet("satrouter"), lnbits.create_wallet("agent")
        lnbits.fund(agent, 5_000_000)
        settings = Settings(
            database_url=f"sqlite:///{workdir}/bench.db",
            openrouter_base_url=emulator + "/api/v1",
            openrouter_api_key=DEFAULT_API_KEY,
            lnbits_url=lnbits.url,
            lnbits_invoice_key=wallet.inkey,
            lnbits_admin_key=wallet.adminkey,
            btc_usd="100000",
            fee_msat=0,
            metrics_port=None,
            catalog_cache=workdir / "models.json",
            # The pipeline is measured, not the request limits (one key makes every call).
            limit_writes_per_credential="off",
            limit_invoices_per_address="off",
            limit_invoices_total="off",
        )
        stamps = Stamps()
        app = create_app(
            settings,
            engine_config=EngineConfig(generation_deadline=5),
            engine_hooks=stamps.hooks(),
        )
        runner, service = await serve(app, access_log=None)
        runners.append(runner)
        runner, floor = await serve(raw_proxy(emulator + "/api/v1"))
        runners.append(runner)

        def pay(bolt11: str) -> str:
            response = lnbits.pay(agent, bolt11)
            response.raise_for_status()
            status = httpx.get(
                f"{lnbits.url}/api/v1/payments/{response.json()['payment_hash']}",
                headers={"X-Api-Key": agent.adminkey},
            )
            return str(status.json()["preimage"])

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            async with http.post(service + "/v1/accounts") as r:
                key = (await r.json())["api_key"]
            bearer = {"Authorization": f"Bearer {key}"}
            async with http.post(
                service + "/v1/accounts/deposits", json={"amount_sat": 2_000_000}, headers=bearer
            ) as r:
                await asyncio.to_thread(pay, (await r.json())["bolt11"])
            # An L402 token whose credit covers the run: pay for one large request.
            big = json.dumps(
                {"model": "anthropic/claude-opus-4", "messages": MESSAGES, "max_tokens": 32000}
            ).encode()
            async with http.post(
                service + "/v1/chat/completions",
                data=big,
                headers={"Content-Type": "application/json"},
            ) as r:
                challenge = await r.json()
            preimage = await asyncio.to_thread(pay, challenge["invoice"])
            l402 = {
                "Authorization": f"L402 {challenge['macaroon']}:{preimage}",
                "Content-Type": "application/json",
            }
            async with http.post(service + "/v1/chat/completions", data=big, headers=l402) as r:
                assert r.status == 200, await r.text()
            await asyncio.sleep(1)  # let the balance arrive and the first calls reconcile

            body = json.dumps(BODY).encode()

            def poster(url: str, headers: dict[str, str]) -> Call:
                async def call() -> None:
                    async with http.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"{response.status}: {await response.text()}")

                return call

            json_headers = {"Content-Type": "application/json"}
            targets = {
                "raw pass-through (floor)": poster(floor + "/v1/chat/completions", json_headers),
                "satrouter prepaid": poster(
                    service + "/v1/chat/completions", {**bearer, **json_headers}
                ),
                "satrouter L402 (paid credential)": poster(service + "/v1/chat/completions", l402),
            }
            rows = []
            for concurrency in (1, 16, 128):
                floor_p50 = floor_p99 = 0.0
                for name, call in targets.items():
                    rps, latencies = await measure(call, concurrency, seconds)
                    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
                    if name.startswith("raw"):
                        floor_p50, floor_p99, floor_rps = p50, p99, rps
                    rows.append(
                        (
                            name,
                            concurrency,
                            rps,
                            rps / floor_rps,
                            p50,
                            p99,
                            p50 - floor_p50,
                            p99 - floor_p99,
                        )
                    )
                    print(
                        f"{name:34} c={concurrency:<4} {rps:7.0f} req/s p50 {p50:7.2f} ms "
                        f"p99 {p99:7.2f} ms",
                        flush=True,
                    )
                await asyncio.sleep(2)  # let reconciliation catch up between cells

            async def lnbits_pays(task: dict[str, Any]) -> None:
                await asyncio.to_thread(lnbits.pay, agent, task["invoice"]["bolt11"])

            on_lnbits = await settlement_to_dispatch(http, app, service, lnbits_pays, stamps)
            on_lnd = await _on_lnd(http, emulator, workdir)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        await asyncio.to_thread(lnbits.stop)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = [
        "| path | concurrency | req/s | % of floor | p50 ms | p99 ms | added p50 | added p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {c} | {rps:.0f} | {share:.0%} | {p50:.2f} | {p99:.2f} | {a50:+.2f} | "
            f"{a99:+.2f} |"
            for name, c, rps, share, p50, p99, a50, a99 in rows
        ),
    ]
    return (
        "## Paid pipeline: satrouter against a bare proxy\n\n"
        f"`make bench-pipeline` ({machine()}; emulator in its own process at zero latency; "
        f"satrouter, the floor proxy and the load generator in one process; {seconds:g} s per "
        "cell; SQLite; real LNbits for the payments).\n\n" + "\n".join(table) + "\n\n"
        f"Peak RSS of that process: {rss_mb:.0f} MB.\n\n"
        "Settlement to dispatch: the push received -> confirmed by the backend's authenticated "
        "status call -> task paid -> upstream request started, 50 tasks each:\n\n"
        "| backend | push to dispatch p50 | p99 | confirmation p50 | satrouter's part p50 "
        "| p99 |\n|---|---:|---:|---:|---:|---:|\n"
        + on_lnbits.row("LNbits (real, FakeWallet; websocket push, status call)")
        + on_lnd.row("LND (the gRPC stand-in; invoice subscription, LookupInvoice)")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with emulator_process("--generation-delay", "0") as emulator:
        body = asyncio.run(run(emulator, args.seconds))
    print(body)
    if args.write:
        write_section(args.write, "bench-pipeline", body)


if __name__ == "__main__":
    main()
