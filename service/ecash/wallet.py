"""The operator's Cashu wallet as satrouter sees it: each operation runs the nutshell wallet
(:mod:`.nutshell_wallet`) in the interpreter that has the PyPI ``cashu`` package, and reads
its one-line JSON answer. One operation per mint at a time (the wallet's proofs live in one
SQLite file per mint); every operation is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HELPER = Path(__file__).with_name("nutshell_wallet.py")


class EcashRefused(Exception):
    """The wallet or the mint refused: ``kind`` says why (nothing was redeemed or sent)."""

    def __init__(self, kind: str, detail: str, extra: dict[str, Any]) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.extra = extra


class EcashUnknown(Exception):
    """The wallet did not answer in time: the operation may or may not have happened."""


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
    ) -> None:
        self.python = python
        self.data_dir = data_dir
        self.mints = mints
        self.timeout = timeout
        self.max_proofs = max_proofs
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, mint: str) -> asyncio.Lock:
        return self._locks.setdefault(mint, asyncio.Lock())

    async def _run(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
            )
        except OSError as exc:  # it never started: nothing happened
            detail = f"the ecash wallet cannot start ({self.python}): {exc.strerror or exc}"
            raise EcashRefused("wallet_unavailable", detail, {}) from None
        try:
            out, err = await asyncio.wait_for(
                process.communicate(json.dumps(args).encode()), self.timeout
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise EcashUnknown(f"the ecash wallet did not answer {command} in time") from None
        lines = out.decode().strip().splitlines()
        if process.returncode != 0 or not lines:
            raise EcashUnknown(f"the ecash wallet failed: {err.decode()[-300:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        if "error" in result:
            kind, detail = str(result.pop("error")), str(result.pop("detail", ""))
            raise EcashRefused(kind, detail, result)
        return result

    async def redeem(self, token: str, min_sat: int) -> Redeemed:
        """Swap ``token``'s proofs for fresh ones at its mint, if that mint is allowed and the
        token carries at least ``min_sat``."""
        result = await self._run(
            "redeem",
            {
                "token": token,
                "mints": list(self.mints),
                "min_sat": min_sat,
                "max_proofs": self.max_proofs,
            },
        )
        return Redeemed(str(result["mint"]), int(result["amount"]), int(result["fee"]))

    async def recover(self, token_hash: str) -> Recovered:
        """What became of the redeem of the token whose SHA-256 is ``token_hash``."""
        result = await self._run("recover", {"token_hash": token_hash, "mints": list(self.mints)})
        return Recovered(
            str(result["state"]),
            result.get("mint"),
            int(result.get("amount", 0)),
            int(result.get("fee", 0)),
        )

    async def send(self, mint: str, amount_sat: int) -> Sent:
        result = await self._run("send", {"mint": mint, "amount": amount_sat})
        return Sent(str(result["token"]), amount_sat, int(result["fee"]))

    async def melt(self, mint: str, bolt11: str) -> Melted:
        result = await self._run("melt", {"mint": mint, "bolt11": bolt11})
        return Melted(
            bool(result["paid"]),
            int(result["amount"]),
            int(result["fee"]),
            result.get("preimage"),
        )

    async def balance(self, mint: str) -> int:
        """The proofs held at ``mint``, in sat."""
        return int((await self._run("balance", {"mint": mint}))["amount"])
