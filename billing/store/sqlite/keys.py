"""API accounts, L402 root keys and small values on SQLite. Contract: ``KeysTx``."""

from __future__ import annotations

from .base import SqliteBase


class SqliteKeys(SqliteBase):
    async def insert_api_account(self, account_id: str, key_hash: str, now: float) -> None:
        self._run(
            "INSERT INTO api_accounts (id, key_hash, created_at) VALUES (?, ?, ?)",
            (account_id, key_hash, now),
        )

    async def api_account_by_key_hash(self, key_hash: str) -> str | None:
        row = self._one("SELECT id FROM api_accounts WHERE key_hash = ?", (key_hash,))
        return str(row[0]) if row else None

    async def put_root_key(self, id_hash: str, root_key: bytes, now: float) -> None:
        self._run(
            "INSERT INTO l402_root_keys (id_hash, root_key, created_at) VALUES (?, ?, ?)",
            (id_hash, root_key, now),
        )

    async def root_key(self, id_hash: str) -> bytes | None:
        row = self._one("SELECT root_key FROM l402_root_keys WHERE id_hash = ?", (id_hash,))
        return bytes(row[0]) if row else None

    async def get_value(self, key: str) -> str | None:
        row = self._one("SELECT value FROM kv WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_value(self, key: str, value: str) -> None:
        self._run(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def delete_value(self, key: str) -> None:
        self._run("DELETE FROM kv WHERE key = ?", (key,))
