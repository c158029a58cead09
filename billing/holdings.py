"""The books against the world: what the ledger says satrouter holds outside itself (the
Lightning wallet, the OpenRouter credits, the Cashu proofs held at each mint) beside what the
wallet, OpenRouter and the ecash wallet report.

The ledger check proves the books agree with themselves; this proves they agree with the world.
Some money is legitimately between the two, and is allowed for:

- *leaving*: the world may already show less than the books. A payout in flight has left (or is
  leaving) the wallet while its amount still sits in escrow; a call that ran but is not
  reconciled yet has been charged by OpenRouter before the books say so (at most its quoted
  cost).
- *arriving*: the world may already show more. Credits bought by a top-up that is paid but not
  yet confirmed in the books.

Beyond those, a difference larger than the tolerance is a mismatch: ``/admin/status`` fails its
check, an alert fires, and the dashboard shows it. Invariant, for a holding whose world is known:
``books - leaving - tolerance <= world <= books + arriving + tolerance``.

The first time a holding's world is known it is *opened*: what the world holds beyond the books
then (credits bought before satrouter kept books, sats the operator put in the wallet) is booked
once as the owner's money, so the books start equal to the world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import ledger
from .money import Msat, NanoUsd
from .store import Tx

#: Escrow accounts of withdrawals (``wd_<payment hash>``): their balance is a payout in flight.
WITHDRAWAL_ESCROWS = "liabilities:escrow:wd_"
#: Top-up states whose payment may be in flight, and those whose credits may show before the
#: books do.
TOPUP_PAYING = ("executing",)
TOPUP_ARRIVING = ("awaiting_operator", "paid", "confirmed")
#: Tasks that may have been charged by OpenRouter and are not reconciled yet.
UNRECONCILED = ("running", "completed")


@dataclass(frozen=True, slots=True)
class Holding:
    name: str  # "lightning", "openrouter" or "ecash:<mint>"
    unit: str  # "msat" or "nusd"
    books: int
    world: int | None  # None: the backend could not tell
    tolerance: int
    leaving: int = 0
    arriving: int = 0
    error: str | None = None  # why the world is unknown

    def __post_init__(self) -> None:
        assert min(self.tolerance, self.leaving, self.arriving) >= 0

    @property
    def difference(self) -> int | None:
        """The world less the books (None while the world is unknown)."""
        return None if self.world is None else self.world - self.books

    @property
    def matches(self) -> bool | None:
        """Whether the world is within what the books explain (None: unknown)."""
        gap = self.difference
        if gap is None:
            return None
        return -self.leaving - self.tolerance <= gap <= self.arriving + self.tolerance

    def describe(self) -> str:
        if self.world is None:
            return f"{self.name}: unknown ({self.error or 'no reading'})"
        return (
            f"{self.name}: the world holds {self.world} {self.unit}, the books {self.books} "
            f"{self.unit} (difference {self.difference}; explained: -{self.leaving} leaving, "
            f"+{self.arriving} arriving, tolerance {self.tolerance})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "books": self.books,
            "world": self.world,
            "difference": self.difference,
            "leaving": self.leaving,
            "arriving": self.arriving,
            "tolerance": self.tolerance,
            "matches": self.matches,
            "error": self.error,
        }


async def lightning(
    tx: Tx, world: Msat | None, tolerance: Msat, error: str | None = None
) -> Holding:
    """The Lightning asset against the wallet's balance as the backend reports it."""
    leaving = sum(-a.balance for a in await tx.accounts(WITHDRAWAL_ESCROWS))
    for topup in await tx.topups(TOPUP_PAYING):
        leaving += int(topup.data.get("invoice_msat", 0))
    return Holding(
        "lightning",
        "msat",
        await ledger.balance(tx, ledger.LIGHTNING),
        world.value if world is not None else None,
        tolerance.value,
        leaving=leaving,
        error=error,
    )


async def openrouter(
    tx: Tx, world: NanoUsd | None, tolerance: NanoUsd, error: str | None = None
) -> Holding:
    """The OpenRouter credits asset against ``/credits``."""
    leaving = 0
    for task in await tx.tasks_in_states(UNRECONCILED):
        if (task.data.get("privacy") or {}).get("decision") != "local":
            leaving += int(task.data["quote"]["cost_max_nusd"])
    arriving = sum(t.usd_nusd for t in await tx.topups(TOPUP_ARRIVING))
    return Holding(
        "openrouter",
        "nusd",
        await ledger.balance(tx, ledger.OPENROUTER_CREDITS),
        world.value if world is not None else None,
        tolerance.value,
        leaving=leaving,
        arriving=arriving,
        error=error,
    )


async def ecash(
    tx: Tx, mint_id: str, world: Msat | None, tolerance: Msat, error: str | None = None
) -> Holding:
    """The ecash held at one mint against the proofs the operator's wallet holds there."""
    return Holding(
        f"ecash:{mint_id}",
        "msat",
        await ledger.balance(tx, ledger.ecash_account(mint_id)),
        world.value if world is not None else None,
        tolerance.value,
        error=error,
    )


def opened_key(holding: Holding) -> str:
    """The store key marking that ``holding`` was opened."""
    return f"holdings:opened:{holding.name}"


def opening(holding: Holding) -> ledger.Entry | None:
    """The entry that opens ``holding``: what the world holds beyond the books, as the owner's
    money (None when there is nothing to book, or the world is unknown)."""
    gap = holding.difference
    if gap is None or gap <= 0 or holding.name.startswith("ecash:"):
        return None  # the ecash wallet is satrouter's own from its first proof: nothing to open
    if holding.name == "lightning":
        return ledger.wallet_funded(Msat(gap), "opening", memo="the wallet when books opened")
    return ledger.credits_funded(NanoUsd(gap), "opening", memo="credits when books opened")
