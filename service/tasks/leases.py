"""Leases on running work: a task moved to ``running`` belongs to the replica running it until
its lease expires. The replica renews its leases while it lives (every third of a lease), so
another replica's recovery takes over only the work of a replica that died: a live replica's
call in flight is never refunded or run again by someone else."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field


def replica_id(name: str | None = None) -> str:
    """This process's name on its leases: the replica's ``name`` (``SATROUTER_REPLICA_ID``,
    else the host's), its pid and a random part. Unique per process, so that the processes of
    ``serve --workers`` (which share a configuration) never renew each other's leases, and a
    restarted process is a new holder whatever its pid."""
    prefix = (name or "").strip() or socket.gethostname()
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds the leases this process takes, and for how long each time."""

    owner: str = field(default_factory=replica_id)
    seconds: float = 30.0

    def until(self, now: float) -> float:
        return now + self.seconds

    @property
    def heartbeat(self) -> float:
        """How often the holder renews its leases."""
        return self.seconds / 3
