"""The double-entry ledger: every movement of money is one balanced journal entry.

Accounts hold one currency each (``msat`` or ``nusd``). A posting's amount is signed: debits
positive, credits negative. Invariants, each enforced where it can be and proven by :func:`check`:

1. Every entry balances per currency: its postings in each currency sum to zero (enforced when an
   :class:`Entry` is built; checked again over the stored journal).
2. An account's balance is the sum of its postings (the stored balance is a cache, updated in the
   same transaction as the postings; :func:`check` recomputes it).
3. Agent balances and escrows (liabilities flagged ``no_overdraft``) never go below zero (enforced
   by :func:`post` inside the writer's transaction, so concurrent reservations cannot together
   exceed a balance).
4. An idempotency key posts at most once: a replay of the same entry posts nothing; a different
   entry under a used key is an error.

Agent money is a liability (``liabilities:agent:*``, ``liabilities:escrow:*``); only realised
margin (``income:revenue`` less costs) is the operator's to spend.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from . import audit
from .money import Msat, NanoUsd
from .store import AuditTx, LedgerTotals, LedgerTx, PostingRow


class Currency(enum.StrEnum):
    MSAT = "msat"
    NUSD = "nusd"


class AccountType(enum.StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    INCOME = "income"
    EXPENSE = "expense"
    EQUITY = "equity"

    @property
    def credit_normal(self) -> bool:
        return self in (AccountType.LIABILITY, AccountType.INCOME, AccountType.EQUITY)


@dataclass(frozen=True, slots=True)
class Account:
    code: str
    currency: Currency
    type: AccountType
    no_overdraft: bool = False


# The chart of accounts.
LIGHTNING = Account("assets:lightning", Currency.MSAT, AccountType.ASSET)
OPENROUTER_CREDITS = Account("assets:openrouter", Currency.NUSD, AccountType.ASSET)
REVENUE = Account("income:revenue", Currency.MSAT, AccountType.INCOME)
LLM_COST = Account("expenses:llm", Currency.NUSD, AccountType.EXPENSE)
LIGHTNING_FEES = Account("expenses:lightning_fees", Currency.MSAT, AccountType.EXPENSE)
FX_MSAT = Account("equity:fx:msat", Currency.MSAT, AccountType.EQUITY)
FX_NUSD = Account("equity:fx:nusd", Currency.NUSD, AccountType.EQUITY)
OWNER_NUSD = Account("equity:owner:nusd", Currency.NUSD, AccountType.EQUITY)
OWNER_MSAT = Account("equity:owner:msat", Currency.MSAT, AccountType.EQUITY)
TOPUPS_PENDING = Account("assets:topups_pending", Currency.MSAT, AccountType.ASSET)
TOPUP_LOSSES = Account("expenses:topup_unconfirmed", Currency.MSAT, AccountType.EXPENSE)
#: What the operator's own provider keys (OpenRouter BYOK) were billed: owed to those
#: providers, never paid from OpenRouter credits.
BYOK_PAYABLE = Account("liabilities:byok_providers", Currency.NUSD, AccountType.LIABILITY)
#: What Cashu mints charged to swap or melt proofs (NUT-02 ``input_fee_ppk``, melt fees).
ECASH_FEES = Account("expenses:ecash_fees", Currency.MSAT, AccountType.EXPENSE)
#: Change owed in msat below a whole sat: ecash moves in sats, so that part stays here.
ECASH_ROUNDING = Account("income:ecash_rounding", Currency.MSAT, AccountType.INCOME)


def agent_account(agent_id: str) -> Account:
    """What satrouter owes an agent: its spendable credit."""
    return Account(f"liabilities:agent:{agent_id}", Currency.MSAT, AccountType.LIABILITY, True)


def ecash_account(mint_id: str) -> Account:
    """The Cashu proofs held at one mint (``mint_id`` names it; see the ecash wallet)."""
    return Account(f"assets:ecash:{mint_id}", Currency.MSAT, AccountType.ASSET)


def escrow_account(ref: str) -> Account:
    """Money paid or reserved for one task, held until the task is settled or refunded."""
    return Account(f"liabilities:escrow:{ref}", Currency.MSAT, AccountType.LIABILITY, True)


class LedgerError(Exception):
    pass


class UnbalancedEntry(LedgerError, ValueError):
    pass


class IdempotencyConflict(LedgerError):
    """A different entry was already posted under this idempotency key."""


class InsufficientFunds(LedgerError):
    def __init__(self, account: str, balance: int, needed: int) -> None:
        super().__init__(f"{account}: balance {balance} msat, needs {needed} msat")
        self.account = account
        self.balance = balance
        self.needed = needed


@dataclass(frozen=True, slots=True)
class Posting:
    account: Account
    amount: int  # debit > 0, credit < 0, in the account's currency


def _units(account: Account, amount: Msat | NanoUsd) -> int:
    expected = Msat if account.currency is Currency.MSAT else NanoUsd
    if type(amount) is not expected:
        raise TypeError(f"{account.code} holds {account.currency}, got {type(amount).__name__}")
    if amount.value <= 0:
        raise ValueError(f"posting to {account.code} must be positive, got {amount}")
    return amount.value


def debit(account: Account, amount: Msat | NanoUsd) -> Posting:
    return Posting(account, _units(account, amount))


def credit(account: Account, amount: Msat | NanoUsd) -> Posting:
    return Posting(account, -_units(account, amount))


@dataclass(frozen=True, slots=True)
class Entry:
    """A balanced journal entry. Zero-amount legs are dropped by the constructors below."""

    kind: str
    idempotency_key: str
    postings: tuple[Posting, ...]
    ref: str | None = None
    memo: str | None = None

    def __post_init__(self) -> None:
        if len(self.postings) < 2:
            raise UnbalancedEntry(f"{self.kind}: an entry needs at least two postings")
        sums: dict[Currency, int] = defaultdict(int)
        for posting in self.postings:
            if posting.amount == 0:
                raise UnbalancedEntry(f"{self.kind}: zero posting to {posting.account.code}")
            sums[posting.account.currency] += posting.amount
        unbalanced = {c: s for c, s in sums.items() if s != 0}
        if unbalanced:
            raise UnbalancedEntry(f"{self.kind}: does not balance: {unbalanced}")

    def digest(self) -> str:
        legs = sorted(f"{p.account.code}:{p.amount}" for p in self.postings)
        canonical = "|".join([self.kind, self.ref or "", *legs])
        return hashlib.sha256(canonical.encode()).hexdigest()


class PostingTx(LedgerTx, AuditTx, Protocol):
    """What posting writes to: the ledger, and the audit trail in the same transaction."""


async def post(tx: PostingTx, entry: Entry, *, now: float | None = None) -> bool:
    """Post ``entry`` inside ``tx``. False if this exact entry was already posted (a replay).

    Raises :class:`InsufficientFunds` if a no-overdraft account would go below zero, and
    :class:`IdempotencyConflict` if the key was used for a different entry.
    """
    now = time.time() if now is None else now
    digest = entry.digest()
    deltas: dict[Account, int] = defaultdict(int)
    for posting in entry.postings:
        deltas[posting.account] += posting.amount
    # One read for everything below: the key, the balances and the audit trail's tail.
    start = await tx.start_entry(
        entry.idempotency_key,
        [(a.code, a.currency, a.type, a.no_overdraft) for a in deltas],
        now,
    )
    if start.posted_digest is not None:
        if start.posted_digest != digest:
            raise IdempotencyConflict(f"{entry.idempotency_key} was posted with other postings")
        return False
    for account, delta in deltas.items():
        normal_delta = -delta if account.type.credit_normal else delta
        if account.no_overdraft and normal_delta < 0:  # only a decrease can overdraw
            stored = start.balances[account.code]
            current = -stored if account.type.credit_normal else stored
            if current + normal_delta < 0:
                raise InsufficientFunds(account.code, current, -normal_delta)
    await tx.insert_journal(
        entry.idempotency_key,
        entry.kind,
        entry.ref,
        entry.memo,
        digest,
        [PostingRow(p.account.code, p.account.currency, p.amount) for p in entry.postings],
        now,
    )
    await audit.append_after(
        tx,
        start.audit_tail,
        "money",
        {
            "entry": entry.kind,
            "key": entry.idempotency_key,
            "ref": entry.ref,
            "postings": [[p.account.code, p.amount] for p in entry.postings],
        },
        now,
    )
    return True


async def balance(tx: LedgerTx, account: Account) -> int:
    """The account's balance on its normal side (what an agent has; what revenue is)."""
    row = await tx.account(account.code)
    if row is None:
        return 0
    return -row.balance if account.type.credit_normal else row.balance


async def agent_balance(tx: LedgerTx, agent_id: str) -> Msat:
    return Msat(await balance(tx, agent_account(agent_id)))


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """The result of :func:`check`: ``ok`` and, when not, what is wrong."""

    problems: tuple[str, ...]
    totals: LedgerTotals
    checked_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return not self.problems


async def check(tx: LedgerTx) -> LedgerCheck:
    """Prove the books balance: invariants 1-3 over the whole stored journal."""
    totals = await tx.ledger_totals()
    problems: list[str] = []
    for currency, total in totals.by_currency.items():
        if total != 0:
            problems.append(f"postings in {currency} sum to {total}, not 0")
    problems += [f"journal entry {i} does not balance" for i in totals.unbalanced_entries]
    problems += [
        f"{code}: stored balance {stored} != sum of postings {derived}"
        for code, stored, derived in totals.drifted_accounts
    ]
    problems += [f"{code} is overdrawn: {normal}" for code, normal in totals.overdrawn]
    return LedgerCheck(tuple(problems), totals)


# -- the entries each event posts -----------------------------------------------------------


def _entry(
    kind: str, key: str, ref: str | None, *legs: Posting | None, memo: str | None = None
) -> Entry:
    return Entry(kind, key, tuple(p for p in legs if p is not None), ref=ref, memo=memo)


def _transfer(
    kind: str,
    key: str,
    ref: str | None,
    amount: Msat | NanoUsd,
    *,
    dr: Account,
    cr: Account,
    memo: str | None = None,
) -> Entry:
    """``amount`` moved from ``cr`` to ``dr``: the two-leg entry most movements are."""
    return _entry(kind, key, ref, debit(dr, amount), credit(cr, amount), memo=memo)


def _credit_if(account: Account, amount: Msat | NanoUsd) -> Posting | None:
    return credit(account, amount) if amount.value > 0 else None


def _debit_if(account: Account, amount: Msat | NanoUsd) -> Posting | None:
    return debit(account, amount) if amount.value > 0 else None


def deposit(agent_id: str, amount: Msat, payment_hash: str) -> Entry:
    """An agent's deposit invoice settled: the wallet grows, and so does what we owe the agent."""
    return _transfer(
        "deposit",
        f"deposit:{payment_hash}",
        agent_id,
        amount,
        dr=LIGHTNING,
        cr=agent_account(agent_id),
    )


def invoice_paid_into_escrow(ref: str, amount: Msat, payment_hash: str) -> Entry:
    """A task's (or L402 token's) invoice settled: the payment is held in escrow for ``ref``."""
    return _transfer(
        "escrow_paid", f"paid:{payment_hash}", ref, amount, dr=LIGHTNING, cr=escrow_account(ref)
    )


def reserve(agent_id: str, ref: str, amount: Msat) -> Entry:
    """Move an agent's maximum price into escrow before running its request."""
    return _transfer(
        "reserve", f"reserve:{ref}", ref, amount, dr=agent_account(agent_id), cr=escrow_account(ref)
    )


def settle(
    ref: str,
    payer_id: str,
    held: Msat,
    revenue: Msat,
    cost: NanoUsd,
    *,
    byok: NanoUsd = NanoUsd(0),  # noqa: B008 (immutable value object)
) -> Entry:
    """A reconciled call: escrow splits into revenue and change; the dollar cost is booked
    against the OpenRouter credits it consumed, and (BYOK) the provider's own cost against
    what the operator owes that provider."""
    if revenue > held:
        raise UnbalancedEntry(f"revenue {revenue} exceeds what was held ({held})")
    return _entry(
        "settle",
        f"settle:{ref}",
        ref,
        debit(escrow_account(ref), held),
        _credit_if(REVENUE, revenue),
        _credit_if(agent_account(payer_id), held - revenue),
        _debit_if(LLM_COST, cost + byok),
        _credit_if(OPENROUTER_CREDITS, cost),
        _credit_if(BYOK_PAYABLE, byok),
    )


def unbilled_call(ref: str, cost: NanoUsd, *, byok: NanoUsd = NanoUsd(0)) -> Entry:  # noqa: B008
    """A call that ran after its task was refunded: its cost is the operator's, booked against
    the credits (and, BYOK, the provider) it consumed."""
    return _entry(
        "unbilled_call",
        f"unbilled:{ref}",
        ref,
        debit(LLM_COST, cost + byok),
        _credit_if(OPENROUTER_CREDITS, cost),
        _credit_if(BYOK_PAYABLE, byok),
    )


def refund(ref: str, payer_id: str, held: Msat) -> Entry:
    """A task that could not run: everything held goes back to the payer's credit."""
    return _transfer(
        "refund", f"refund:{ref}", ref, held, dr=escrow_account(ref), cr=agent_account(payer_id)
    )


def withdrawal_reserve(agent_id: str, ref: str, amount: Msat, fee_limit: Msat) -> Entry:
    """Hold a withdrawal's amount and its maximum routing fee before paying out."""
    return _transfer(
        "withdrawal_reserve",
        f"withdraw-reserve:{ref}",
        ref,
        amount + fee_limit,
        dr=agent_account(agent_id),
        cr=escrow_account(ref),
    )


def withdrawal_paid(agent_id: str, ref: str, amount: Msat, fee_limit: Msat, fee: Msat) -> Entry:
    """The payout succeeded: the wallet pays amount and the fee the route really cost; the
    unused fee limit returns to the agent. A fee over the limit (a backend that cannot enforce
    one, such as LNbits) is not the agent's: it pays at most its limit and the operator bears
    the excess as a routing-fee expense."""
    charged = min(fee, fee_limit)
    return _entry(
        "withdrawal",
        f"withdraw:{ref}",
        ref,
        debit(escrow_account(ref), amount + fee_limit),
        _debit_if(LIGHTNING_FEES, fee - charged),
        credit(LIGHTNING, amount + fee),
        _credit_if(agent_account(agent_id), fee_limit - charged),
    )


def withdrawal_failed(agent_id: str, ref: str, amount: Msat, fee_limit: Msat) -> Entry:
    return _transfer(
        "withdrawal_failed",
        f"withdraw-failed:{ref}",
        ref,
        amount + fee_limit,
        dr=escrow_account(ref),
        cr=agent_account(agent_id),
    )


def credits_funded(amount: NanoUsd, key: str, memo: str | None = None) -> Entry:
    """The operator put dollars into OpenRouter credits from outside (an opening balance)."""
    return _transfer(
        "credits_funded",
        f"funded:{key}",
        None,
        amount,
        dr=OPENROUTER_CREDITS,
        cr=OWNER_NUSD,
        memo=memo,
    )


def wallet_funded(amount: Msat, key: str, memo: str | None = None) -> Entry:
    """The operator's own sats in the wallet (an opening balance): the owner's, not an agent's."""
    return _transfer(
        "wallet_funded",
        f"wallet-funded:{key}",
        None,
        amount,
        dr=LIGHTNING,
        cr=OWNER_MSAT,
        memo=memo,
    )


def topup_paid(topup_id: str, amount: Msat, fee: Msat) -> Entry:
    """A top-up's invoice is paid: its sats leave the wallet and wait for the credits."""
    return _entry(
        "topup_paid",
        f"topup-paid:{topup_id}",
        topup_id,
        debit(TOPUPS_PENDING, amount),
        _debit_if(LIGHTNING_FEES, fee),
        credit(LIGHTNING, amount + fee),
    )


def topup_confirmed(topup_id: str, amount: Msat, received: NanoUsd) -> Entry:
    """OpenRouter shows the credits: the sats bought ``received`` dollars of credits."""
    return _entry(
        "topup_confirmed",
        f"topup-confirmed:{topup_id}",
        topup_id,
        debit(FX_MSAT, amount),
        credit(TOPUPS_PENDING, amount),
        debit(OPENROUTER_CREDITS, received),
        credit(FX_NUSD, received),
    )


def topup_expired(topup_id: str, amount: Msat) -> Entry:
    """Paid, but the credits never showed up by the deadline: written off for the operator."""
    return _transfer(
        "topup_expired",
        f"topup-expired:{topup_id}",
        topup_id,
        amount,
        dr=TOPUP_LOSSES,
        cr=TOPUPS_PENDING,
    )


def ecash_received(payer: str, mint_id: str, amount: Msat, fee: Msat, key: str) -> Entry:
    """A Cashu token swapped at its mint: the proofs kept (its face value ``amount`` less the
    mint's swap ``fee``, which the token's own proofs paid) are the payer's credit."""
    return _transfer(
        "ecash_received",
        f"ecash-in:{key}",
        payer,
        amount - fee,
        dr=ecash_account(mint_id),
        cr=agent_account(payer),
        memo=f"face value {amount.value} msat, the mint's fee {fee.value} msat",
    )


def ecash_change(payer: str, mint_id: str, ref: str, owed: Msat, sent: Msat) -> Entry:
    """A payer's credit paid back as a fresh token of ``sent`` (whole sats); the msat below a
    sat stay as rounding income."""
    if sent > owed:
        raise UnbalancedEntry(f"change {sent} exceeds what is owed ({owed})")
    return _entry(
        "ecash_change",
        f"ecash-change:{ref}",
        ref,
        debit(agent_account(payer), owed),
        _credit_if(ecash_account(mint_id), sent),
        _credit_if(ECASH_ROUNDING, owed - sent),
    )


def ecash_fee(mint_id: str, key: str, fee: Msat) -> Entry:
    """A mint's fee for a swap the operator made (minting change): proofs spent on it."""
    return _transfer(
        "ecash_fee", f"ecash-fee:{key}", None, fee, dr=ECASH_FEES, cr=ecash_account(mint_id)
    )


def ecash_melted(mint_id: str, ref: str, amount: Msat, fee: Msat) -> Entry:
    """Proofs melted into a payment of the operator's own Lightning invoice: the wallet grows
    by ``amount``; the mint's fee is an expense."""
    return _entry(
        "ecash_melted",
        f"ecash-melt:{ref}",
        ref,
        debit(LIGHTNING, amount),
        _debit_if(ECASH_FEES, fee),
        credit(ecash_account(mint_id), amount + fee),
    )
