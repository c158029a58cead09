"""asyncpg or psycopg 3: a ledger post, the transaction satrouter runs most, through each driver.

One transaction: ``SELECT ... FOR UPDATE`` on an account row, an insert into the journal, an
insert of its postings, an update of the balance; read committed and serializable, at
concurrency 1 and 16 (each worker posts to its own account, as agents pay from their own; a
serialization failure is retried and counted). Against a throwaway cluster
(``tests/postgres.py``: loopback, fsync off, so the driver and the server's work are measured,
not the disk). Each cell runs in its own process, so its CPU time (user + system, the client's
only) is the driver's. Figures are medians of several runs taken in rounds.

    python -m benchmarks.pg_driver [--seconds 4] [--repeat 3] [--write docs/dependencies.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks._report import machine, write_section
from tests.postgres import throwaway_cluster

SCHEMA = """
DROP TABLE IF EXISTS postings, journal, accounts;
CREATE TABLE accounts (code text PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE journal (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    kind text NOT NULL,
    created_at double precision NOT NULL
);
CREATE TABLE postings (
    journal_id bigint NOT NULL REFERENCES journal (id),
    account text NOT NULL REFERENCES accounts (code),
    amount bigint NOT NULL
);
INSERT INTO accounts SELECT 'agent:' || n, 1000000000000 FROM generate_series(0, 63) n;
INSERT INTO accounts VALUES ('revenue', 0);
"""
LOCK = "SELECT balance FROM accounts WHERE code = $1 FOR UPDATE"
JOURNAL = "INSERT INTO journal (idempotency_key, kind, created_at) VALUES ($1, $2, $3) RETURNING id"
POSTINGS = "INSERT INTO postings VALUES ($1, $2, $3), ($1, 'revenue', $4)"
UPDATE = "UPDATE accounts SET balance = balance - $2 WHERE code = $1"
AMOUNT = 1000
RETRYABLE = ("40001", "40P01")  # serialization failure, deadlock

DRIVERS = ("asyncpg", "psycopg", "psycopg-python")
ISOLATIONS = ("read committed", "serializable")
CONCURRENCIES = (1, 16)

Post = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class Window:
    transactions: int
    retries: int
    elapsed: float  # seconds
    cpu: float  # seconds of this process's CPU


@dataclass(frozen=True)
class Cell:
    driver: str
    isolation: str
    concurrency: int
    tps: float
    cpu_ms_per_1000: float
    retries: int


async def _asyncpg_run(url: str, isolation: str, concurrency: int, seconds: float) -> Window:
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)

    async def post(account: str, key: str) -> None:
        async with pool.acquire() as conn, conn.transaction(isolation=isolation.replace(" ", "_")):
            await conn.fetchval(LOCK, account)
            journal = await conn.fetchval(JOURNAL, key, "charge", time.time())
            await conn.execute(POSTINGS, journal, account, -AMOUNT, AMOUNT)
            await conn.execute(UPDATE, account, AMOUNT)

    def code(exc: BaseException) -> str | None:
        return getattr(exc, "sqlstate", None)

    try:
        return await _drive(post, code, concurrency, seconds)
    finally:
        await pool.close()


async def _psycopg_run(url: str, isolation: str, concurrency: int, seconds: float) -> Window:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    level = psycopg.IsolationLevel[isolation.upper().replace(" ", "_")]

    async def configure(conn: psycopg.AsyncConnection[object]) -> None:
        await conn.set_autocommit(True)  # transactions are opened explicitly below
        await conn.set_isolation_level(level)

    pool = AsyncConnectionPool(
        url, min_size=concurrency, max_size=concurrency, configure=configure, open=False
    )
    await pool.open(wait=True)
    # psycopg takes %s placeholders; the statements are the same.
    lock, journal_sql, postings, update = (
        sql.replace("$1", "%(a)s").replace("$2", "%(b)s").replace("$3", "%(c)s")
        for sql in (LOCK, JOURNAL, POSTINGS.replace("$4", "%(d)s"), UPDATE)
    )

    async def post(account: str, key: str) -> None:
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(lock, {"a": account})
            cur = await conn.execute(journal_sql, {"a": key, "b": "charge", "c": time.time()})
            row = await cur.fetchone()
            assert row is not None
            params = {"a": row[0], "b": account, "c": -AMOUNT, "d": AMOUNT}
            await conn.execute(postings, params)
            await conn.execute(update, {"a": account, "b": AMOUNT})

    def code(exc: BaseException) -> str | None:
        return getattr(exc, "sqlstate", None)

    try:
        return await _drive(post, code, concurrency, seconds)
    finally:
        await pool.close()


async def _drive(
    post: Post, code: Callable[[BaseException], str | None], concurrency: int, seconds: float
) -> Window:
    """``concurrency`` workers posting for ``seconds``, after a warm-up."""
    done = retries = counter = 0
    prefix = os.getpid()

    async def worker(n: int, until: float | None, count: int) -> None:
        nonlocal done, retries, counter
        account = f"agent:{n}"
        posted = 0
        while posted < count if until is None else time.monotonic() < until:
            counter += 1
            key = f"{prefix}:{n}:{counter}"  # unique across the cells' processes
            while True:
                try:
                    await post(account, key)
                    break
                except Exception as exc:
                    if code(exc) not in RETRYABLE:
                        raise
                    retries += 1
            posted += 1
            done += 1

    # Warm-up: connections open, statements prepared (psycopg prepares on the 5th execution).
    await asyncio.gather(*(worker(n, None, 10) for n in range(concurrency)))
    done = retries = 0
    cpu = time.process_time()
    began = time.perf_counter()
    stop = time.monotonic() + seconds
    await asyncio.gather(*(worker(n, stop, 0) for n in range(concurrency)))
    return Window(done, retries, time.perf_counter() - began, time.process_time() - cpu)


def run_cell(url: str, driver: str, isolation: str, concurrency: int, seconds: float) -> Cell:
    """One measurement, in this process."""
    runner = _asyncpg_run if driver == "asyncpg" else _psycopg_run
    w = asyncio.run(runner(url, isolation, concurrency, seconds))
    return Cell(
        driver=driver,
        isolation=isolation,
        concurrency=concurrency,
        tps=w.transactions / w.elapsed,
        cpu_ms_per_1000=w.cpu / w.transactions * 1_000_000,
        retries=w.retries,
    )


def _cell_in_child(url: str, driver: str, isolation: str, concurrency: int, seconds: float) -> Cell:
    env = dict(os.environ)
    # psycopg's pure-Python implementation, for comparison with its C one (psycopg[binary]).
    env["PSYCOPG_IMPL"] = "python" if driver == "psycopg-python" else "binary"
    args = [sys.executable, "-m", "benchmarks.pg_driver", "--cell", url, driver, isolation]
    child = subprocess.run(
        [*args, str(concurrency), "--seconds", str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 60,
    )
    if child.returncode != 0:
        raise RuntimeError(f"{driver} {isolation} {concurrency}: {child.stderr[-2000:]}")
    return Cell(**json.loads(child.stdout))


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(
        f"{name} {version(name)}"
        for name in ("asyncpg", "psycopg", "psycopg-binary", "psycopg-pool")
    )


def measure_all(seconds: float, repeat: int) -> tuple[list[Cell], str]:
    """Every cell ``repeat`` times, in rounds (so a busy moment on a shared machine spreads
    over all drivers); each figure is the median of its runs, retries their sum."""
    runs: dict[tuple[str, str, int], list[Cell]] = {}
    with throwaway_cluster() as cluster:
        url = cluster.create_database("bench")
        server = subprocess.run(
            [str(cluster.bindir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout.strip()
        for round_ in range(repeat):
            for concurrency in CONCURRENCIES:
                for isolation in ISOLATIONS:
                    for driver in DRIVERS:
                        _setup(url)  # every run starts from the same tables
                        cell = _cell_in_child(url, driver, isolation, concurrency, seconds)
                        print(
                            f"[{round_ + 1}/{repeat}] {driver:15} {isolation:15} "
                            f"c={concurrency:<3} {cell.tps:8.0f} tx/s "
                            f"{cell.cpu_ms_per_1000:7.0f} ms CPU/1000 tx, {cell.retries} retries",
                            flush=True,
                        )
                        runs.setdefault((driver, isolation, concurrency), []).append(cell)
    cells = [
        Cell(
            driver=driver,
            isolation=isolation,
            concurrency=concurrency,
            tps=statistics.median(c.tps for c in done),
            cpu_ms_per_1000=statistics.median(c.cpu_ms_per_1000 for c in done),
            retries=sum(c.retries for c in done),
        )
        for (driver, isolation, concurrency), done in runs.items()
    ]
    return cells, server


def _setup(url: str) -> None:
    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()

    asyncio.run(create())


def report(cells: list[Cell], seconds: float, repeat: int, server: str) -> str:
    names = {
        "asyncpg": "asyncpg",
        "psycopg": "psycopg 3 (C)",
        "psycopg-python": "psycopg 3 (Python)",
    }
    lines = [
        f"`make bench-pg-driver` ({machine()}; {server}; {_versions()}; {seconds:g} s a run, "
        f"median of {repeat} runs, each in its own process; loopback, fsync off). A ledger "
        "post: `SELECT ... FOR UPDATE` on the agent's account, insert a journal entry, insert "
        "its two postings, update the balance, commit. CPU is the client process's "
        "(user + system) per 1,000 transactions.",
        "",
        "| driver | isolation | concurrency | transactions/s | client CPU ms / 1,000 tx "
        "| retries |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {names[c.driver]} | {c.isolation} | {c.concurrency} | {c.tps:,.0f} "
            f"| {c.cpu_ms_per_1000:,.0f} | {c.retries} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="a run's length")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cell (median)")
    parser.add_argument("--write", type=Path, help="put the table into this Markdown file")
    parser.add_argument("--cell", nargs=4, metavar=("URL", "DRIVER", "ISOLATION", "CONCURRENCY"))
    args = parser.parse_args()
    if args.cell:
        url, driver, isolation, concurrency = args.cell
        cell = run_cell(url, driver, isolation, int(concurrency), args.seconds)
        print(json.dumps(cell.__dict__))
        return
    cells, server = measure_all(args.seconds, args.repeat)
    table = report(cells, args.seconds, args.repeat, server)
    print(table)
    if args.write:
        write_section(args.write, "bench-pg-driver", table)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
