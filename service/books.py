"""Watching the books against the world (:mod:`billing.holdings`): the Lightning wallet's
balance and OpenRouter's ``/credits`` beside the ledger's asset accounts, now and then and on
demand for ``/admin/status``. The latest reading feeds the status page, the dashboard, the
alerts and two gauges."""

from __future__ import annotations

import asyncio
import logging
import time

from billing import holdings, ledger
from billing.holdings import Holding
from billing.lightning import LightningBackend, LightningError
from billing.money import Msat, NanoUsd
from billing.store import Store, Tx

from .balance import BalanceWatcher
from .ecash.wallet import EcashRefused, EcashUnknown, EcashWallet, mint_id
from .metrics import Metrics

log = logging.getLogger(__name__)


class BooksWatcher:
    def __init__(
        self,
        store: Store,
        lightning: LightningBackend,
        balance: BalanceWatcher,
        *,
        wallet_tolerance: Msat,
        credits_tolerance: NanoUsd,
        metrics: Metrics | None = None,
        interval: float = 60.0,
        ecash: EcashWallet | None = None,
    ) -> None:
        self._store = store
        self._lightning = lightning
        self._balance = balance
        self._wallet_tolerance = wallet_tolerance
        self._credits_tolerance = credits_tolerance
        self._metrics = metrics
        self._interval = interval
        self._ecash = ecash
        self._opened: set[str] = set()
        self.latest: tuple[Holding, ...] = ()

    async def read(self) -> tuple[Holding, ...]:
        """Read the world, compare it with the books (opening a holding seen for the first
        time), and keep the result as ``latest``."""
        wallet: Msat | None = None
        wallet_error: str | None = None
        try:
            wallet = await self._lightning.wallet_balance()
        except LightningError as exc:
            wallet_error = str(exc)
        reading = await self._balance.read()
        credits = reading.usd if reading is not None and reading.source == "credits" else None
        credits_error = None
        if credits is None:
            credits_error = self._balance.error or "no /credits reading (needs a management key)"
        proofs = await self._proofs_held()
        async with self._store.transaction() as tx:
            found = (
                await self._opened_first(
                    tx,
                    await holdings.lightning(tx, wallet, self._wallet_tolerance, wallet_error),
                ),
                await self._opened_first(
                    tx,
                    await holdings.openrouter(tx, credits, self._credits_tolerance, credits_error),
                ),
                *[
                    await holdings.ecash(tx, mint_id(mint), held, self._wallet_tolerance, error)
                    for mint, (held, error) in proofs.items()
                ],
            )
        self.latest = found
        for holding in found:
            if holding.matches is False:
                log.warning("books do not match the world: %s", holding.describe())
            if self._metrics is not None and holding.difference is not None:
                self._metrics.books_difference.labels(holding.name).set(holding.difference)
                self._metrics.books_match.labels(holding.name).set(1 if holding.matches else 0)
        return found

    async def _proofs_held(self) -> dict[str, tuple[Msat | None, str | None]]:
        """The proofs the ecash wallet holds at each allowed mint (or why it cannot say)."""
        found: dict[str, tuple[Msat | None, str | None]] = {}
        for mint in self._ecash.mints if self._ecash is not None else ():
            assert self._ecash is not None
            try:
                async with self._ecash.turn(mint) as at_mint:
                    found[mint] = (Msat.from_sat(await at_mint.balance()), None)
            except (EcashRefused, EcashUnknown) as exc:
                found[mint] = (None, str(exc) or type(exc).__name__)
        return found

    async def _opened_first(self, tx: Tx, holding: Holding) -> Holding:
        """Open a holding seen for the first time: book what the world holds beyond the books
        as the owner's money, once. Returns the holding as the books now stand."""
        if holding.name in self._opened or holding.world is None:
            return holding
        key = holdings.opened_key(holding)
        if await tx.get_value(key) is None:
            entry = holdings.opening(holding)
            if entry is not None:
                await ledger.post(tx, entry)
                log.info("books opened: %s", holding.describe())
                holding = await self._again(tx, holding)
            await tx.set_value(key, str(time.time()))
        self._opened.add(holding.name)
        return holding

    async def _again(self, tx: Tx, holding: Holding) -> Holding:
        world = holding.world
        assert world is not None
        if holding.name == "lightning":
            return await holdings.lightning(tx, Msat(world), self._wallet_tolerance)
        return await holdings.openrouter(tx, NanoUsd(world), self._credits_tolerance)

    async def run(self) -> None:
        """Read now and then (the app reads once before serving, hence the sleep first)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.read()
            except Exception:
                log.exception("checking the books against the world failed")
