"""Backups of the SQLite database while the service runs, and restoring one.

A backup is SQLite's online backup API in a single step: it reads one consistent snapshot (a
read transaction; in WAL mode writers go on meanwhile), so the copy is the database as it was
at one instant, never half a payment. Restoring copies a checked backup into the database
through SQLite as well, so a leftover WAL of the old file cannot be replayed onto the new one.

A running service holds a shared lock on ``<database>.lock`` (taken by :mod:`.sqlite` on open);
restore takes it exclusively, so it refuses while a service (or any command) has the database
open, and a service cannot start in the middle of a restore.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .sqlite import lock_path, migrations

#: Tables without which a file is not a satrouter database: the ledger, the tasks, the
#: credentials (L402 root keys, API key hashes) and ``kv`` (the task-token secret).
REQUIRED_TABLES = frozenset(
    {"accounts", "journal", "postings", "tasks", "api_accounts", "l402_root_keys", "kv"}
)


class BackupError(Exception):
    """The backup or restore was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Checked:
    """A database file that passed the integrity check, and its schema version."""

    path: Path
    schema_version: int
    size: int


def database_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise BackupError("backup and restore work on sqlite:///path databases")
    return Path(url.removeprefix("sqlite:///"))


def _read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def check(path: Path) -> Checked:
    """``path`` is a whole satrouter database this version can open, or :class:`BackupError`."""
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    try:
        conn = _read_only(path)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a readable SQLite database: {exc}") from None
    if problems != ["ok"]:
        raise BackupError(f"{path} fails the integrity check: {'; '.join(problems[:5])}")
    missing = REQUIRED_TABLES - tables
    if missing:
        raise BackupError(f"{path} is not a satrouter database (no {', '.join(sorted(missing))})")
    latest = max(v for v, _ in migrations())
    if version > latest:
        raise BackupError(
            f"{path} has schema version {version}; this satrouter knows up to {latest}: "
            "restore it with the satrouter that wrote it"
        )
    return Checked(path, version, path.stat().st_size)


def backup(database: Path, target: Path) -> Checked:
    """Copy ``database`` (live or not) to the new file ``target``, and check the copy."""
    if target.exists():
        raise BackupError(f"{target} exists: back up to a new file")
    if not database.is_file():
        raise BackupError(f"{database} does not exist")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    # Owner-only from the start: the copy holds L402 root keys and the task-token secret.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    source, copy = _read_only(database), sqlite3.connect(partial)
    try:
        source.backup(copy)  # pages=-1: one step, one snapshot
    finally:
        copy.close()
        source.close()
    try:
        checked = check(partial)
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return Checked(target, checked.schema_version, checked.size)


@contextmanager
def exclusive(database: Path, action: str = "restore") -> Iterator[None]:
    """Hold ``database``'s lock file exclusively: no service or command has it open, and none
    can open it meanwhile; :class:`BackupError` naming ``action`` when one has."""
    lock = lock_path(database)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"{database} is open in a running satrouter (or another satrouter command): "
                "stop the service first (systemctl stop satrouter, or docker compose stop "
                f"satrouter), then {action}"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def restore(copy: Path, database: Path, *, replace: bool = False) -> Checked:
    """Put the checked backup ``copy`` in place of ``database``. Refused while the database
    is held, and over an existing database unless ``replace``."""
    check(copy)
    with exclusive(database):
        if database.exists() and not replace:
            raise BackupError(f"{database} exists: pass --replace to overwrite it")
        source, target = _read_only(copy), sqlite3.connect(database)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return check(database)
