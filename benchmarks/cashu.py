"""``make bench-cashu``: what a Cashu token costs satrouter before it reaches the mint, and at it.

- In process: reading a token's face (``service/ecash/token.py``: mint, unit, proofs, value) for
  tokens of 1, 10 and 64 proofs, and refusing 16 KiB of nested CBOR; taking a wallet turn
  (``EcashWallet.turn``: an asyncio lock and an OS file lock), uncontended.
- The wallet process (nutshell in ``.venv-cashu``) against a local nutshell mint (fake
  Lightning backend, 100 ppk input fee): ``balance`` and ``redeem`` of a fresh 10-sat token,
  wall time and the process's CPU (user and system time of the finished child).

Writes the ``bench-cashu`` section of ``docs/benchmarks.md`` with ``--write``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import resource
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cbor2

from benchmarks._report import machine, write_section
from service.demo.cashu import PYTHON, AgentWallet, running_mint
from service.ecash.token import NotAToken, read
from service.ecash.wallet import EcashWallet

MINT = "https://mint.example"


def token(proofs: int) -> str:
    """A ``cashuB`` token of ``proofs`` proofs, each with its DLEQ proof, as wallets send them."""
    body = {
        "m": MINT,
        "u": "sat",
        "t": [
            {
                "i": bytes.fromhex("00ad268c4d1f5826"),
                "p": [
                    {
                        "a": 1 << (n % 16),
                        "s": secrets.token_hex(32),
                        "c": b"\x02" + secrets.token_bytes(32),
                        "d": {k: secrets.token_bytes(32) for k in ("e", "s", "r")},
                    }
                    for n in range(proofs)
                ],
            }
        ],
    }
    return "cashuB" + base64.urlsafe_b64encode(cbor2.dumps(body)).decode().rstrip("=")


def per_call_us(call: Callable[[], Any], n: int) -> float:
    """The median over five runs of ``n`` calls, in µs per call."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            call()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def refused(text: str) -> Callable[[], None]:
    def call() -> None:
        try:
            read(text)
        except NotAToken:
            return
        raise AssertionError("read a token out of nested CBOR")

    return call


async def turn_us(n: int) -> float:
    wallet = EcashWallet("python", Path(tempfile.mkdtemp()), (MINT,))
    started = time.perf_counter()
    for _ in range(n):
        async with wallet.turn(MINT):
            pass
    return (time.perf_counter() - started) / n * 1e6


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def wallet_process(runs: int) -> dict[str, tuple[float, float]]:
    """Per command: (median wall s, median CPU s) of the wallet process."""
    found: dict[str, list[tuple[float, float]]] = {"balance": [], "redeem": []}
    with running_mint(input_fee_ppk=100) as mint:
        agent = AgentWallet(mint, Path(tempfile.mkdtemp()) / "agent")
        await asyncio.to_thread(agent.fund, 20 * runs)
        wallet = EcashWallet(str(PYTHON), Path(tempfile.mkdtemp()), (mint.url,))
        tokens = [await asyncio.to_thread(agent.token, 10) for _ in range(runs)]
        for sent in tokens:
            async with wallet.turn(mint.url) as at_mint:
                found["balance"].append(await timed(at_mint.balance()))
                found["redeem"].append(await timed(at_mint.redeem(sent, 1)))
    return {
        name: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
        for name, got in found.items()
    }


async def timed(command: Awaitable[Any]) -> tuple[float, float]:
    cpu, started = children_cpu(), time.perf_counter()
    await command
    return time.perf_counter() - started, children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file")
    parser.add_argument("--runs", type=int, default=5, help="wallet commands of each kind")
    args = parser.parse_args()
    rows = []
    for proofs in (1, 10, 64):
        text = token(proofs)
        what = f"read a token of {proofs} proof{'s' * (proofs > 1)} ({len(text):,} chars)"
        rows.append((what, per_call_us(functools.partial(read, text), 2000)))
    nested = "cashuB" + base64.urlsafe_b64encode(b"\x81" * 12_000).decode()
    rows.append((f"refuse nested CBOR ({len(nested):,} chars)", per_call_us(refused(nested), 2000)))
    rows.append(("a wallet turn, uncontended", asyncio.run(turn_us(2000))))
    process = asyncio.run(wallet_process(args.runs))
    lines = [
        f"Command: `make bench-cashu` ({machine()}). In process: the median of five runs of 2,000 "
        "calls. The wallet process: the median of "
        f"{args.runs} commands against a local nutshell mint (100 ppk input fee).",
        "",
        "| in process | µs per call |",
        "|---|---:|",
        *[f"| {what} | {us:,.1f} |" for what, us in rows],
        "",
        "| wallet process (nutshell) | wall s | CPU s |",
        "|---|---:|---:|",
        *[f"| `{name}` | {wall:.2f} | {cpu:.2f} |" for name, (wall, cpu) in process.items()],
        "",
        "A token the wallet would refuse (another mint or unit, too many proofs, too little "
        "value, not a token) is refused in process, before any row is written or wallet "
        "process started: what the first table costs instead of what the second does. "
        "A token travels in one header line, which aiohttp caps at 8,190 bytes: about 25 "
        "proofs with their DLEQ proofs.",
    ]
    report = "## Cashu: a token's face in process against the wallet process\n\n" + "\n".join(lines)
    print(report)
    if args.write:
        write_section(args.write, "bench-cashu", report)


if __name__ == "__main__":
    main()
