"""Clients of the 402's MPP and x402 offers that nobody here wrote, against the real service:
Alby's ``@getalby/lightning-tools`` (``fetch402`` paying each offer, ``fetchWithMpp``,
``fetchWithX402``) and ``mppx`` (the MPP SDK, with the lightning charge method declared through
its Method API), run by the machine's Node.js and paying from a funded LNbits wallet. Each pays
once, gets a completion, and reusing its credential for the same request replays the answer
without paying or running again.

The Node packages come from ``tests/js/package-lock.json`` (``make js``, which ``make test``
runs first)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import Service

pytestmark = pytest.mark.lnbits
JS = Path(__file__).parent / "js"


async def _node(service: Service, script: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "Node.js is missing: `make js` installs it"
    assert (JS / "node_modules" / "mppx").is_dir(), "the npm packages are missing: run `make js`"
    env = {
        **os.environ,
        "SATROUTER": service.url + "/v1/chat/completions",
        "LNBITS": service.lnbits.url,
        "ADMINKEY": service.agent.adminkey,
    }
    ran = await asyncio.to_thread(
        subprocess.run,
        [node, str(JS / script)],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout.strip().splitlines()[-1]))


def _decoded(header: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))


async def test_albys_clients_pay_each_offer_and_reuse_their_credentials(service: Service) -> None:
    seen = await _node(service, "alby_offers.mjs")
    runs = seen["runs"]
    assert set(runs) == {
        "fetch402_l402",
        "fetch402_mpp",
        "fetch402_x402",
        "fetchWithMpp",
        "fetchWithX402",
    }
    for name, run in runs.items():
        paid, reused = run["paid"], run["reused"]
        assert paid["status"] == 200 and paid["paid"] is True and paid["content"], (name, run)
        assert reused["status"] == 200 and reused["replay"] == "true", (name, run)
        assert reused["content"] == paid["content"] and reused["paid"] is False, (name, run)
    assert runs["fetch402_l402"]["paid"]["credentialHeader"] == "Authorization"
    for name in ("fetch402_mpp", "fetchWithMpp"):
        receipt = _decoded(runs[name]["paid"]["receipt"])
        assert receipt["status"] == "success" and receipt["method"] == "lightning"
        assert runs[name]["reused"]["receipt"]
    for name in ("fetch402_x402", "fetchWithX402"):
        assert runs[name]["paid"]["credentialHeader"] == "payment-signature"
        assert json.loads(base64.b64decode(runs[name]["paid"]["paymentResponse"]))["success"]
    assert seen["payments"] == 5
    assert service.emulator.state.counters["completions"] == 5
    assert (await service.check_ledger()).ok


async def test_mppx_pays_the_lightning_charge_offer_and_gets_a_receipt(service: Service) -> None:
    seen = await _node(service, "mppx_lightning.mjs")
    assert seen["status"] == 200 and seen["content"], seen
    assert seen["receipt"]["status"] == "success" and seen["receipt"]["method"] == "lightning"
    assert seen["receipt"]["macaroon"]
    assert seen["again"] == {"status": 200, "replay": "true", "content": seen["content"]}
    assert seen["payments"] == 1
    assert service.emulator.state.counters["completions"] == 1
    assert (await service.check_ledger()).ok
