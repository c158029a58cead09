"""Shared helpers for benchmarks: percentiles, the emulator subprocess, writing docs tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import httpx


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


Call = Callable[[], Awaitable[None]]


async def measure(call: Call, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """Run ``call`` from ``concurrency`` workers for ``seconds``: (requests/s, latencies)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    for _ in range(3):  # warm the connection pools
        await call()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """The emulator in its own process (so it does not share the client's event loop)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "emulator", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/api/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("emulator did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}"
