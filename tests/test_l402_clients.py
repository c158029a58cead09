"""L402 clients that nobody here wrote, against the real service: the PyPI ``l402-requests``
and the npm ``@getalby/lightning-tools`` (``fetchWithL402``, run by the machine's Node.js).
Each pays from a funded LNbits wallet, reuses its token for the same request (the answer is
replayed, nothing is paid or run again), then for another request, whose fresh challenge lets
it pay again and go on.

The Node packages come from ``tests/js/package-lock.json`` (``make js``, which ``make test``
runs first)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from l402_requests import AsyncL402Client, PaymentFailedError, WalletBase

from .conftest import CHEAP, Service

pytestmark = pytest.mark.lnbits
JS = Path(__file__).parent / "js"
DEAR = "anthropic/claude-opus-4"


class LnbitsWallet(WalletBase):
    """l402-requests' wallet interface over LNbits' payments API (an agent's own wallet)."""

    supports_preimage = True

    def __init__(self, url: str, admin_key: str) -> None:
        self.url, self.admin_key = url, admin_key
        self.paid: list[str] = []

    async def pay_invoice(self, bolt11: str) -> str:
        headers = {"X-Api-Key": self.admin_key}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30) as lnbits:
            sent = await lnbits.post("/api/v1/payments", json={"out": True, "bolt11": bolt11})
            if sent.status_code >= 300:
                raise PaymentFailedError(f"LNbits {sent.status_code}: {sent.text}", bolt11)
            payment_hash = sent.json()["payment_hash"]
            status = (await lnbits.get(f"/api/v1/payments/{payment_hash}")).json()
        if not status.get("paid") or not status.get("preimage"):
            raise PaymentFailedError(f"not settled: {status}", bolt11)
        self.paid.append(payment_hash)
        return str(status["preimage"])


def _chat(text: str, model: str = CHEAP, max_tokens: int = 30) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {"model": model, "messages": messages, "max_tokens": max_tokens}


async def test_l402_requests_pays_reuses_its_token_and_pays_a_fresh_challenge(
    service: Service,
) -> None:
    wallet = LnbitsWallet(service.lnbits.url, service.agent.adminkey)
    target = service.url + "/v1/chat/completions"
    async with AsyncL402Client(wallet=wallet, budget=None, timeout=30) as client:
        first = await client.post(target, json=_chat("first question"))
        assert first.status_code == 200, first.text
        assert len(wallet.paid) == 1
        same = await client.post(target, json=_chat("first question"))  # its cached token
        assert same.status_code == 200, same.text
        assert same.headers["X-Satrouter-Replay"] == "true"
        assert same.json() == first.json()
        assert len(wallet.paid) == 1
        # Another request: the cached token's credit is short, the 402 carries a challenge for
        # this request, and the client pays it and repeats the request by itself.
        other = await client.post(target, json=_chat("another question", DEAR, 2000))
        assert other.status_code == 200, other.text
        assert "X-Satrouter-Replay" not in other.headers
        assert len(wallet.paid) == 2
        again = await client.post(target, json=_chat("another question", DEAR, 2000))
        assert again.headers["X-Satrouter-Replay"] == "true"
        assert len(wallet.paid) == 2
    assert service.emulator.state.counters["completions"] == 2
    assert (await service.check_ledger()).ok


async def test_albys_fetch_with_l402_pays_reuses_its_token_and_pays_a_fresh_challenge(
    service: Service,
) -> None:
    node = shutil.which("node")
    assert node, "Node.js is missing: `make js` installs it"
    assert (JS / "node_modules" / "@getalby" / "lightning-tools").is_dir(), (
        "the npm packages are missing: run `make js`"
    )
    env = {
        **os.environ,
        "SATROUTER": service.url + "/v1/chat/completions",
        "LNBITS": service.lnbits.url,
        "ADMINKEY": service.agent.adminkey,
    }
    ran = await asyncio.to_thread(
        subprocess.run,
        [node, str(JS / "alby_l402.mjs")],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    steps = seen["steps"]
    assert steps["first"]["status"] == 200 and steps["first"]["paid"] is True
    assert steps["first"]["content"]
    assert steps["same"]["status"] == 200 and steps["same"]["replay"] == "true"
    assert steps["same"]["content"] == steps["first"]["content"]
    assert steps["short"]["status"] == 402
    assert steps["short"]["type"] == "urn:satrouter:problem:insufficient_balance"
    assert steps["short"]["challenge"].startswith("LSAT macaroon=")
    assert steps["renewed"]["status"] == 200 and steps["renewed"]["replay"] is None
    assert steps["renewed_again"]["replay"] == "true"
    assert seen["payments"] == 2
    assert service.emulator.state.counters["completions"] == 2
    assert (await service.check_ledger()).ok
