"""``satrouter cashu melt`` landing for real: a nutshell mint on its own LND gRPC backend and
satrouter on its LND backend, both at the LND stand-in node (tests/lnd_node.py). The agent
mints its ecash by paying the mint's invoice through that node, pays satrouter with it, and
the melt pays satrouter's own invoice from the mint: a circular payment the node settles."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import bolt11
import httpx
import pytest

from billing import ledger
from billing.lightning.lnd import lnd_channel
from billing.lightning.lndrpc import lightning_pb2 as ln
from billing.lightning.lndrpc import router_pb2 as router
from billing.lightning.lndrpc import router_pb2_grpc as router_grpc
from service.app import create_app as create_service
from service.demo.cashu import PYTHON, AgentWallet, Mint, running_mint
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.ecash.wallet import EcashWallet, mint_id
from service.http.keys import SETTINGS, STORE
from service.tasks.engine import EngineConfig
from tests.conftest import HELLO, satrouter_command, start_emulator, until
from tests.test_cashu import cashu_settings, held_msat

from .lnd_node import MACAROON, FakeLnd, lnd_settings, start_node

pytestmark = pytest.mark.lnbits
BODY = {"model": "openai/gpt-4o", "messages": HELLO, "max_tokens": 2000}


class NodeAgentWallet(AgentWallet):
    """The agent's nutshell wallet, paying the mint's invoices through the node the mint
    itself runs on (a circular payment: the simplest honest way to have one node pay)."""

    def __init__(self, mint: Mint, folder: Path, node: FakeLnd) -> None:
        super().__init__(mint, folder)
        self.node = node

    async def fund_through_node(self, sats: int) -> None:
        out = await asyncio.to_thread(self._run, "invoice", str(sats), "--no-check")
        request = re.search(r"Invoice: (\S+)", out)
        quote = re.search(r"--id (\S+)", out)
        assert request and quote, out
        node = self.node
        channel = lnd_channel(node.address, node.tls[0], MACAROON, server_name="localhost")
        try:
            stub = router_grpc.RouterStub(channel)
            send = router.SendPaymentRequest(
                payment_request=request[1],
                fee_limit_msat=0,
                timeout_seconds=30,
                no_inflight_updates=True,
                allow_self_payment=True,
            )
            updates = [update async for update in stub.SendPaymentV2(send)]
        finally:
            await channel.close()
        assert updates[-1].status == ln.Payment.SUCCEEDED, updates[-1]
        await asyncio.to_thread(self._run, "invoice", str(sats), "--id", quote[1])


@dataclass
class Melting:
    http: httpx.AsyncClient
    app: object
    node: FakeLnd
    mint: Mint
    wallet: NodeAgentWallet
    ecash: EcashWallet
    workdir: Path


@pytest.fixture
async def melting(lnbits: LnbitsServer, tmp_path: Path) -> AsyncIterator[Melting]:
    node, _, _ = await start_node(MACAROON)
    lnd = lnd_settings(node, tmp_path)
    mint_env = {
        "MINT_BACKEND_BOLT11_SAT": "LndRPCWallet",
        "MINT_LND_RPC_ENDPOINT": lnd["lnd_grpc_host"],
        "MINT_LND_RPC_CERT": str(lnd["lnd_tls_cert"]),
        "MINT_LND_RPC_MACAROON": str(lnd["lnd_macaroon"]),
        "MINT_LND_ALLOW_SELF_PAYMENT": "true",
    }
    # The mint asks the node (served by this event loop) as it starts: start it off the loop.
    mint_cm = running_mint(input_fee_ppk=0, **mint_env)
    mint = await asyncio.to_thread(mint_cm.__enter__)
    emulator, emulator_runner = await start_emulator()
    settings = cashu_settings(tmp_path, emulator, lnbits, mint.url, wallet="unused", **lnd)
    app = create_service(settings, engine_config=EngineConfig(generation_deadline=3))
    runner, url = await serve(app)
    wallet = NodeAgentWallet(mint, tmp_path / "agent-wallet", node)
    ecash = EcashWallet(str(PYTHON), tmp_path / "cashu", (mint.url,))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            yield Melting(http, app, node, mint, wallet, ecash, tmp_path)
    finally:
        await runner.cleanup()
        await emulator_runner.cleanup()
        await asyncio.to_thread(mint_cm.__exit__, None, None, None)
        await node.server.stop(None)


async def _satrouter(melting: Melting, *args: str) -> tuple[int, str]:
    """``satrouter ARGS`` in its own process, on the service's database, wallet, mint and
    LND node."""
    settings = melting.app[SETTINGS]  # type: ignore[index]
    env = {
        "SATROUTER_DATABASE_URL": settings.database_url,
        "SATROUTER_CASHU_MINTS": settings.cashu_mints,
        "SATROUTER_CASHU_PYTHON": settings.cashu_python,
        "SATROUTER_CASHU_DIR": str(settings.cashu_dir),
        "SATROUTER_LIGHTNING": "lnd",
        "LND_GRPC_HOST": settings.lnd_grpc_host,
        "LND_TLS_CERT": str(settings.lnd_tls_cert),
        "LND_MACAROON": str(settings.lnd_macaroon),
    }
    return await satrouter_command(*args, settings=env)


async def test_a_melt_lands_on_the_operator_s_lightning_node(melting: Melting) -> None:
    await melting.wallet.fund_through_node(300)
    assert await asyncio.to_thread(melting.wallet.balance) == 300
    token = await asyncio.to_thread(melting.wallet.token, 200)
    opened = {"Authorization": f"Bearer {token}"}  # the token's ecash, held by satrouter
    paid = await melting.http.post("/v1/chat/completions", json=BODY, headers=opened)
    assert paid.status_code == 200, paid.text
    store = melting.app[STORE]  # type: ignore[index]

    async def reconciled() -> bool:
        async with store.read() as tx:
            task = await tx.task(paid.headers["X-Satrouter-Task"])
        return task is not None and task.state == "reconciled"

    await until(reconciled)
    ecash_account = ledger.ecash_account(mint_id(melting.mint.url))
    async with store.read() as tx:
        ecash_before = await ledger.balance(tx, ecash_account)
        lightning_before = await ledger.balance(tx, ledger.LIGHTNING)
    assert ecash_before == 200_000
    assert lightning_before == 0

    code, out = await _satrouter(
        melting, "cashu", "melt", "--mint", melting.mint.url, "--amount-sat", "150"
    )
    assert code == 0, out

    # The world: satrouter's invoice on the node is settled, paid by the mint's payment.
    ours = [i for i in melting.node.invoices.values() if i.memo == "satrouter: ecash melted"]
    assert len(ours) == 1
    invoice = ours[0]
    assert invoice.state == ln.Invoice.SETTLED
    assert invoice.value_msat == 150_000
    payment_hash = bolt11.decode(invoice.payment_request).payment_hash
    outgoing = melting.node.outgoing[payment_hash]
    assert outgoing.status == ln.Payment.SUCCEEDED
    assert outgoing.preimage == invoice.preimage.hex()
    assert payment_hash in out

    # The books: ecash down by the amount (and the mint's fee), Lightning up by what the node
    # received; ecash against the proofs, Lightning against the node's settled invoices.
    async with store.read() as tx:
        checked = await ledger.check(tx)
        ecash_after = await ledger.balance(tx, ecash_account)
        lightning_after = await ledger.balance(tx, ledger.LIGHTNING)
        fees = await ledger.balance(tx, ledger.ECASH_FEES)
    assert checked.ok, checked.problems
    assert lightning_after == invoice.value_msat == 150_000
    assert ecash_after == ecash_before - 150_000 - fees
    assert ecash_after == await held_msat(melting.ecash, melting.mint.url)
    code, out = await _satrouter(melting, "cashu", "balance")
    assert code == 0, out
