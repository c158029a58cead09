"""What serializing writers costs: ledger posts per second through the store, on SQLite and on
PostgreSQL with one and with two processes (replicas) writing to one database.

Each transaction is the shape of a reservation: read the payer's account (the balance check),
then write a journal entry with two postings and their balances. On PostgreSQL every write
transaction first takes the cluster-wide advisory lock (``billing/store/postgres``), so a second
process adds connections but not writers. Runs against a throwaway cluster (tests/postgres.py:
loopback, fsync off), each cell in its own processes, from fresh tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import machine, write_section
from billing.store import PostingRow, Store, open_store
from tests.postgres import throwaway_cluster

CONCURRENCY = 16  # transactions in flight per process
AMOUNT = 1000
#: (name, engine, processes)
CELLS = (("SQLite", "sqlite", 1), ("PostgreSQL", "postgresql", 1), ("PostgreSQL", "postgresql", 2))


async def _post(store: Store, worker: str, n: int) -> None:
    async with store.transaction() as tx:
        account = await tx.account(f"agent:{worker}")
        if account is None or -account.balance < AMOUNT:  # the balance check
            raise RuntimeError("the payer's account is short")
        await tx.insert_journal(
            f"{worker}:{n}",
            "bench",
            None,
            None,
            "d",
            [
                PostingRow(f"agent:{worker}", "msat", AMOUNT),
                PostingRow("income:bench", "msat", -AMOUNT),
            ],
            time.time(),
        )


async def _run(url: str, seconds: float) -> dict[str, float]:
    """This process's share: CONCURRENCY workers posting for ``seconds`` after a warm-up."""
    store = await open_store(url)
    pid = os.getpid()
    names = [f"{pid}-{n}" for n in range(CONCURRENCY)]
    async with store.transaction() as tx:
        await tx.ensure_accounts(
            [(f"agent:{w}", "msat", "liability", True) for w in names]
            + [("income:bench", "msat", "income", False), ("assets:bench", "msat", "asset", False)],
            time.time(),
        )
        postings = [PostingRow("assets:bench", "msat", 10**15)] + [
            PostingRow(f"agent:{w}", "msat", -(10**15) // CONCURRENCY) for w in names
        ]
        postings[0] = PostingRow("assets:bench", "msat", -sum(p.amount for p in postings[1:]))
        await tx.insert_journal(f"fund:{pid}", "bench", None, None, "d", postings, time.time())
    done = 0

    async def worker(w: str, until: float | None, count: int) -> None:
        nonlocal done
        n = 0
        while n < count if until is None else time.monotonic() < until:
            n += 1
            await _post(store, w, n if until is None else 1_000_000 + n)
            done += 1

    await asyncio.gather(*(worker(w, None, 5) for w in names))
    done = 0
    began = time.perf_counter()
    stop = time.monotonic() + seconds
    await asyncio.gather(*(worker(w, stop, 0) for w in names))
    elapsed = time.perf_counter() - began
    await store.close()
    return {"transactions": done, "elapsed": elapsed}


def _cell(url: str, processes: int, seconds: float) -> float:
    """Transactions per second summed over ``processes`` processes running at once."""
    args = [sys.executable, "-m", "benchmarks.pg_store", "--child", url, "--seconds", str(seconds)]
    children = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    total = 0.0
    for child in children:
        out, _ = child.communicate(timeout=seconds * 10 + 60)
        if child.returncode != 0:
            raise RuntimeError("a benchmark process failed")
        result = json.loads(out)
        total += result["transactions"] / result["elapsed"]
    return total


def measure(seconds: float, repeat: int) -> str:
    runs: dict[int, list[float]] = {}
    with throwaway_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(repeat):
            for i, (name, engine, processes) in enumerate(CELLS):
                if engine == "sqlite":
                    url = f"sqlite:///{tmp}/bench-{round_}.db"
                else:
                    url = cluster.create_database(f"bench_{round_}_{i}")
                tps = _cell(url, processes, seconds)
                print(f"[{round_ + 1}/{repeat}] {name} x{processes}: {tps:,.0f} tx/s", flush=True)
                runs.setdefault(i, []).append(tps)
    lines = [
        "## Serialized writers: ledger posts through the store",
        "",
        f"`make bench-pg-store` ({machine()}; {seconds:g} s a run, median of {repeat}; "
        f"{CONCURRENCY} transactions in flight per process; PostgreSQL on loopback, fsync off). "
        "A transaction reads the payer's account, then writes a journal entry with two postings "
        "and their balances. On PostgreSQL every writer first takes one cluster-wide advisory "
        "lock, so a second process adds connections, not writers.",
        "",
        "| engine | processes | transactions/s |",
        "|---|---:|---:|",
    ]
    for i, (name, _engine, processes) in enumerate(CELLS):
        lines.append(f"| {name} | {processes} | {statistics.median(runs[i]):,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="a run's length")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cell (median)")
    parser.add_argument("--write", type=Path, help="put the table into this Markdown file")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_run(args.child, args.seconds))))
        return
    body = measure(args.seconds, args.repeat)
    print(body)
    if args.write:
        write_section(args.write, "bench-pg-store", body)


if __name__ == "__main__":
    main()
