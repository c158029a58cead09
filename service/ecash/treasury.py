"""The operator's ecash: what the books hold at each mint beside the proofs the wallet holds,
and melting proofs into the operator's own Lightning wallet (``satrouter cashu``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from billing import ledger
from billing.lightning import LightningBackend, LightningError
from billing.money import Msat
from billing.store import Store

from .wallet import EcashRefused, EcashUnknown, EcashWallet, mint_id

#: How long a melt waits for the operator's own wallet to show the invoice paid.
SETTLE_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class Held:
    mint: str
    books_msat: int
    wallet_msat: int | None  # None: the wallet could not tell
    error: str | None = None

    @property
    def matches(self) -> bool:
        return self.wallet_msat == self.books_msat


async def holdings(store: Store, wallet: EcashWallet) -> list[Held]:
    """Each allowed mint's ecash: the books against the proofs held."""
    held = []
    for mint in wallet.mints:
        books, world, error = await held_at(store, wallet, mint)
        held.append(Held(mint, books.value, None if world is None else world.value, error))
    return held


async def held_at(
    store: Store, wallet: EcashWallet, mint: str
) -> tuple[Msat, Msat | None, str | None]:
    """The ecash the books hold at ``mint`` and the proofs the wallet holds there (None, and
    why, when the wallet cannot tell), both read in one turn: no redeem or change falls
    between them."""
    try:
        async with wallet.turn(mint) as at_mint:
            return await _books(store, mint), Msat.from_sat(await at_mint.balance()), None
    except (EcashRefused, EcashUnknown) as exc:
        return await _books(store, mint), None, str(exc) or type(exc).__name__


async def _books(store: Store, mint: str) -> Msat:
    async with store.read() as tx:
        return Msat(await ledger.balance(tx, ledger.ecash_account(mint_id(mint))))


class MeltFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Melt:
    payment_hash: str
    amount_msat: int
    fee_msat: int


async def melt(
    store: Store,
    lightning: LightningBackend,
    wallet: EcashWallet,
    mint: str,
    amount_sat: int,
    *,
    settle_wait: float = SETTLE_WAIT,
) -> Melt:
    """Pay an invoice of the operator's own Lightning wallet with proofs held at ``mint``.
    Booked (ecash down by the amount and the mint's fee, the wallet up) only once the wallet
    itself shows the invoice settled: a mint's word that it paid is not enough."""
    if mint not in wallet.mints and (await _books(store, mint)).value <= 0:
        # a mint taken off the allow list can still be melted while the books hold ecash there
        raise MeltFailed(f"{mint} is not an allowed mint ({', '.join(wallet.mints)})")
    amount = Msat.from_sat(amount_sat)
    try:
        invoice = await lightning.create_invoice(amount, "satrouter: ecash melted", 600)
    except (LightningError, OSError) as exc:
        raise MeltFailed(f"the Lightning wallet made no invoice: {exc}") from None
    try:
        async with wallet.turn(mint) as at_mint:
            melted = await at_mint.melt(invoice.bolt11)
    except EcashRefused as exc:
        raise MeltFailed(f"the mint refused: {exc.detail}") from None
    except EcashUnknown as exc:
        raise MeltFailed(
            f"{exc}: the melt's outcome is unknown; see `satrouter cashu balance` and the "
            f"wallet for payment {invoice.payment_hash}"
        ) from None
    if not melted.paid:
        raise MeltFailed("the mint did not pay the invoice; the proofs are still held")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_wait
    while True:
        status = await lightning.invoice_status(invoice.payment_hash)
        if status.settled:
            break
        if loop.time() > deadline:
            raise MeltFailed(
                f"the mint says it paid {invoice.payment_hash}, but the wallet has not received "
                "it: nothing is booked; the proofs it spent are gone from the wallet, which "
                "`satrouter cashu balance` shows against the books"
            )
        await asyncio.sleep(0.5)
    fee = Msat.from_sat(melted.fee_sat)
    async with store.transaction() as tx:
        await ledger.post(
            tx, ledger.ecash_melted(mint_id(mint), invoice.payment_hash, status.amount_paid, fee)
        )
    return Melt(invoice.payment_hash, status.amount_paid.value, fee.value)
