"""The throwaway PostgreSQL cluster the PostgreSQL tests run on, through the chosen driver."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import pytest

if TYPE_CHECKING:  # imported by pytest_plugins below, where its asserts get rewritten
    from tests.postgres import Cluster

pytest_plugins = ["tests.postgres"]  # the fixtures
pytestmark = pytest.mark.postgresql


async def test_a_fresh_database_takes_tables_and_rolls_back(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://postgres@127.0.0.1:")
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'") == 0
        await conn.execute("CREATE TABLE accounts (code text PRIMARY KEY, balance bigint)")
        await conn.execute("INSERT INTO accounts VALUES ('agent:1', 100)")
        with pytest.raises(RuntimeError, match="abandoned"):
            async with conn.transaction():
                await conn.execute("UPDATE accounts SET balance = 0 WHERE code = 'agent:1'")
                assert await conn.fetchval("SELECT balance FROM accounts") == 0
                raise RuntimeError("abandoned")
        assert await conn.fetchval("SELECT balance FROM accounts") == 100
        # Serializable transactions and row locks, which the engine relies on, are there.
        async with conn.transaction(isolation="serializable"):
            row = await conn.fetchrow(
                "SELECT balance FROM accounts WHERE code=$1 FOR UPDATE", "agent:1"
            )
            assert row is not None and row["balance"] == 100
    finally:
        await conn.close()


async def test_each_test_gets_its_own_database(
    postgres_url: str, postgres_cluster: Cluster
) -> None:
    # The previous test's table is not here: databases are per test, dropped after it.
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('accounts')") is None
        name = await conn.fetchval("SELECT current_database()")
        assert postgres_url.endswith("/" + name)
    finally:
        await conn.close()


async def test_the_cluster_listens_on_loopback_only(postgres_cluster: Cluster) -> None:
    conn = await asyncpg.connect(postgres_cluster.url())
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW port") == str(postgres_cluster.port)
        # Trust authentication applies to loopback lines only.
        rules = await conn.fetch("SELECT type, address, auth_method FROM pg_hba_file_rules")
        assert {r["address"] for r in rules if r["type"] == "host"} <= {"127.0.0.1", "::1"}
    finally:
        await conn.close()
