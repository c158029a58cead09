"""Notes on PostgreSQL: ``pg_notify`` inside the transaction (the server delivers it on commit,
to every session listening), and one dedicated connection per process that ``LISTEN``\\ s for
all of its listeners and comes back when it is lost. Contract: ``NotifyTx`` and
``Store.listen``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ..contracts import StoreError
from ..notes import checked, drain, put
from .base import PostgresBase

log = logging.getLogger(__name__)

#: The listening session's name in ``pg_stat_activity``.
APPLICATION = "satrouter listener"
RETRY = 1.0  # seconds between attempts to connect again
_LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)  # it failed
PROBE = 15.0  # seconds of silence after which the connection is checked (a dead peer is quiet)


class PostgresNotify(PostgresBase):
    #: Set by the store on write transactions (the server would send a read snapshot's too).
    writing: bool = False

    async def notify(self, channel: str, payload: str) -> None:
        checked(channel, payload)
        if not self.writing:
            raise StoreError("notes are sent by write transactions only")
        await self._conn.execute("SELECT pg_notify($1, $2)", channel, payload)


class Listener:
    """One connection that listens on every channel this process's listeners want. When it
    is lost (the server restarted, the backend was terminated, the network failed) it is
    opened again, and each listener hears ``None``: notes sent meanwhile are gone."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._queues: dict[str, set[asyncio.Queue[str | None]]] = {}
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._listening: set[str] = set()  # channels LISTENed on the current connection
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._up = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str | None]]:
        checked(channel, "")
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._queues.setdefault(channel, set()).add(queue)
        try:
            if self._keeper is None:
                self._keeper = asyncio.get_running_loop().create_task(self._keep())
            await self._subscribe(channel)
            yield drain(queue)
        finally:
            self._queues[channel].discard(queue)
            if not self._queues[channel]:
                del self._queues[channel]
                await self._unsubscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        """Return once the connection LISTENs on ``channel`` (the notes committed after this
        reach the listener)."""
        while True:
            await self._up.wait()
            async with self._lock:
                conn = self._conn
                if channel in self._listening and conn is not None and not conn.is_closed():
                    return
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(
                        asyncpg.PostgresError, asyncpg.InterfaceError, OSError
                    ):
                        await conn.add_listener(channel, self._heard)
                        self._listening.add(channel)
                        return
            await asyncio.sleep(RETRY / 10)  # lost meanwhile: the keeper opens another

    async def _unsubscribe(self, channel: str) -> None:
        async with self._lock:
            conn = self._conn
            if channel in self._listening and conn is not None and not conn.is_closed():
                self._listening.discard(channel)
                with contextlib.suppress(*_LOST):
                    await conn.remove_listener(channel, self._heard)

    def _heard(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        for queue in self._queues.get(channel, ()):
            put(queue, str(payload))

    async def _keep(self) -> None:
        """Hold the listening connection, opening it again whenever it goes."""
        connected_before = False
        while True:
            try:
                conn = await asyncpg.connect(
                    self._url, server_settings={"application_name": APPLICATION}
                )
            except _LOST as exc:
                log.warning("cannot open the listening connection: %s", exc)
                await asyncio.sleep(RETRY)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _, lost=lost: lost.set())
            try:
                async with self._lock:
                    for channel in list(self._queues):
                        await conn.add_listener(channel, self._heard)
                    self._conn, self._listening = conn, set(self._queues)
                self._up.set()
                if connected_before:  # whatever was sent while it was away is lost
                    for queues in self._queues.values():
                        for queue in queues:
                            put(queue, None)
                connected_before = True
                await self._hold(conn, lost)
            except _LOST as exc:
                log.warning("the listening connection failed: %s", exc)
            finally:
                self._up.clear()
                self._conn, self._listening = None, set()
                conn.terminate()
            log.warning("the listening connection was lost; opening it again")
            await asyncio.sleep(RETRY)

    async def _hold(self, conn: asyncpg.Connection[asyncpg.Record], lost: asyncio.Event) -> None:
        """Until the connection is lost: wait, and after each quiet ``PROBE`` ask the server
        something (a connection whose peer vanished hears nothing and says nothing)."""
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), PROBE)
                return
            async with self._lock:
                await asyncio.wait_for(conn.execute("SELECT 1"), PROBE)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
