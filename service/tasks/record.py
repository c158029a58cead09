"""A task's record: what the engine keeps of a task, with named fields, stored versioned.

The store keeps a task's record as a JSON object (``TaskRow.data``). This release writes
``"v": 2`` with the fields below; a record without ``v`` was written by an earlier release
(the same field names, unversioned) and loads as it is. A key this release does not know is
kept in ``extra`` and written back unchanged.

``billing/margins.py`` (which may not import ``service``) reads this subset of the stored form,
by name, and nothing else: ``charge_msat``, ``cost_nusd``, ``quote.btc_usd``, ``quote.model``,
``model_used``, ``payer``, ``task_class``, ``tier``, ``provisional``, ``reconciled_at``. These
keep their names and meaning in every version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from billing.store import TaskRow

from .quotes import StoredQuote
from .routes import Decision

VERSION = 2


@dataclass(slots=True)
class TaskRecord:
    kind: str  # how it is paid: "invoice", "account" (task API, from credit), "prepaid", "l402"
    payer: str  # the ledger account that pays: task_<id>, acct_<id>, l402_<token id>
    request: dict[str, Any]  # the exact body sent upstream
    quote: StoredQuote
    # -- how it was routed (see Decision) --
    tier: str | None = None
    privacy: dict[str, Any] | None = None
    task_class: str | None = None
    classification: dict[str, Any] | None = None
    last_resort: tuple[str, ...] = ()
    # -- intake --
    callback_url: str | None = None
    callback_secret: str | None = None
    token_hash: str | None = None
    invoice: dict[str, Any] | None = None  # payment_hash, bolt11, amount_msat, expires_at
    # -- payment --
    held_msat: int | None = None  # what escrow holds for it
    paid_at: float | None = None
    budget: dict[str, Any] | None = None  # what it counted against the caps (committed_at...)
    # -- the call --
    result: dict[str, Any] | None = None  # kept for tasks and L402 replays, not prepaid calls
    generation_id: str | None = None
    model_used: str | None = None
    inline_cost_usd: str | None = None
    inline_byok_usd: str | None = None
    usage: dict[str, Any] | None = None
    completed_at: float | None = None
    upstream_seconds: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    ran_locally: bool = False
    consensus: dict[str, Any] | None = None
    cascade: dict[str, Any] | None = None
    calls: list[dict[str, Any]] | None = None  # each call of a consensus or cascade
    error: str | None = None
    # -- reconciliation --
    cost_nusd: int | None = None
    byok_cost_nusd: int | None = None
    charge_msat: int | None = None
    change_msat: int | None = None
    margin_msat: int | None = None
    provisional: bool | None = None
    capped: bool | None = None
    reconciled_at: float | None = None
    #: keys this release does not know, kept as they were
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> Decision:
        return Decision(self.tier, self.privacy, None, self.last_resort)

    @property
    def several(self) -> bool:
        """A consensus or a cascade: several calls."""
        return "consensus" in self.request or "cascade" in self.request

    @classmethod
    def load(cls, data: dict[str, Any]) -> TaskRecord:
        """A stored record of any version this release reads."""
        version = data.get("v", 1)
        if version not in (1, VERSION):
            raise ValueError(f"a task record of version {version!r} is newer than this release")
        values = {k: v for k, v in data.items() if k != "v"}
        extra = {k: values.pop(k) for k in list(values) if k not in _FIELDS}
        values["quote"] = StoredQuote.load(values["quote"])
        values["last_resort"] = tuple(values.get("last_resort") or ())
        values["attempts"] = list(values.get("attempts") or [])
        values["ran_locally"] = bool(values.get("ran_locally"))
        return cls(**values, extra=extra)

    def dump(self) -> dict[str, Any]:
        """The stored form (``v`` 2): every field that is set."""
        data: dict[str, Any] = {"v": VERSION}
        for name in _FIELDS:
            value = getattr(self, name)
            if name == "quote":
                value = value.dump()
            elif name == "last_resort":
                value = list(value) or None
            elif name in ("ran_locally", "attempts"):
                value = value or None
            if value is not None or name in _ALWAYS:
                data[name] = value
        return {**self.extra, **data}

    def updated(self, changes: dict[str, Any]) -> TaskRecord:
        """This record with ``changes`` (by field name; an unknown name is a mistake)."""
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise TypeError(f"a task record has no {', '.join(sorted(unknown))}")
        return TaskRecord.load({**self.dump(), **changes})


_FIELDS = tuple(f.name for f in fields(TaskRecord) if f.name != "extra")
#: Kept even when None: a ``privacy`` of None says the prompt was reviewed and nothing found
#: (a record without one was never reviewed).
_ALWAYS = frozenset({"tier", "privacy"})


def record_of(task: TaskRow) -> TaskRecord:
    return TaskRecord.load(task.data)


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """The part of a record the callback sender reads (any version): where to, and the
    signing secret. Read on its own so the sender needs no more of a task than this."""

    url: str | None
    secret: str | None

    @classmethod
    def of(cls, task: TaskRow) -> CallbackTarget:
        data = task.data
        return cls(data.get("callback_url"), data.get("callback_secret"))
