"""The LND backend against a grpc.aio node built from the same .proto files."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from billing.lightning import InvalidInvoice, InvoiceState, LightningError, PaymentState
from billing.lightning.lnd import LndBackend, lnd_channel, macaroon_hex
from billing.lightning.lndrpc import lightning_pb2 as ln
from billing.lightning.protogen import OUT_DIR, generate
from billing.lightning.settlement import confirmed_settlements
from billing.money import Msat
from service.app import create_app
from service.config import Settings
from service.demo.loopback import serve
from service.emulator.app import DEFAULT_API_KEY

from .conftest import Emulator, task_until
from .lnd_node import MACAROON, FakeLnd, lnd_settings, start_node


class MemoryIndex:
    def __init__(self) -> None:
        self.value = 0

    async def get(self) -> int:
        return self.value

    async def set(self, value: int) -> None:
        self.value = value


@pytest.fixture
async def lnd() -> AsyncIterator[tuple[FakeLnd, str, bytes]]:
    node, address, cert = await start_node(MACAROON)
    yield node, address, cert
    await node.server.stop(None)


def _backend(address: str, cert: bytes, index: MemoryIndex, macaroon: str = MACAROON) -> LndBackend:
    channel = lnd_channel(address, cert, macaroon, server_name="localhost")
    return LndBackend(channel, index, max_backoff=0.2)


async def test_invoice_lifecycle(lnd: tuple[FakeLnd, str, bytes]) -> None:
    node, address, cert = lnd
    backend = _backend(address, cert, MemoryIndex())
    try:
        created = await backend.create_invoice(Msat(21_000), "task t1", 600)
        assert created.bolt11.startswith("lnbcrt210n")
        status = await backend.invoice_status(created.payment_hash)
        assert status.state is InvoiceState.OPEN
        assert status.preimage is None
        node.settle(created.payment_hash)
        status = await backend.invoice_status(created.payment_hash)
        assert status.settled
        assert status.amount_paid == Msat(21_000)
        assert status.preimage is not None
        assert hashlib.sha256(bytes.fromhex(status.preimage)).hexdigest() == created.payment_hash
    finally:
        await backend.close()


async def test_wrong_macaroon_is_refused(lnd: tuple[FakeLnd, str, bytes]) -> None:
    _, address, cert = lnd
    backend = _backend(address, cert, MemoryIndex(), macaroon="00" * 10)
    try:
        with pytest.raises(LightningError, match="UNAUTHENTICATED"):
            await backend.create_invoice(Msat(1_000), "x", 60)
    finally:
        await backend.close()


async def test_subscription_resumes_from_the_stored_settle_index(
    lnd: tuple[FakeLnd, str, bytes],
) -> None:
    node, address, cert = lnd
    index = MemoryIndex()
    backend = _backend(address, cert, index)
    first = await backend.create_invoice(Msat(1_000), "a", 600)
    second = await backend.create_invoice(Msat(2_000), "b", 600)
    hints = backend.hints()
    assert await anext(hints) is None  # connected
    await asyncio.sleep(0.1)  # let the subscription register
    node.settle(first.payment_hash)
    assert await asyncio.wait_for(anext(hints), 5) == first.payment_hash
    await hints.aclose()
    await backend.close()
    # While nobody listens, the first hint's index is recorded only once it was taken.
    assert index.value == 0
    node.settle(second.payment_hash)

    backend = _backend(address, cert, index)
    index.value = 1  # what a consumer that handled the first hint would have stored
    hints = backend.hints()
    assert await anext(hints) is None
    # LND replays only what settled after index 1: the second invoice, not the first.
    assert await asyncio.wait_for(anext(hints), 5) == second.payment_hash
    await hints.aclose()
    await backend.close()


async def test_index_advances_after_the_hint_is_taken(lnd: tuple[FakeLnd, str, bytes]) -> None:
    node, address, cert = lnd
    index = MemoryIndex()
    backend = _backend(address, cert, index)
    invoices = [await backend.create_invoice(Msat(1_000), str(i), 600) for i in range(3)]
    settlements = confirmed_settlements(backend, _no_open)
    waiter = asyncio.ensure_future(anext(settlements))
    await asyncio.sleep(0.1)
    for invoice in invoices:
        node.settle(invoice.payment_hash)
    seen = [(await waiter).payment_hash]
    seen += [(await asyncio.wait_for(anext(settlements), 5)).payment_hash for _ in range(2)]
    assert seen == [i.payment_hash for i in invoices]
    assert index.value == 2  # the third is advanced when the consumer asks for the next
    await settlements.aclose()
    await backend.close()


async def _no_open() -> list[str]:
    return []


async def test_reconnects_when_the_subscription_drops(lnd: tuple[FakeLnd, str, bytes]) -> None:
    node, address, cert = lnd
    backend = _backend(address, cert, MemoryIndex())
    hints = backend.hints()
    try:
        assert await anext(hints) is None
        await asyncio.sleep(0.1)
        node.drop_subscriptions()
        assert await asyncio.wait_for(anext(hints), 10) is None  # reconnected: re-check open
        invoice = await backend.create_invoice(Msat(1_000), "after reconnect", 600)
        await asyncio.sleep(0.1)
        node.settle(invoice.payment_hash)
        assert await asyncio.wait_for(anext(hints), 5) == invoice.payment_hash
    finally:
        await hints.aclose()
        await backend.close()


ADMIN = {"Authorization": "Bearer admin-secret-for-tests"}


async def test_payment_within_fee_limit(lnd: tuple[FakeLnd, str, bytes]) -> None:
    node, address, cert = lnd
    node.opening_local_msat = 1_000_000
    backend = _backend(address, cert, MemoryIndex())
    try:
        assert await backend.wallet_balance() == Msat(1_000_000)
        bolt = node.external_invoice(50_000)
        payment = await backend.send_payment(bolt, fee_limit=Msat(2_000))
        assert payment.state is PaymentState.SUCCEEDED
        assert payment.fee == Msat(1_000)
        assert payment.preimage is not None
        assert hashlib.sha256(bytes.fromhex(payment.preimage)).hexdigest() == payment.payment_hash
        failed = await backend.send_payment(node.external_invoice(50_000), fee_limit=Msat(500))
        assert failed.state is PaymentState.FAILED
        assert "NO_ROUTE" in failed.reason
        assert await backend.payment_status(payment.payment_hash) == payment
        # Sent 50,000 msat and a 1,000 msat fee from what the node had.
        assert await backend.wallet_balance() == Msat(node.opening_local_msat - 51_000)
        assert await backend.payment_status("ab" * 32) is None
        with pytest.raises(InvalidInvoice, match="without an amount"):
            await backend.send_payment(node.external_invoice(None), fee_limit=Msat(2_000))
        with pytest.raises(InvalidInvoice):
            await backend.send_payment("lnbc1notaninvoice", fee_limit=Msat(2_000))
    finally:
        await backend.close()


def test_macaroon_files_in_binary_or_hex() -> None:
    assert macaroon_hex(b"\x02\x01\x03") == "020103"
    assert macaroon_hex(b"020103\n") == "020103"


def test_field_numbers_are_lnds_on_the_wire() -> None:
    # value_msat is field 23 (varint): tag (23 << 3) | 0 = 184 = b"\xb8\x01".
    assert ln.Invoice(value_msat=5).SerializeToString() == b"\xb8\x01\x05"
    # settle_index is field 2 of InvoiceSubscription.
    assert ln.InvoiceSubscription(settle_index=7).SerializeToString() == b"\x10\x07"
    # r_hash is field 2 of PaymentHash (length-delimited): tag 0x12.
    assert ln.PaymentHash(r_hash=b"\x01").SerializeToString() == b"\x12\x01\x01"
    assert ln.Invoice.DESCRIPTOR.full_name == "lnrpc.Invoice"
    assert ln.DESCRIPTOR.services_by_name["Lightning"].full_name == "lnrpc.Lightning"


def test_send_payment_request_is_current_lnds() -> None:
    from billing.lightning.lndrpc import router_pb2 as router

    # LND removed outgoing_chan_id (8, now reserved) for outgoing_chan_ids: field 19, packed
    # repeated uint64: tag (19 << 3) | 2 = b"\x9a\x01", length 1, value 5.
    fields = router.SendPaymentRequest.DESCRIPTOR.fields_by_number
    assert 8 not in fields
    assert fields[19].name == "outgoing_chan_ids"
    wire = router.SendPaymentRequest(outgoing_chan_ids=[5]).SerializeToString()
    assert wire == b"\x9a\x01\x01\x05"
    assert router.TrackPaymentRequest(no_inflight_updates=True).SerializeToString() == b"\x10\x01"


def test_generated_stubs_match_the_proto_sources() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    committed = {p.name: p.read_text() for p in OUT_DIR.iterdir() if p.is_file()}
    assert set(fresh) == set(committed)
    for name, text in fresh.items():
        assert _normalised(committed[name]) == _normalised(text), f"{name} is stale: make proto"


def _normalised(text: str) -> str:
    """Generator version stamps differ between grpcio-tools releases; the content must not."""
    skip = ("# Protobuf Python Version", "GRPC_GENERATED_VERSION =")
    lines = [line for line in text.splitlines() if not line.startswith(skip)]
    out = "\n".join(lines)
    import re

    return re.sub(r"ValidateProtobufRuntimeVersion\([^)]*\)", "", out)


def test_grpc_is_the_real_library() -> None:
    assert hasattr(grpc, "aio")


async def test_settle_index_is_kept_in_the_database(tmp_path: Path) -> None:
    from billing.lightning.lnd import StoredIndex
    from billing.store import open_store

    store = await open_store(f"sqlite:///{tmp_path}/idx.db")
    try:
        index = StoredIndex(store)
        assert await index.get() == 0
        await index.set(42)
        assert await StoredIndex(store).get() == 42
    finally:
        await store.close()


async def test_a_task_paid_over_lnd_runs_and_reconciles(
    emulator: Emulator, lnd: tuple[FakeLnd, str, bytes], tmp_path: Path
) -> None:
    """The whole app on the LND backend: invoice from AddInvoice, the settlement from the
    invoice subscription (confirmed with LookupInvoice), the call, the reconciliation."""
    node = lnd[0]
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/satrouter.db",
        openrouter_base_url=emulator.base_url,
        openrouter_api_key=DEFAULT_API_KEY,
        **lnd_settings(node, tmp_path),
        btc_usd="100000",
        catalog_cache=tmp_path / "models.json",
        admin_token="admin-secret-for-tests",
        metrics_port=0,
    )
    node.opening_local_msat = 5_000_000
    runner, url = await serve(create_app(settings))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            messages = [{"role": "user", "content": "Hello over LND [[tokens=5]]"}]
            task = (await http.post("/v1/tasks", json={"messages": messages})).json()
            assert task["status"] == "awaiting_payment"
            assert task["invoice"]["payment_hash"] in node.invoices
            node.settle(task["invoice"]["payment_hash"])
            done = await task_until(http, task, "reconciled")
            # The books match the node's channel balance (its opening sats are the owner's).
            status = (await http.get("/admin/status", headers=ADMIN)).json()
    finally:
        await runner.cleanup()
    lightning = status["world"]["holdings"]["lightning"]
    assert lightning["matches"] is True and lightning["difference"] == 0
    assert lightning["world"] == node.opening_local_msat + task["invoice"]["amount_msat"]
    assert done["charge_msat"] + done["change_msat"] == task["invoice"]["amount_msat"]
    assert done["result"]["choices"][0]["message"]["content"]
