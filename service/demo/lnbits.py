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

    @property
    def pid(self) -> int:
        """The launcher's process id, which is also its process group's."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def start(self) -> None:
        executable = install()
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
        log = open(self.log_path, "wb")  # noqa: SIM115 (owned by the process)
        # LNbits finds its static files relative to the working directory. It serves from a
        # forked worker, so it gets a process group of its own, which stop() ends whole.
        self._proc = subprocess.Popen(
            [str(executable), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=_site_packages(),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._set_up()
        except BaseException:
            self.stop()
            raise

    def _set_up(self) -> None:
        """Wait for LNbits to answer, then create its super user."""
        assert self._proc is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"LNbits exited: {self.log_path.read_text()[-2000:]}")
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

    def stop(self) -> None:
        if self._proc is not None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
            self._signal(signal.SIGKILL)  # whatever of the group is left, the worker included
            self._proc.wait()
        self._data.cleanup()

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
