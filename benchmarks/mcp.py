"""``make bench-mcp``: what a call through ``/mcp`` costs against the same call on the REST API.

satrouter runs as users run it (``satrouter serve``, SQLite, request limits off) against the
emulator (no generation delay), each in its own process; the account is funded by a deposit
entry posted straight into the database (no Lightning payment). For three operations, the REST
request and the MCP ``tools/call`` that makes the same engine call (one POST each: the transport
is stateless, so a client needs no session for it) are sent by 16 callers in a closed loop for a
fixed time: requests/s, p50/p99 latency and satrouter's CPU milliseconds per call (utime +
stime of its process from ``/proc``, read before and after each run, after the last calls have
reconciled). The difference in CPU per call is what the MCP layer (the SDK's JSON-RPC handling,
argument validation, the ASGI bridge) adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from benchmarks._report import emulator_process, free_port, machine, percentile, write_section
from benchmarks.pipeline import BODY
from benchmarks.scale import SETTLE, _fund, _process, _serve_env, cpu_seconds

CONCURRENCY = 16
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass(frozen=True, slots=True)
class Operation:
    label: str
    rest: tuple[str, str, Any]  # method, path, JSON body
    tool: str
    arguments: dict[str, Any]


OPERATIONS = (
    Operation("balance", ("GET", "/v1/accounts/me", None), "get_balance", {}),
    Operation("quote", ("POST", "/v1/quote", BODY), "quote", {"request": BODY}),
    Operation(
        "chat completion",
        ("POST", "/v1/chat/completions", BODY),
        "chat_completion",
        {"request": BODY},
    ),
)


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    via: str
    rps: float
    p50: float
    p99: float
    cpu_ms: float
    errors: int

    def line(self) -> str:
        errors = f" ({self.errors} errors)" if self.errors else ""
        return (
            f"| {self.label} | {self.via}{errors} | {self.rps:,.0f} | {self.p50:.1f} ms "
            f"| {self.p99:.1f} ms | {self.cpu_ms:.2f} |"
        )


Call = Callable[[], Awaitable[bool]]


async def _load(call: Call, seconds: float) -> tuple[int, list[float], int]:
    """(calls made, latencies of those that succeeded, errors)."""
    latencies: list[float] = []
    errors = 0
    for _ in range(3):  # warm the connection pool
        await call()
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < stop:
            started = time.perf_counter()
            if await call():
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(latencies) + errors + 3, latencies, errors


async def _run(url: str, key: str, root: int, seconds: float) -> list[Row]:
    auth = {"Authorization": f"Bearer {key}"}
    rows: list[Row] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for op in OPERATIONS:
            method, path, body = op.rest
            message = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": op.tool, "arguments": op.arguments},
            }

            async def rest(method: str = method, path: str = path, body: Any = body) -> bool:
                async with http.request(method, url + path, json=body, headers=auth) as r:
                    await r.read()
                    return r.status == 200

            async def mcp(message: dict[str, Any] = message) -> bool:
                headers = {**auth, **MCP_HEADERS}
                async with http.post(url + "/mcp", json=message, headers=headers) as r:
                    answer = await r.json()
                    return r.status == 200 and not answer.get("result", {}).get("isError", True)

            for via, call in (("REST", rest), ("MCP", mcp)):
                before = cpu_seconds(root)
                began = time.perf_counter()
                calls, latencies, errors = await _load(call, seconds)
                elapsed = time.perf_counter() - began
                await asyncio.sleep(SETTLE)  # the last calls reconcile
                used = cpu_seconds(root) - before
                rows.append(
                    Row(
                        op.label,
                        via,
                        len(latencies) / elapsed,
                        percentile(latencies, 50) * 1e3,
                        percentile(latencies, 99) * 1e3,
                        used / calls * 1e3,
                        errors,
                    )
                )
                print(rows[-1].line(), file=sys.stderr, flush=True)
    return rows


def run(seconds: float) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="satrouter-mcp-"))
    try:
        return _run_in(workdir, seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in(workdir: Path, seconds: float) -> list[Row]:
    with emulator_process("--generation-delay", "0") as emulator:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        database_url = f"sqlite:///{workdir}/{uuid.uuid4().hex}.db"
        env = _serve_env(database_url, emulator, workdir, port)
        argv = [sys.executable, "-m", "service", "serve"]
        with _process(argv, env, url, "/healthz", workdir / "serve.log") as root:
            account = httpx.post(url + "/v1/accounts", timeout=10).json()
            asyncio.run(_fund(database_url, account["id"]))
            return asyncio.run(_run(url, account["api_key"], root, seconds))


def report(rows: list[Row], seconds: float, load: float) -> str:
    lines = [
        "## MCP: a tool call against the same REST request",
        "",
        f"`make bench-mcp` ({machine()}; satrouter `serve` on SQLite and the emulator in their "
        f"own processes, {CONCURRENCY} callers in a closed loop, {seconds:g} s a run). CPU is "
        "satrouter's process per call. An MCP call is one `POST /mcp` with a JSON-RPC "
        f"`tools/call` (stateless: no session). The machine's load average was {load:.1f} "
        "when the run began: on a shared machine the rates and latencies move from run to "
        "run; CPU per call moves least.",
        "",
        "| operation | via | requests/s | p50 | p99 | CPU ms / call |",
        "|---|---|---:|---:|---:|---:|",
        *(row.line() for row in rows),
        "",
    ]
    by = {(r.label, r.via): r for r in rows}
    added = [
        f"{op.label} {by[(op.label, 'MCP')].cpu_ms - by[(op.label, 'REST')].cpu_ms:+.2f} ms"
        for op in OPERATIONS
    ]
    lines.append("CPU per call added by the MCP layer: " + ", ".join(added) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--write", type=Path, help="replace the bench-mcp section of this file")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = run(args.seconds)
    text = report(rows, args.seconds, load)
    print(text)
    if args.write:
        write_section(args.write, "bench-mcp", text)


if __name__ == "__main__":
    main()
