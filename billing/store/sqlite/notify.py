"""Notes on SQLite: one process per database, so they are handed over in memory, after the
commit, to this process's listeners. Contract: ``NotifyTx`` and ``Store.listen``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from ..contracts import StoreError
from ..notes import checked, drain, put
from .base import SqliteBase


class SqliteNotify(SqliteBase):
    #: What this write transaction sends when it commits (None: a read snapshot).
    outgoing: list[tuple[str, str]] | None = None

    async def notify(self, channel: str, payload: str) -> None:
        checked(channel, payload)
        if self.outgoing is None:
            raise StoreError("notes are sent by write transactions only")
        self.outgoing.append((channel, payload))


class Switchboard:
    """This process's listeners, by channel."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[str | None]]] = {}

    def deliver(self, notes: Sequence[tuple[str, str]]) -> None:
        for channel, payload in notes:
            for queue in self._queues.get(channel, ()):
                put(queue, payload)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str | None]]:
        checked(channel, "")
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._queues.setdefault(channel, set()).add(queue)
        try:
            yield drain(queue)
        finally:
            self._queues[channel].discard(queue)
            if not self._queues[channel]:
                del self._queues[channel]
