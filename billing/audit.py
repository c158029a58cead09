"""The audit trail: every money movement, model call and admin action, hash-chained.

Each entry's hash is ``sha256(prev_hash | seq | at | kind | canonical JSON data)``, so editing,
inserting or deleting any entry breaks every hash after it; :func:`verify` walks the chain and
names the first entry that does not fit. Entries are appended inside the same transaction as
what they record (one writer at a time keeps the chain linear). Prompt and completion text are
left out unless the operator asks for them (``SATROUTER_AUDIT_CONTENT``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .store import AuditTx, Store

GENESIS = "0" * 64


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(prev_hash: str, seq: int, at: float, kind: str, data: str) -> str:
    return hashlib.sha256(f"{prev_hash}|{seq}|{at!r}|{kind}|{data}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    kind: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


async def append(tx: AuditTx, kind: str, data: dict[str, Any], now: float) -> AuditEntry:
    """Add an entry at the end of the chain (inside the caller's write transaction)."""
    return await append_after(tx, await tx.audit_tail(), kind, data, now)


async def append_after(
    tx: AuditTx, last: tuple[int, str] | None, kind: str, data: dict[str, Any], now: float
) -> AuditEntry:
    """Add an entry after ``last``, the tail the caller read inside this same write
    transaction (which keeps it the tail)."""
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    text = _canonical(data)
    digest = entry_hash(prev, seq, now, kind, text)
    await tx.insert_audit(seq, now, kind, text, prev, digest)
    return AuditEntry(seq, now, kind, json.loads(text), prev, digest)


@dataclass(frozen=True, slots=True)
class Verification:
    entries: int
    first_bad: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_bad is None


async def entries(store: Store, batch: int = 1000) -> AsyncIterator[AuditEntry]:
    after = 0
    while True:
        async with store.read() as tx:
            rows = await tx.audit_after(after, batch)
        if not rows:
            return
        for seq, at, kind, data, prev_hash, digest in rows:
            yield AuditEntry(seq, at, kind, json.loads(data), prev_hash, digest)
            after = seq


async def verify(store: Store) -> Verification:
    """Walk the whole chain; the first entry that was edited, inserted or follows a gap.

    Cutting entries off the end leaves a valid chain; for money that is caught by comparing
    with the journal (every journal entry has its audit entry). Keep the hash of the last
    exported entry somewhere else to anchor the rest.
    """
    expected_prev, expected_seq, count, money = GENESIS, 1, 0, 0
    async for entry in entries(store):
        count += 1
        money += entry.kind == "money"
        if entry.seq != expected_seq:
            return Verification(count, entry.seq, f"entry {expected_seq} is missing")
        if entry.prev_hash != expected_prev:
            return Verification(count, entry.seq, "does not follow the entry before it")
        recomputed = entry_hash(
            entry.prev_hash, entry.seq, entry.at, entry.kind, _canonical(entry.data)
        )
        if recomputed != entry.hash:
            return Verification(count, entry.seq, "its content does not match its hash")
        expected_prev, expected_seq = entry.hash, entry.seq + 1
    async with store.read() as tx:
        journal = (await tx.ledger_totals()).entries
    if journal != money:
        return Verification(
            count,
            expected_seq,
            f"the journal has {journal} entries and the "
            f"audit trail records {money} money movements",
        )
    return Verification(count, None, None)
