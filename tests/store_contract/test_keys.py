"""KeysTx: API accounts by key hash, L402 root keys (never replaced), small named values."""

from __future__ import annotations

import pytest

from billing.store import Store, StoreError


async def test_an_api_account_is_found_by_its_key_hash_only(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_api_account("acct1", "hash1", 1.0)
        await tx.insert_api_account("acct2", "hash2", 1.0)
    async with store.read() as tx:
        assert await tx.api_account_by_key_hash("hash1") == "acct1"
        assert await tx.api_account_by_key_hash("hash2") == "acct2"
        assert await tx.api_account_by_key_hash("acct1") is None


@pytest.mark.parametrize(("account", "key_hash"), [("acct1", "other"), ("other", "hash1")])
async def test_an_account_id_or_key_hash_is_used_once(
    store: Store, account: str, key_hash: str
) -> None:
    async with store.transaction() as tx:
        await tx.insert_api_account("acct1", "hash1", 1.0)
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.insert_api_account(account, key_hash, 2.0)
    async with store.read() as tx:
        assert await tx.api_account_by_key_hash("hash1") == "acct1"
        assert await tx.api_account_by_key_hash("other") is None


async def test_a_root_key_is_kept_byte_for_byte_and_never_replaced(store: Store) -> None:
    key = bytes(range(32))
    async with store.transaction() as tx:
        await tx.put_root_key("id1", key, 1.0)
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.put_root_key("id1", b"\x00" * 32, 2.0)
    async with store.read() as tx:
        assert await tx.root_key("id1") == key
        assert await tx.root_key("id2") is None


async def test_values_are_set_and_replaced(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.get_value("lnd.settle_index") is None
        await tx.set_value("lnd.settle_index", "41")
        await tx.set_value("lnd.settle_index", "42")
        await tx.set_value("other", "")
    async with store.read() as tx:
        assert await tx.get_value("lnd.settle_index") == "42"
        assert await tx.get_value("other") == ""


async def test_a_deleted_value_is_gone_and_others_stay(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.set_value("a", "1")
        await tx.set_value("b", "2")
    async with store.transaction() as tx:
        await tx.delete_value("a")
        await tx.delete_value("never-set")
    async with store.read() as tx:
        assert await tx.get_value("a") is None
        assert await tx.get_value("b") == "2"
