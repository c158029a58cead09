"""``make bench-upstream``: satrouter's OpenRouter client (aiohttp) against an httpx client.

The httpx side does the same work with httpx and httpx-sse (the design card's first choice), so
the table shows what the choice of HTTP library costs. Both talk to the emulator (zero latency,
its own process) over loopback: non-streaming and streaming chat completions at concurrency 1,
16 and 128. Reports requests/s and p50/p99 latency, and writes the table to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from benchmarks._report import Call, emulator_process, machine, measure, percentile, write_section
from service.emulator.app import DEFAULT_API_KEY
from service.upstream.openrouter import OpenRouterClient

BODY = {
    "model": "meta-llama/llama-3.1-8b-instruct",
    "messages": [{"role": "user", "content": "Say something short. [[tokens=16]]"}],
}


async def _measure(call: Call, concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    rps, latencies = await measure(call, concurrency, seconds)
    return rps, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, len(latencies)


async def run(base: str, seconds: float) -> list[tuple[str, str, int, float, float, float, int]]:
    rows = []
    api = base + "/api/v1"
    async with (
        OpenRouterClient(base_url=api, api_key=DEFAULT_API_KEY) as client,
        httpx.AsyncClient(
            headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
        ) as http,
    ):

        async def aiohttp_json() -> None:
            await client.chat(BODY)

        async def aiohttp_stream() -> None:
            async with client.stream_chat(BODY) as stream:
                async for _ in stream:
                    pass

        async def httpx_json() -> None:
            response = await http.post(api + "/chat/completions", json=BODY)
            json.loads(response.content)

        async def httpx_stream() -> None:
            async with aconnect_sse(
                http, "POST", api + "/chat/completions", json={**BODY, "stream": True}
            ) as source:
                async for event in source.aiter_sse():
                    if event.data != "[DONE]":
                        json.loads(event.data)

        calls: dict[tuple[str, str], Call] = {
            ("httpx", "json"): httpx_json,
            ("aiohttp", "json"): aiohttp_json,
            ("httpx", "stream"): httpx_stream,
            ("aiohttp", "stream"): aiohttp_stream,
        }
        for mode in ("json", "stream"):
            for concurrency in (1, 16, 128):
                for lib in ("aiohttp", "httpx"):
                    rps, p50, p99, n = await _measure(calls[(lib, mode)], concurrency, seconds)
                    rows.append((lib, mode, concurrency, rps, p50, p99, n))
                    print(
                        f"{lib:8} {mode:6} c={concurrency:<4} {rps:8.0f} req/s "
                        f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  (n={n})",
                        flush=True,
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with emulator_process() as base:
        rows = asyncio.run(run(base, args.seconds))
    table = [
        "| client | mode | concurrency | req/s | p50 ms | p99 ms | requests |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {lib} | {mode} | {c} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {n} |"
            for lib, mode, c, rps, p50, p99, n in rows
        ),
    ]
    body = (
        "## Upstream client: aiohttp (OpenRouterClient) vs httpx\n\n"
        f"`make bench-upstream` ({machine()}; emulator in its own process, zero latency, "
        f"{args.seconds:g} s per cell, 16-token replies).\n\n" + "\n".join(table)
    )
    if args.write:
        write_section(args.write, "bench-upstream", body)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
