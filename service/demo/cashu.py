"""A real Cashu mint and an agent's Cashu wallet for the demo and the tests: the PyPI ``cashu``
package (nutshell) from ``.venv-cashu`` (``make cashu``). The mint runs with a fake Lightning
backend (its invoices pay themselves) on a free loopback port and a folder of its own; the
agent's wallet is nutshell's ``cashu`` command line."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the project folder (an editable install)
VENV = ROOT / ".venv-cashu"
PYTHON = VENV / "bin" / "python"


def _installed() -> None:
    if not (VENV / ".installed").exists():
        raise RuntimeError("Cashu needs the cashu package in .venv-cashu: run `make cashu`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mint:
    url: str
    folder: Path


@contextlib.contextmanager
def running_mint(input_fee_ppk: int = 100, **env: str) -> Iterator[Mint]:
    """A nutshell mint (FakeWallet unless ``env`` says otherwise), stopped at the end."""
    _installed()
    folder = Path(tempfile.mkdtemp(prefix="cashu-mint-"))
    port = free_port()
    environment = {
        **os.environ,
        "MINT_BACKEND_BOLT11_SAT": "FakeWallet",
        "MINT_LISTEN_HOST": "127.0.0.1",
        "MINT_LISTEN_PORT": str(port),
        "MINT_DATABASE": str(folder / "db"),
        "MINT_PRIVATE_KEY": "satrouter-test-mint-key",
        "MINT_INPUT_FEE_PPK": str(input_fee_ppk),
        "FAKEWALLET_DELAY_PAYMENT": "false",
        "DEBUG": "false",
        **env,
    }
    with open(folder / "mint.log", "wb") as log:
        process = subprocess.Popen(
            [str(VENV / "bin" / "mint")],
            env=environment,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/keysets", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((folder / "mint.log").read_text()[-2000:])
            time.sleep(0.2)
        yield Mint(url, folder)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class AgentWallet:
    """An agent's Cashu wallet: nutshell's own ``cashu`` command line, data in its folder."""

    def __init__(self, mint: Mint, folder: Path) -> None:
        self.mint = mint
        self.folder = folder

    def _run(self, *args: str) -> str:
        env = {**os.environ, "CASHU_DIR": str(self.folder), "MINT_URL": self.mint.url}
        env |= {"TOR": "false", "DEBUG": "false"}
        done = subprocess.run(
            [str(VENV / "bin" / "cashu"), "-y", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        return done.stdout

    def fund(self, sats: int) -> None:
        """Mint ``sats`` of ecash (the fake backend pays the mint's invoice)."""
        self._run("invoice", str(sats))

    def token(self, sats: int) -> str:
        """A ``cashuB`` token of ``sats``."""
        out = self._run("send", str(sats))
        return next(w for w in out.split() if w.startswith("cashuB"))

    def receive(self, token: str) -> None:
        self._run("receive", token)

    def balance(self) -> int:
        out = self._run("balance")
        line = next(line for line in out.splitlines() if line.startswith("Balance:"))
        return int(line.split()[1])
