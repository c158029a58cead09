"""The store contract suite: every test runs once per engine, against the protocols only.

A new engine joins by one line in ``ENGINES``: its name and the URL ``open_store`` opens for a
fresh, empty database in the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from billing.store import Store, open_store

ENGINES: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp: f"sqlite:///{tmp}/contract.db",
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(engine: str, tmp_path: Path) -> str:
    """Where the engine keeps this test's database."""
    return ENGINES[engine](tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = await open_store(url)
    yield opened
    await opened.close()
