"""``make bench-privacy``: the privacy scan on 1 MiB request bodies built to make it work hard.

For each body (validated as the HTTP layer does before routing): the scan's total time, and how
long the event loop waited meanwhile (a coroutine that wakes on every turn of the loop records
the gaps between its turns). Writes the ``bench-privacy`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._report import machine, percentile, write_section
from service.http.schemas import ChatRequest
from service.routing import privacy, sensitive
from service.routing.privacy import Detector

MIB = 2**20


def _luhn_digit(body: str) -> str:
    total = sum(
        d if i % 2 else (d * 2 - 9 if d > 4 else d * 2)
        for i, d in enumerate(int(c) for c in reversed(body + "0"))
    )
    return str(-total % 10)


def _fill(make: Callable[[random.Random], str], sep: str = " ") -> str:
    rng = random.Random(1)
    parts: list[str] = []
    size = 0
    while size < MIB - 64:
        part = make(rng)
        parts.append(part)
        size += len(part) + len(sep)
    return sep.join(parts)[: MIB - 64]


def _card_like(rng: random.Random) -> str:
    body = "9" + "".join(rng.choice("0123456789") for _ in range(14))  # no network: all checked
    return body + _luhn_digit(body)


def _visa(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    return body + _luhn_digit(body)


def _chat(text: str) -> dict[str, Any]:
    return {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def bodies() -> dict[str, dict[str, Any]]:
    words = sensitive._bip39()[0].wordlist
    prose = (
        "The quarterly report shows revenue up 12 % on 2024-01-15, with 1,204 orders shipped "
        "from the warehouse at 10:30 and invoice INV-2024-000123 still open. "
    )
    return {
        "distinct card-like numbers (Luhn-valid, no card network)": _chat(_fill(_card_like)),
        "distinct Luhn-valid Visa numbers (the old 14 s case)": _chat(
            _fill(
                lambda r: (
                    (b := "4" + "".join(r.choice("0123456789") for _ in range(14))) + _luhn_digit(b)
                )
            )
        ),
        "international phone-like numbers, none valid": _chat(
            _fill(lambda r: f"+999 {r.randrange(10**8):08d}")
        ),
        "'call' before each national-format number": _chat(
            _fill(lambda r: f"call 0{r.randrange(10**9):09d}")
        ),
        "BIP-39 words, no valid checksum in reach": _chat(_fill(lambda r: r.choice(words))),
        "IBAN-shaped strings failing mod 97": _chat(
            _fill(lambda r: "DE00" + "".join(r.choice("0123456789") for _ in range(18)))
        ),
        "e-mail-like local parts without domains": _chat(
            _fill(lambda r: f"user{r.randrange(10**6)}@")
        ),
        "ordinary prose with dates and numbers": _chat((prose * (MIB // len(prose)))[: MIB - 64]),
        "60,000 content parts (the walk over the JSON)": {
            "model": "openai/gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": f"p{n:05d}"} for n in range(60_000)],
                }
            ],
        },
    }


async def _measure(
    body: dict[str, Any],
) -> tuple[float, list[float], list[float], list[str]]:
    request = ChatRequest.model_validate(body)  # done by the HTTP layer before routing
    loop = asyncio.get_running_loop()
    gaps: list[float] = []  # wall-clock time between the watcher's turns
    cpu: list[float] = []  # CPU time this thread spent between them: the scan's own share
    done = False

    async def watch() -> None:
        last, last_cpu = loop.time(), time.thread_time()
        while not done:
            await asyncio.sleep(0)
            now, now_cpu = loop.time(), time.thread_time()
            gaps.append(now - last)
            cpu.append(now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    began = time.perf_counter()
    decision = await privacy.review(request, Detector(), mode=None, consent=False, local=False)
    total = time.perf_counter() - began
    done = True
    await watcher
    return total, gaps, cpu, list(decision.kinds)


async def run() -> str:
    rows = [
        "| 1 MiB body | scan total ms | stall p99 ms | longest stall ms | longest CPU ms | found |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, body in bodies().items():
        total, gaps, cpu, kinds = await _measure(body)
        rows.append(
            f"| {name} | {total * 1000:.0f} | "
            f"{percentile(gaps, 99) * 1000:.1f} | {max(gaps) * 1000:.1f} | "
            f"{max(cpu) * 1000:.1f} | "
            f"{', '.join(kinds) or '-'} |"
        )
    return (
        "## Privacy scan: worst cases for a 1 MiB body\n\n"
        f"`make bench-privacy` ({machine()}; one process, nothing else on the loop but the "
        f"watcher; steps of {sensitive.WINDOW} characters, the loop given back every "
        f"{sensitive.SLICE_SECONDS * 1000:g} ms; phone checks capped at "
        f"{sensitive.PHONE_CHECKS}, seed checksum checks at {sensitive.SEED_CHECKS}, past which "
        "the kind counts as found).\n\n"
        + "\n".join(rows)
        + f"\n\nLoad average while it ran: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (the "
        "machine is shared, so wall-clock stalls include time the process was not scheduled). "
        'Stalls are wall-clock gaps between the loop\'s turns while the scan ran; "longest CPU" '
        "is the most CPU time the scan used between two turns, its own share of a stall."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()
    report = asyncio.run(run())
    print(report)
    if args.write:
        write_section(args.write, "bench-privacy", report)


if __name__ == "__main__":
    main()
