"""Turns of the operator's Cashu wallet at a mint (service/ecash/wallet.py): one caller at a
time across processes (an OS lock on the mint's lock file, which the wallet process holds
too), a cap on callers waiting in one process, and a wallet answer that cannot be read is an
unknown outcome whose details stay in the log."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service.ecash.wallet import EcashRefused, EcashUnknown, EcashWallet

MINT = "http://127.0.0.1:3338"
TOKEN = "cashuBo2FteBxodHRwOi8vMTI3LjAuMC4xOjMzMzgvc2VjcmV0"


def fake_wallet(tmp_path: Path, script: str) -> str:
    """An executable standing in for the wallet's interpreter: runs ``script`` (sh)."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


async def test_another_process_s_turn_keeps_this_one_out(tmp_path: Path) -> None:
    """Two wallets on one folder stand for two processes (an OS lock on a file is per open
    file, so one process shows it): the second is refused as busy, nothing run, while the
    first holds its turn, and has its own once it ends."""
    first = EcashWallet("python", tmp_path, (MINT,))
    second = EcashWallet("python", tmp_path, (MINT,), timeout=0.3)
    async with first.turn(MINT):
        with pytest.raises(EcashRefused) as busy:
            async with second.turn(MINT):
                pass
    assert busy.value.kind == "wallet_busy"
    async with second.turn(MINT) as at_mint:
        assert at_mint.mint == MINT


async def test_callers_waiting_in_one_process_are_capped(tmp_path: Path) -> None:
    wallet = EcashWallet("python", tmp_path, (MINT,), max_waiting=2)
    release = asyncio.Event()
    entered: list[int] = []

    async def take(n: int) -> None:
        async with wallet.turn(MINT):
            entered.append(n)
            await release.wait()

    holder = asyncio.create_task(take(0))
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(take(n)) for n in (1, 2)]
    await asyncio.sleep(0.05)
    with pytest.raises(EcashRefused) as busy:
        await take(3)
    assert busy.value.kind == "wallet_busy"
    release.set()
    await asyncio.gather(holder, *waiting)
    assert entered == [0, 1, 2]


async def test_a_caller_killed_mid_command_keeps_the_turn_until_the_command_ends(
    tmp_path: Path,
) -> None:
    """The wallet process holds the turn with its caller: SIGKILL the caller while the
    command runs, and no other process gets the turn before the command has finished."""
    started, finished = tmp_path / "started", tmp_path / "finished"
    python = fake_wallet(
        tmp_path, f"touch {started}; sleep 2; touch {finished}; echo '{{\"amount\": 0}}'\n"
    )
    caller = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from service.ecash.wallet import EcashWallet

        async def main():
            wallet = EcashWallet({python!r}, Path({str(tmp_path)!r}), ({MINT!r},))
            async with wallet.turn({MINT!r}) as at_mint:
                await at_mint.balance()

        asyncio.run(main())
        """
    )
    process = subprocess.Popen([sys.executable, "-c", caller], cwd=os.getcwd())
    try:
        for _ in range(200):
            if started.exists():
                break
            await asyncio.sleep(0.05)
        assert started.exists()
        process.send_signal(signal.SIGKILL)
        process.wait()
        other = EcashWallet("python", tmp_path, (MINT,), timeout=0.3)
        with pytest.raises(EcashRefused):
            async with other.turn(MINT):
                pass
        assert not finished.exists()
        patient = EcashWallet("python", tmp_path, (MINT,), timeout=10)
        async with patient.turn(MINT):
            assert finished.exists()
    finally:
        process.kill()


async def test_an_answer_that_cannot_be_read_is_an_unknown_outcome_kept_from_callers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    python = fake_wallet(tmp_path, f"echo 'Traceback: bad {TOKEN}' >&2; echo 'not json'\n")
    wallet = EcashWallet(python, tmp_path, (MINT,))
    with caplog.at_level(logging.WARNING, logger="service.ecash.wallet"):
        async with wallet.turn(MINT) as at_mint:
            with pytest.raises(EcashUnknown) as unknown:
                await at_mint.redeem(TOKEN, 1)
    assert "Traceback" not in str(unknown.value)
    assert "Traceback: bad cashu…" in caplog.text  # the operator's log has it ...
    assert TOKEN not in caplog.text  # ... without the token


async def test_an_answer_without_the_fields_it_needs_is_an_unknown_outcome(
    tmp_path: Path,
) -> None:
    wallet = EcashWallet(fake_wallet(tmp_path, "echo '{\"mint\": 1}'\n"), tmp_path, (MINT,))
    async with wallet.turn(MINT) as at_mint:
        with pytest.raises(EcashUnknown):
            await at_mint.redeem(TOKEN, 1)
