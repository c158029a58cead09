"""``satrouter serve --workers N``: refused on SQLite; N processes share one port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.cli import main
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(**settings: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SATROUTER_", "OPENROUTER_", "LNBITS_", "LND_"))
    }
    return {**env, "SATROUTER_METRICS_PORT": "0", **settings}


def test_workers_are_refused_on_sqlite_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "satrouter.db"
    monkeypatch.setenv("SATROUTER_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SATROUTER_PORT", str(free_port()))
    assert main(["serve", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers 2 needs PostgreSQL" in err
    assert "SATROUTER_DATABASE_URL=postgresql://" in err
    assert not db.exists()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "between 1 and 64"),
        ("-1", "between 1 and 64"),
        ("65", "between 1 and 64"),
        ("two", "not a number: 'two'"),
    ],
)
def test_a_worker_count_out_of_bounds_is_refused(
    value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--workers", value])
    assert exit_.value.code == 2
    assert f"argument --workers: {reason}" in capsys.readouterr().err


def test_workers_need_a_fixed_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SATROUTER_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/satrouter")
    monkeypatch.setenv("SATROUTER_PORT", "0")
    assert main(["serve", "--workers", "2"]) == 2
    assert "fixed SATROUTER_PORT" in capsys.readouterr().err


def test_on_postgresql_the_workers_start_and_one_that_fails_stops_the_command() -> None:
    # Not refused: the workers start. Nothing listens on port 1, so each one fails to open the
    # database, and the command ends with a failure rather than run short of workers.
    env = _clean_env(
        SATROUTER_DATABASE_URL="postgresql://postgres@127.0.0.1:1/satrouter",
        SATROUTER_PORT=str(free_port()),
    )
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--workers", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "(2 workers)" in done.stdout
    assert "needs PostgreSQL" not in done.stderr
    assert done.stderr.count("Process satrouter-worker-") >= 1
    assert done.returncode == 1


def test_workers_share_one_port_and_stop_on_sigterm() -> None:
    port = free_port()
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "tests.shared_port", str(port), "2"], cwd=ROOT, env=_clean_env()
    )
    try:
        answered: set[int] = set()
        # Every request on a new connection; the kernel spreads connections over the two
        # listening sockets, so both processes answer long before the attempts run out.
        for _ in range(2000):
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            except httpx.TransportError:  # not listening yet
                if supervisor.poll() is not None:
                    break
                subprocess.run(["sleep", "0.05"], check=True)
                continue
            answered.add(int(reply.text))
            if len(answered) == 2:
                break
        assert len(answered) == 2, answered
        assert supervisor.pid not in answered  # the parent only supervises
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        for pid in answered:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
