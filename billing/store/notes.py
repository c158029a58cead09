"""Notes: small messages a write transaction sends on a named channel when it commits, heard
by every process listening on the same database (``Tx.notify`` / ``Store.listen``).

They are wake-ups, not data: a listener re-reads what it needs from the store, and a note
may be lost (a listener's connection dropped and came back), which the listener hears as
``None`` and answers by re-reading everything it cares about. Payloads stay small: PostgreSQL
refuses NOTIFY payloads of 8000 bytes or more, and a listener holds its unread notes in memory.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from .contracts import StoreError

#: The longest payload, in UTF-8 bytes (well under PostgreSQL's 8000-byte limit).
NOTE_MAX = 1000
#: Unread notes a listener holds at most; past this its queue is replaced by one ``None``.
BACKLOG = 10_000
_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def checked(channel: str, payload: str) -> None:
    """Refuse a channel that is not a plain lower-case name or a payload over ``NOTE_MAX``."""
    if not _CHANNEL.fullmatch(channel):
        raise StoreError(f"a channel is a lower-case name of at most 63 characters: {channel!r}")
    if len(payload.encode()) > NOTE_MAX:
        raise StoreError(f"a note's payload is at most {NOTE_MAX} bytes")


def put(queue: asyncio.Queue[str | None], payload: str | None) -> None:
    """Queue a note for one listener; a listener that fell ``BACKLOG`` behind gets ``None``
    instead of its backlog (it re-reads), so a stalled listener holds bounded memory."""
    if queue.qsize() >= BACKLOG:
        while not queue.empty():
            queue.get_nowait()
        payload = None
    queue.put_nowait(payload)


async def drain(queue: asyncio.Queue[str | None]) -> AsyncIterator[str | None]:
    """The notes as they come (never ends: the listening block ends it)."""
    while True:
        yield await queue.get()
