"""Top-up executors: how a planned top-up gets the Lightning invoice that buys OpenRouter credits
(none, for the operator to buy them by hand; a command the operator supplies; or a URL that
answers with an invoice). ``topup.py`` decides when and how much, pays and accounts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from .money import NanoUsd
from .store import TopupRow


class TopupError(Exception):
    pass


class Executor(Protocol):
    name: str

    async def invoice(self, topup: TopupRow) -> str | None:
        """The BOLT11 invoice that buys this top-up's credits, or None (manual)."""


class ManualExecutor:
    name = "manual"

    async def invoice(self, topup: TopupRow) -> str | None:
        return None


class CommandExecutor:
    """Runs ``argv`` with the amount in its environment; its first output line is an invoice."""

    name = "command"

    def __init__(self, argv: Sequence[str], timeout: float = 120.0) -> None:
        self._argv = list(argv)
        self._timeout = timeout

    async def invoice(self, topup: TopupRow) -> str | None:
        env = {
            **os.environ,
            "SATROUTER_TOPUP_ID": topup.id,
            "SATROUTER_TOPUP_SATS": str(topup.amount_msat // 1000),
            "SATROUTER_TOPUP_USD": str(NanoUsd(topup.usd_nusd).to_usd()),
        }
        process = await asyncio.create_subprocess_exec(
            *self._argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            process.kill()
            raise TopupError("the top-up command timed out") from None
        if process.returncode != 0:
            raise TopupError(
                f"the top-up command failed ({process.returncode}): "
                f"{err.decode(errors='replace')[:200]}"
            )
        lines = out.decode(errors="replace").split()
        if not lines:
            raise TopupError("the top-up command printed no invoice")
        return lines[0]


class InvoiceUrlExecutor:
    """GETs ``url?amount_sat=..&amount_usd=..&id=..`` for ``{"invoice": "lnbc..."}``."""

    name = "lightning-invoice"

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def invoice(self, topup: TopupRow) -> str | None:
        params = {
            "amount_sat": str(topup.amount_msat // 1000),
            "id": topup.id,
            "amount_usd": str(NanoUsd(topup.usd_nusd).to_usd()),
        }
        try:
            async with self._session.get(
                self._url, params=params, timeout=aiohttp.ClientTimeout(total=30)
            ) as response:
                if response.status >= 300:
                    raise TopupError(f"the invoice URL answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TopupError(f"no invoice from the URL: {type(exc).__name__}") from None
        invoice = body.get("invoice") if isinstance(body, dict) else None
        if not isinstance(invoice, str):
            raise TopupError("the invoice URL's answer has no invoice")
        return invoice
