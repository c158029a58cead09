"""The store contract suite: every test runs once per engine, against the protocols only.

A new engine joins by one line in ``ENGINES``: its name and the fixture that hands out the URL
``open_store`` opens for a fresh, empty database (SQLite: a file in the test's temporary
directory; PostgreSQL: a new database in the throwaway cluster of ``tests/postgres.py``).
PostgreSQL's runs carry the ``postgresql`` marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from billing.store import Store, open_store

ENGINES: dict[str, str] = {
    "sqlite": "sqlite_url",
    "postgresql": "postgres_url",
}


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/contract.db"


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.postgresql] if name == "postgresql" else [])
        for name in sorted(ENGINES)
    ]
)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(engine: str, request: pytest.FixtureRequest) -> str:
    """Where the engine keeps this test's database."""
    return str(request.getfixturevalue(ENGINES[engine]))


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = await open_store(url)
    yield opened
    await opened.close()
