"""The operator's Cashu wallet as satrouter sees it: each operation runs the nutshell wallet
(:mod:`.nutshell_wallet`) in the interpreter that has the PyPI ``cashu`` package, and reads
its one-line JSON answer; every operation is bounded by a timeout.

The wallet's proofs at a mint live in one SQLite file, so operations on one mint take turns
(:meth:`EcashWallet.turn`) across every process on the machine that uses the same wallet
folder (``serve --workers N``, ``satrouter cashu melt`` beside a running service): a turn
holds an OS lock on the mint's lock file, and so does the wallet process it starts, so a
caller killed mid-operation keeps the others out until that operation has ended. A turn may
span several operations and the bookings between them. Callers waiting in one process are
capped: beyond the cap, the wallet is busy (nothing happened; try later).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .token import NotAToken, read

HELPER = Path(__file__).with_name("nutshell_wallet.py")
#: A serialized token, as it may appear in the wallet's error output (never logged).
_TOKEN_TEXT = re.compile(r"cashu[AB][A-Za-z0-9_\-+/=]+")

log = logging.getLogger(__name__)
T = TypeVar("T")


class EcashRefused(Exception):
    """The wallet or the mint refused: ``kind`` says why (nothing was redeemed or sent)."""

    def __init__(self, kind: str, detail: str, extra: dict[str, Any]) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.extra = extra


class EcashUnknown(Exception):
    """The wallet did not answer (in time, or readably): the operation may or may not have
    happened."""


@dataclass(frozen=True, slots=True)
class Redeemed:
    mint: str
    amount_sat: int
    fee_sat: int


@dataclass(frozen=True, slots=True)
class Recovered:
    """What became of an interrupted redeem: ``state`` is ``none`` (never asked of the mint),
    ``unspent``, ``pending``, ``redeemed`` (this wallet holds the swap's outputs),
    ``spent_elsewhere`` or ``unclear``."""

    state: str
    mint: str | None
    amount_sat: int
    fee_sat: int


@dataclass(frozen=True, slots=True)
class Sent:
    token: str
    amount_sat: int
    fee_sat: int


@dataclass(frozen=True, slots=True)
class Melted:
    paid: bool
    amount_sat: int
    fee_sat: int
    preimage: str | None


def scrubbed(text: str) -> str:
    """``text`` (the wallet's words) without any serialized token in it, for the log."""
    return _TOKEN_TEXT.sub("cashu…", text)


def wallet_name(mint: str) -> str:
    """The name of the wallet's files for ``mint`` (as :mod:`.nutshell_wallet` names them)."""
    return hashlib.sha256(mint.encode()).hexdigest()[:16]


def mint_id(mint: str) -> str:
    """A mint's name in the ledger: its host, port and path, in characters an account code
    keeps, and a short hash of the whole URL so two mints never share one."""
    parts = urlsplit(mint)
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{parts.netloc}{parts.path}").strip("_")
    return f"{readable[:60]}-{hashlib.sha256(mint.encode()).hexdigest()[:8]}"


class EcashWallet:
    def __init__(
        self,
        python: str,
        data_dir: Path,
        mints: tuple[str, ...],
        *,
        timeout: float = 60.0,
        max_proofs: int = 64,
        max_waiting: int = 16,
    ) -> None:
        self.python = python
        self.data_dir = data_dir
        self.mints = mints
        self.timeout = timeout
        self.max_proofs = max_proofs
        self.max_waiting = max_waiting
        self._turns: dict[str, asyncio.Lock] = {}
        self._waiting: Counter[str] = Counter()

    def screen(self, token: str, min_sat: int) -> str:
        """The mint ``token`` names; or refuse (:class:`EcashRefused`, nothing redeemed) a
        token whose face the wallet would refuse: not a token, a mint not allowed, a unit
        other than sat, more than ``max_proofs`` proofs, or a face value under ``min_sat``.
        Read in process: no wallet is started and nothing is written."""
        try:
            face = read(token)
        except NotAToken as exc:
            raise EcashRefused("invalid_token", str(exc), {}) from None
        if face.mint not in self.mints:
            detail = f"{face.mint} is not a mint this service accepts"
            raise EcashRefused("mint_not_allowed", detail, {"mint": face.mint})
        if face.unit != "sat":
            detail = f"the token is in {face.unit}; only sat is accepted"
            raise EcashRefused("unit_not_supported", detail, {})
        if face.proofs > self.max_proofs:
            detail = f"the token has {face.proofs} proofs; at most {self.max_proofs}"
            raise EcashRefused("too_many_proofs", detail, {"mint": face.mint})
        if face.amount < min_sat:
            detail = f"the token carries {face.amount} sat"
            raise EcashRefused("below_price", detail, {"amount": face.amount, "mint": face.mint})
        return face.mint

    def journal(self, mint: str, token_hash: str) -> Path:
        """Where the wallet journals its swap of a token (see :mod:`.nutshell_wallet`)."""
        return self.data_dir / f"{wallet_name(mint)}-swaps" / f"{token_hash}.json"

    def journaled_at(self, token_hash: str) -> str | None:
        """The mint (allowed or no longer) whose wallet journaled a swap of the token, if any:
        the journal names it."""
        for path in sorted(self.data_dir.glob(f"*-swaps/{token_hash}.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                return str(json.loads(path.read_text())["mint"])
        return None

    @contextlib.asynccontextmanager
    async def turn(self, mint: str, *, wait: float | None = None) -> AsyncIterator[MintWallet]:
        """The wallet at ``mint``, to this caller alone until the block ends (see the module's
        docstring); :class:`EcashRefused` ``wallet_busy`` if too many wait already here, or
        the turn does not come within ``wait`` seconds (default: the timeout). Any mint the
        wallet holds proofs at, allowed or no longer: the allow list is for redeems."""
        busy = EcashRefused("wallet_busy", "the ecash wallet is busy; try again shortly", {})
        if self._waiting[mint] >= self.max_waiting:
            raise busy
        wait = self.timeout if wait is None else wait
        deadline = time.monotonic() + wait
        self._waiting[mint] += 1
        try:
            async with asyncio.timeout(wait):
                await self._turns.setdefault(mint, asyncio.Lock()).acquire()
        except TimeoutError:
            raise busy from None
        finally:
            self._waiting[mint] -= 1
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / f"{wallet_name(mint)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                await self._lock_file(fd, deadline)
                yield MintWallet(self, mint, fd)
            finally:
                os.close(fd)  # the lock goes with the last holder of the file (maybe the wallet)
        finally:
            self._turns[mint].release()

    async def _lock_file(self, fd: int, deadline: float) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    detail = "the ecash wallet is busy in another process; try again shortly"
                    raise EcashRefused("wallet_busy", detail, {}) from None
                await asyncio.sleep(0.05)

    async def run(self, command: str, args: dict[str, Any], lock_fd: int) -> dict[str, Any]:
        """Run one wallet command (the caller holds the turn whose lock file is ``lock_fd``)."""
        env = {**os.environ, "CASHU_DIR": str(self.data_dir), "TOR": "false", "DEBUG": "false"}
        try:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-I",  # isolated: the helper's folder (this package) must not shadow any module
                str(HELPER),
                command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=(lock_fd,),  # it holds the turn with us: a kill of ours ends no turn
            )
        except OSError as exc:  # it never started: nothing happened
            detail = f"the ecash wallet cannot start ({self.python}): {exc.strerror or exc}"
            raise EcashRefused("wallet_unavailable", detail, {"swapped": False}) from None
        try:
            out, err = await asyncio.wait_for(
                process.communicate(json.dumps({**args, "timeout": self.timeout}).encode()),
                self.timeout,
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise EcashUnknown(f"the ecash wallet did not answer {command} in time") from None
        except asyncio.CancelledError:  # no one waits for it: it ends now, not at its alarm
            process.kill()
            raise
        result = _answer(out)
        if process.returncode != 0 or result is None:
            # What it wrote stays in the operator's log (without any token); callers learn
            # only that the outcome is unknown.
            said = scrubbed(err.decode(errors="replace"))[-2000:]
            code = process.returncode
            log.warning("the ecash wallet failed %s (exit %s): %s", command, code, said)
            raise EcashUnknown(f"the ecash wallet failed {command}")
        if "error" in result:
            kind, detail = str(result.pop("error")), str(result.pop("detail", ""))
            raise EcashRefused(kind, detail, result)
        return result


def _answer(out: bytes) -> dict[str, Any] | None:
    """The wallet's answer: the JSON object on its last line of output (None: there is none)."""
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


class MintWallet:
    """The wallet at one mint during a turn (:meth:`EcashWallet.turn`)."""

    def __init__(self, wallet: EcashWallet, mint: str, lock_fd: int) -> None:
        self.mint = mint
        self._wallet = wallet
        self._fd = lock_fd

    async def _run(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self._wallet.run(command, {**args, "mint": self.mint}, self._fd)

    async def redeem(self, token: str, min_sat: int) -> Redeemed:
        """Swap ``token``'s proofs (at this mint) for fresh ones, if the token carries at
        least ``min_sat`` after the mint's fee."""
        args = {"token": token, "min_sat": min_sat, "max_proofs": self._wallet.max_proofs}
        result = await self._run("redeem", args)
        return _read(lambda: Redeemed(self.mint, int(result["amount"]), int(result["fee"])))

    async def recover(self, token_hash: str) -> Recovered:
        """What became of the redeem of the token whose SHA-256 is ``token_hash``."""
        result = await self._run("recover", {"token_hash": token_hash})
        return _read(
            lambda: Recovered(
                str(result["state"]),
                result.get("mint"),
                int(result.get("amount", 0)),
                int(result.get("fee", 0)),
            )
        )

    @property
    def timeout(self) -> float:
        return self._wallet.timeout

    def journaled(self, token_hash: str) -> bool:
        """Whether the wallet journaled a swap of the token here (and has not forgotten it)."""
        return self._wallet.journal(self.mint, token_hash).exists()

    def forget(self, token_hash: str) -> None:
        """Delete the journal of a redeem that is booked (it served only to recover one)."""
        self._wallet.journal(self.mint, token_hash).unlink(missing_ok=True)

    async def send(self, amount_sat: int) -> Sent:
        result = await self._run("send", {"amount": amount_sat})
        return _read(lambda: Sent(str(result["token"]), amount_sat, int(result["fee"])))

    async def melt(self, bolt11: str) -> Melted:
        result = await self._run("melt", {"bolt11": bolt11})
        return _read(
            lambda: Melted(
                bool(result["paid"]),
                int(result["amount"]),
                int(result["fee"]),
                result.get("preimage"),
            )
        )

    async def balance(self) -> int:
        """The proofs held at this mint, in sat."""
        result = await self._run("balance", {})
        return _read(lambda: int(result["amount"]))


def _read(build: Callable[[], T]) -> T:
    """A record built from the wallet's answer; an answer without the fields it needs is an
    unknown outcome (the command ran; what it did cannot be read)."""
    try:
        return build()
    except (KeyError, TypeError, ValueError):
        raise EcashUnknown("the ecash wallet's answer could not be read") from None
