"""What a note costs and how soon it is heard: a write transaction that sends one note
(``Tx.notify``, the note every task move sends) against one that does not, and the time from a
commit to the note reaching a listener on another store (its own connection) on the same
database. SQLite hands notes over in process; PostgreSQL sends them with ``pg_notify`` to a
listening session. Throwaway cluster (tests/postgres.py: loopback, fsync off).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._report import machine, percentile, write_section
from billing.store import Store, open_store
from tests.postgres import throwaway_cluster

CHANNEL = "bench_notes"


async def _write(store: Store, n: int, note: bool) -> None:
    async with store.transaction() as tx:
        await tx.set_value(f"bench:{n % 100}", str(n))
        if note:
            await tx.notify(CHANNEL, f'{{"task":"task_{n:024}","state":"paid","callback":false}}')


async def _rate(store: Store, seconds: float, note: bool) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        await _write(store, done, note)
        done += 1
    return done / (time.perf_counter() - start)


async def _latencies(writer: Store, listener: Store, count: int) -> list[float]:
    """Milliseconds from the start of each write transaction to its note's arrival, one note
    at a time."""
    found: list[float] = []
    async with listener.listen(CHANNEL) as notes:
        for n in range(count):
            sent = time.perf_counter()
            await _write(writer, n, True)
            await anext(notes)
            found.append((time.perf_counter() - sent) * 1000)
    return found


async def _cell(url: str, seconds: float, count: int) -> tuple[float, float, list[float]]:
    writer = await open_store(url)
    listener = await open_store(url) if writer.shared else writer
    try:
        await _rate(writer, 0.5, True)  # warm-up
        plain = await _rate(writer, seconds, False)
        noted = await _rate(writer, seconds, True)
        return plain, noted, await _latencies(writer, listener, count)
    finally:
        if listener is not writer:
            await listener.close()
        await writer.close()


def measure(seconds: float, count: int) -> str:
    rows = []
    with throwaway_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        for name, url in (
            ("SQLite", f"sqlite:///{tmp}/notes.db"),
            ("PostgreSQL", cluster.create_database("bench_notes")),
        ):
            plain, noted, latency = asyncio.run(_cell(url, seconds, count))
            print(f"{name}: {plain:,.0f} / {noted:,.0f} tx/s, {statistics.median(latency):.2f} ms")
            rows.append(
                f"| {name} | {plain:,.0f} | {noted:,.0f} | {statistics.median(latency):.2f} "
                f"| {percentile(latency, 99):.2f} |"
            )
    return "\n".join(
        [
            "## Notes: what a task move's wake-up costs",
            "",
            f"`make bench-notes` ({machine()}, load average {os.getloadavg()[0]:.1f} at the "
            "end: a shared machine, the rates vary between runs; "
            f"{seconds:g} s of one-at-a-time write transactions each way, "
            f"then {count} notes one at a time). "
            "A write transaction sets one value, with or without the note every task move "
            "sends (on PostgreSQL one more statement, one more round trip). "
            "The latency runs from the start of a transaction to its note's arrival "
            "at a listener (PostgreSQL: another store's listening connection; "
            "SQLite: in process), the transaction included.",
            "",
            "| engine | tx/s without note | tx/s with note | begin to heard, median ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="each rate's run")
    parser.add_argument("--count", type=int, default=500, help="notes timed one at a time")
    parser.add_argument("--write", type=Path, help="put the table into this Markdown file")
    args = parser.parse_args()
    body = measure(args.seconds, args.count)
    print(body)
    if args.write:
        write_section(args.write, "bench-notes", body)


if __name__ == "__main__":
    main()
