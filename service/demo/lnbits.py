"""A real LNbits (FakeWallet funding source) for the demo and the integration tests.

Installed on first use into ``.venv-lnbits/`` (its own virtualenv: LNbits pins many packages),
started on a free loopback port with a fresh data folder, set up with a super user so wallets can
be funded, and stopped at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the project folder (an editable install)
VENV = ROOT / ".venv-lnbits"
REQUIREMENTS = ("lnbits==1.6.2", "bitstring<5")  # bolt11 needs bitstring 4
PASSWORD = "operator-pass-1"


def install() -> Path:
    """The lnbits executable, installing it once (a lock keeps parallel runs from racing)."""
    executable = VENV / "bin" / "lnbits"
    marker = VENV / ".installed"
    with open(ROOT / ".venv-lnbits.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "--quiet", *REQUIREMENTS], check=True
            )
            marker.write_text(" ".join(REQUIREMENTS))
    return executable


#: Seconds LNbits has to shut down on SIGTERM, then the most a SIGKILLed group may take to go.
STOP_GRACE = 10.0
STOP_DEADLINE = 10.0
PORT_ATTEMPTS = 3


def group_members(group: int) -> list[int]:
    """The live (not zombie) processes of a process group (Linux: from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


def _wait_until_empty(group: int, seconds: float) -> list[int]:
    """Wait (at most ``seconds``) until the group has no live process; those still left."""
    deadline = time.monotonic() + seconds
    while (left := group_members(group)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def _site_packages() -> Path:
    found = list((VENV / "lib").glob("python3*/site-packages"))
    if not found:
        raise RuntimeError(f"no site-packages in {VENV}")
    return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Wallet:
    id: str
    adminkey: str
    inkey: str


class LnbitsServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._data = tempfile.TemporaryDirectory(prefix="lnbits-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._token = ""
        self.log_path = Path(self._data.name) / "lnbits.log"
        self._log_from = 0  # where the current launch's output starts in the log

    @property
    def pid(self) -> int:
        """The launcher's process id, which is also its process group's."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def start(self) -> None:
        executable = install()
        # The free port is only free when it was picked: another program (another test run on
        # the machine) may take it before LNbits binds. LNbits then keeps running without a
        # listener, so its log is read: a failed bind is retried on another port.
        for _ in range(PORT_ATTEMPTS):
            self._launch(executable)
            try:
                if self._set_up():
                    return
            except BaseException:
                self.stop()
                raise
            self._end_group()
            self.port = _free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        self.stop()
        raise RuntimeError(f"LNbits found no free port in {PORT_ATTEMPTS} attempts")

    def _launch(self, executable: Path) -> None:
        env = {
            **os.environ,
            "LNBITS_DATA_FOLDER": self._data.name,
            "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
            "LNBITS_ADMIN_UI": "true",
            "LNBITS_RESERVE_FEE_MIN": "0",
            "LNBITS_RESERVE_FEE_PERCENT": "0",
            # Offline, LNbits would look up a BTC price (a price service, then eight exchanges)
            # for every payment and fail, which took most of its CPU: no price sources.
            "LNBITS_PRICE_AGGREGATOR_ENABLED": "false",
            "LNBITS_EXCHANGE_RATE_PROVIDERS": "[]",
            # Every caller here is 127.0.0.1; LNbits' default of 200 requests a minute per
            # address would throttle the test suite, not a real deployment's agents.
            "LNBITS_RATE_LIMIT_NO": "100000",
        }
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        # LNbits finds its static files relative to the working directory. It serves from a
        # forked worker, so it gets a process group of its own, which stop() ends whole.
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [str(executable), "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=_site_packages(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _output(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_from)
            return log.read().decode(errors="replace")

    def _set_up(self) -> bool:
        """Wait until this LNbits listens on its port and answers, then create its super
        user. False when another program had the port (LNbits says so in its log)."""
        assert self._proc is not None
        deadline = time.monotonic() + 60
        # An answer on the port alone could come from whoever took it: LNbits' own log line
        # says that it is listening there.
        listening = f"Uvicorn running on http://127.0.0.1:{self.port} "
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"LNbits exited: {self._output()[-2000:]}")
            output = self._output()
            if "error while attempting to bind" in output:
                return False
            if listening in output:
                try:
                    response = httpx.get(self.url + "/api/v1/health", timeout=1)
                    if response.status_code in (200, 307):
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        else:
            raise RuntimeError("LNbits did not start within 60 s")
        response = httpx.put(
            self.url + "/api/v1/auth/first_install",
            json={"username": "operator", "password": PASSWORD, "password_repeat": PASSWORD},
            timeout=10,
        )
        response.raise_for_status()
        self._token = response.json()["access_token"]
        return True

    def stop(self) -> None:
        """End LNbits, its forked worker included, and return only once none of its
        processes is left; then remove its data."""
        if self._proc is not None:
            self._end_group()
        self._data.cleanup()

    def _end_group(self) -> None:
        assert self._proc is not None
        group = self._proc.pid
        self._signal(signal.SIGTERM)
        _wait_until_empty(group, STOP_GRACE)
        self._signal(signal.SIGKILL)  # whatever of the group is left, the worker included
        self._proc.wait()
        # A killed process is not gone when kill() returns (its memory is still being freed,
        # and on a busy machine that takes a while): wait until no member runs.
        if left := _wait_until_empty(group, STOP_DEADLINE):
            raise RuntimeError(f"LNbits processes {left} outlived SIGKILL by {STOP_DEADLINE} s")

    def _signal(self, number: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, number)

    def create_wallet(self, name: str) -> Wallet:
        response = httpx.post(self.url + "/api/v1/account", json={"name": name}, timeout=10)
        response.raise_for_status()
        data = response.json()
        return Wallet(data["id"], data["adminkey"], data["inkey"])

    def fund(self, wallet: Wallet, sats: int) -> None:
        response = httpx.put(
            self.url + "/users/api/v1/balance",
            json={"id": wallet.id, "amount": sats},
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=10,
        )
        response.raise_for_status()

    def pay(self, payer: Wallet, bolt11: str) -> httpx.Response:
        return httpx.post(
            self.url + "/api/v1/payments",
            json={"out": True, "bolt11": bolt11},
            headers={"X-Api-Key": payer.adminkey},
            timeout=30,
        )

    def balance_msat(self, wallet: Wallet) -> int:
        response = httpx.get(
            self.url + "/api/v1/wallet", headers={"X-Api-Key": wallet.inkey}, timeout=10
        )
        response.raise_for_status()
        return int(response.json()["balance"])
