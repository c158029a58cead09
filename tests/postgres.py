"""A throwaway PostgreSQL cluster for the tests (and ``make bench-pg-driver``).

``initdb`` and ``pg_ctl`` make and start a cluster in a temporary directory, listening on a
free loopback port only, with trust authentication (nothing but this machine can reach it, and
it lives as long as the test session). Durability is off (``fsync``, ``full_page_writes``):
a crash loses nothing a test needs. As root, PostgreSQL refuses to run, so the server
commands run as the ``postgres`` system user (``runuser``) that Debian's package creates;
``make postgres`` installs that package when the binaries are missing.

Tests use it through the ``postgres_url`` fixture (a fresh database per test) and carry the
``postgresql`` marker::

    pytest_plugins = ["tests.postgres"]
    pytestmark = pytest.mark.postgresql
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "postgres"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT = 30
# Settings for a cluster that is thrown away: no durability, small memory, quick to start.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "50",
    "max_wal_senders": "0",
    "wal_level": "minimal",
    "logging_collector": "off",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries, or no user to run them as."""


def server_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``SATROUTER_PG_BINDIR``, else ``PATH``,
    else Debian's ``/usr/lib/postgresql/<version>/bin`` (the newest), which is off ``PATH``."""
    if configured := os.environ.get("SATROUTER_PG_BINDIR"):
        return Path(configured)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name)) or (0,)

    if candidates:
        return max(candidates, key=version)
    raise PostgresUnavailable(
        "PostgreSQL's initdb was not found (run `make postgres`, or apt-get install postgresql)"
    )


def _run_as() -> list[str]:
    """The prefix that runs a server command: PostgreSQL will not run as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, PostgreSQL needs the {SUPERUSER!r} system user "
            "(Debian's postgresql package creates it)"
        ) from None
    return ["runuser", "-u", SUPERUSER, "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Cluster:
    bindir: Path
    root: Path  # the temporary directory: data/, the socket and the log
    port: int

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _client(self, tool: str, *args: str) -> None:
        # Client tools connect over TCP as the superuser (trust on loopback): no runuser.
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        subprocess.run(
            [str(self.bindir / tool), *where, *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self._client("createdb", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._client("dropdb", "--force", "--if-exists", name)


def _pg_ctl(cluster: Cluster, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_run_as(), str(cluster.bindir / "pg_ctl"), "-D", str(cluster.datadir), *args],
        cwd=cluster.root,  # the postgres user may not be allowed into the caller's directory
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )


def _initdb(bindir: Path, root: Path) -> None:
    datadir = root / "data"
    subprocess.run(
        [
            *_run_as(),
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",  # reachable from loopback only (listen_addresses, pg_hba.conf)
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=120,
    )
    settings = "".join(f"{key} = {value}\n" for key, value in SETTINGS.items())
    # The socket goes in our own directory: /var/run/postgresql may not exist or be writable.
    settings += f"unix_socket_directories = '{root}'\n"
    with (datadir / "postgresql.conf").open("a") as conf:
        conf.write("\n# throwaway test cluster (tests/postgres.py)\n" + settings)


def _start(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    return _pg_ctl(
        cluster,
        "-l",
        str(cluster.log),
        "-o",
        f"-p {cluster.port}",
        "-w",
        "-t",
        str(START_TIMEOUT),
        "start",
        timeout=START_TIMEOUT,
    )


def _stop(cluster: Cluster) -> None:
    stopped = _pg_ctl(cluster, "-m", "fast", "-w", "-t", str(STOP_TIMEOUT), "stop", timeout=30)
    if stopped.returncode != 0 and (cluster.datadir / "postmaster.pid").exists():
        # Still running after the bounded wait: end it rather than leave it behind.
        _pg_ctl(cluster, "-m", "immediate", "-w", "-t", "10", "stop", timeout=10)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A running cluster in a temporary directory, stopped and removed on exit."""
    bindir = server_bindir()
    prefix = _run_as()
    # Not under pytest's tmp_path: its base is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="satrouter-pg-"))
    try:
        if prefix:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(root, user.pw_uid, user.pw_gid)
        _initdb(bindir, root)
        # A free port can be taken between our probe and the server's bind: try a few.
        for _attempt in range(3):
            cluster = Cluster(bindir=bindir, root=root, port=_free_port())
            started = _start(cluster)
            if started.returncode == 0:
                break
        else:
            log = cluster.log.read_text() if cluster.log.exists() else ""
            raise PostgresUnavailable(
                f"pg_ctl start failed: {started.stderr.strip()}\n{log[-2000:]}"
            )
        try:
            yield cluster
        finally:
            _stop(cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/<fresh database>``, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:16]
    url = postgres_cluster.create_database(name)
    try:
        yield url
    finally:
        postgres_cluster.drop_database(name)
