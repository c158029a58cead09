"""Idempotency-Key records: which task a caller's key stands for, and for which request.

A record is stored under ``idem:<scope>`` as ``<task id>|<fingerprint>``; :class:`Record`
reads and writes that form (and an earlier release's, keyed by ``payer|key``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from billing.store import TaskRow, Tx


def idem_scope(caller: str, key: str) -> str:
    """Where an Idempotency-Key lives: the hash of who sent it and the key, length-prefixed
    so no caller's key can spell another caller's (``acct_1|k`` from one caller is not key
    ``k`` of ``acct_1``). ``caller`` is the payer for credentialed requests, the client's
    address otherwise."""
    framed = f"{len(caller)}:{caller}|{key}"
    return hashlib.sha256(framed.encode()).hexdigest()


def fingerprint(*parts: object) -> str:
    """What makes two requests the same request."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Record:
    """One key's entry: the store key it lives under, its task and request fingerprint."""

    key: str
    task_id: str
    fingerprint: str

    @classmethod
    def scoped(cls, scope: str, task_id: str, fingerprint: str) -> Record:
        return cls(f"idem:{scope}", task_id, fingerprint)

    @staticmethod
    def legacy_key(payer: str, key: str) -> str:
        """Where a release before scoped keys kept ``payer``'s key."""
        return "idem:" + hashlib.sha256(f"{payer}|{key}".encode()).hexdigest()

    @classmethod
    def parse(cls, key: str, stored: str) -> Record:
        task_id, seen = stored.split("|")[:2]
        return cls(key, task_id, seen)

    def stored(self) -> tuple[str, str]:
        """The (key, value) to store."""
        return self.key, f"{self.task_id}|{self.fingerprint}"


async def find(tx: Tx, key: str) -> Record | None:
    stored = await tx.get_value(key)
    return Record.parse(key, stored) if stored else None


async def taken(tx: Tx, key: str) -> TaskRow | None:
    """Inside the write transaction: the task a key (an Idempotency-Key's record, or a paid
    L402 request's) already stands for."""
    stored = await tx.get_value(key)
    return await tx.task(stored.split("|")[0]) if stored else None
