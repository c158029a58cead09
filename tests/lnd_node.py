"""A stand-in LND node for tests: a grpc.aio server implementing the Lightning and Router
services from the same generated stubs satrouter uses, over TLS with macaroon auth."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bolt11
import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from billing.lightning.lndrpc import lightning_pb2 as ln
from billing.lightning.lndrpc import lightning_pb2_grpc as ln_grpc
from billing.lightning.lndrpc import router_pb2_grpc as router_grpc

MACAROON = "0201036c6e6402f801030a10" + "ab" * 20  # hex, as satrouter sends it
NODE_KEY = "c" * 64  # secp256k1 private key the node signs its invoices with
ROUTING_FEE_MSAT = 1_000


def self_signed_cert() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def make_invoice(
    payment_hash: str,
    amount_msat: int | None,
    memo: str,
    expiry: int,
    description_hash: str | None = None,
) -> str:
    tags = [
        bolt11.Tag(bolt11.TagChar.payment_hash, payment_hash),
        bolt11.Tag(bolt11.TagChar.expire_time, expiry),
        bolt11.Tag(bolt11.TagChar.payment_secret, secrets.token_hex(32)),
    ]
    if memo:
        tags.insert(1, bolt11.Tag(bolt11.TagChar.description, memo))
    else:  # an empty ``d`` field does not decode (a mint asks for one): its hash stands in
        empty = description_hash or hashlib.sha256(b"").hexdigest()
        tags.insert(1, bolt11.Tag(bolt11.TagChar.description_hash, empty))
    invoice = bolt11.Bolt11(
        currency="bcrt",
        date=int(time.time()),
        amount_msat=bolt11.MilliSatoshi(amount_msat) if amount_msat else None,
        tags=bolt11.Tags(tags),
    )
    return str(bolt11.encode(invoice, NODE_KEY))


def external_style_invoice(amount_msat: int) -> str:
    """A valid invoice of this stand-in node, for a payment hash no wallet knows."""
    return make_invoice(secrets.token_hex(32), amount_msat, "elsewhere", 600)


@dataclass
class _Invoice:
    preimage: bytes
    value_msat: int
    memo: str
    expiry: int
    payment_request: str
    add_index: int
    state: int = ln.Invoice.OPEN
    settle_index: int = 0
    settle_date: int = 0

    def message(self) -> ln.Invoice:
        return ln.Invoice(
            memo=self.memo,
            r_preimage=self.preimage,
            r_hash=hashlib.sha256(self.preimage).digest(),
            value_msat=self.value_msat,
            payment_request=self.payment_request,
            expiry=self.expiry,
            add_index=self.add_index,
            settle_index=self.settle_index,
            settle_date=self.settle_date,
            state=self.state,
            amt_paid_msat=self.value_msat if self.state == ln.Invoice.SETTLED else 0,
        )


@dataclass
class FakeLnd(ln_grpc.LightningServicer, router_grpc.RouterServicer):
    macaroon: str
    invoices: dict[str, _Invoice] = field(default_factory=dict)
    external: dict[str, bytes] = field(default_factory=dict)  # hash -> preimage, payable
    settled: int = 0
    subscribers: list[asyncio.Queue[ln.Invoice | None]] = field(default_factory=list)
    outgoing: dict[str, _Outgoing] = field(default_factory=dict)
    #: Outgoing payments stay IN_FLIGHT until :meth:`finish` (a payee holding the payment).
    hold_payments: bool = False
    #: "end": SendPaymentV2 ends after an IN_FLIGHT update; "drop": it fails UNAVAILABLE.
    send_stream_cut: str | None = None
    routing_fee_msat: int = ROUTING_FEE_MSAT
    #: The payment hashes TrackPaymentV2 was asked about, one entry per call.
    tracked: list[str] = field(default_factory=list)
    #: False: pay whatever the route costs, over the limit too (as LNbits' API does).
    enforce_fee_limit: bool = True
    #: The node's own msat in its channels before any invoice or payment.
    opening_local_msat: int = 0
    server: Any = None
    tls: tuple[bytes, bytes] = (b"", b"")
    address: str = ""

    async def _auth(self, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("macaroon") != self.macaroon:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "verification failed")

    # -- test controls --
    def settle(self, payment_hash: str) -> None:
        invoice = self.invoices[payment_hash]
        self.settled += 1
        invoice.state = ln.Invoice.SETTLED
        invoice.settle_index = self.settled
        invoice.settle_date = int(time.time())
        for queue in self.subscribers:
            queue.put_nowait(invoice.message())

    def drop_subscriptions(self) -> None:
        """End every invoice subscription with UNAVAILABLE, as a restarting node does."""
        for queue in self.subscribers:
            queue.put_nowait(None)

    def external_invoice(self, amount_msat: int | None) -> str:
        preimage = secrets.token_bytes(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        self.external[payment_hash] = preimage
        return make_invoice(payment_hash, amount_msat, "withdrawal", 600)

    # -- Lightning --
    async def AddInvoice(self, request: ln.Invoice, context: Any) -> ln.AddInvoiceResponse:
        await self._auth(context)
        preimage = secrets.token_bytes(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        expiry = request.expiry or 86_400  # LND's default when none is asked for
        bolt = make_invoice(
            payment_hash,
            request.value_msat,
            request.memo,
            expiry,
            bytes(request.description_hash).hex() or None,
        )
        self.invoices[payment_hash] = _Invoice(
            preimage,
            request.value_msat,
            request.memo,
            expiry,
            bolt,
            add_index=len(self.invoices) + 1,
        )
        return ln.AddInvoiceResponse(
            r_hash=bytes.fromhex(payment_hash),
            payment_request=bolt,
            add_index=len(self.invoices),
        )

    async def LookupInvoice(self, request: ln.PaymentHash, context: Any) -> ln.Invoice:
        await self._auth(context)
        invoice = self.invoices.get(bytes(request.r_hash).hex())
        if invoice is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unable to locate invoice")
        assert invoice is not None
        return invoice.message()

    async def SubscribeInvoices(
        self, request: ln.InvoiceSubscription, context: Any
    ) -> AsyncIterator[ln.Invoice]:
        await self._auth(context)
        queue: asyncio.Queue[ln.Invoice | None] = asyncio.Queue()
        self.subscribers.append(queue)
        try:
            missed = sorted(
                (
                    i
                    for i in self.invoices.values()
                    if request.settle_index and i.settle_index > request.settle_index
                ),
                key=lambda i: i.settle_index,
            )
            for invoice in missed:
                yield invoice.message()
            while True:
                invoice = await queue.get()
                if invoice is None:  # drop_subscriptions()
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "node restarting")
                yield invoice
        finally:
            self.subscribers.remove(queue)

    # -- Router --
    async def SendPaymentV2(self, request: Any, context: Any) -> AsyncIterator[ln.Payment]:
        await self._auth(context)
        decoded = bolt11.decode(request.payment_request)
        payment_hash = decoded.payment_hash
        if payment_hash in self.outgoing:  # LND pays an invoice once
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "payment is in transition")
        own = self.invoices.get(payment_hash)
        if own is not None and not request.allow_self_payment:
            # LND refuses to route to itself unless asked to
            await context.abort(grpc.StatusCode.UNKNOWN, "no self-payments allowed")
        payment = _Outgoing(payment_hash, int(decoded.amount_msat), circular=own is not None)
        self.outgoing[payment_hash] = payment
        preimage = self._payable(payment)
        route_fee = 0 if payment.circular else self.routing_fee_msat
        limit_ok = request.fee_limit_msat >= route_fee or not self.enforce_fee_limit
        if self.send_stream_cut == "end" or not request.no_inflight_updates:
            yield payment.message()  # IN_FLIGHT
        if self.send_stream_cut == "end":
            return  # the stream ends while the payment is still in flight
        if self.send_stream_cut == "drop":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        if preimage is None or not limit_ok:
            self.finish(payment_hash, succeed=False)
        elif not self.hold_payments:
            self.finish(payment_hash, succeed=True)
        await payment.changed.wait()
        yield payment.message()

    async def ChannelBalance(self, request: Any, context: Any) -> ln.ChannelBalanceResponse:
        """What the channels hold: received less sent (with fees); payments in flight are
        unsettled, off the local balance, as in LND."""
        await self._auth(context)
        received = sum(
            i.value_msat for i in self.invoices.values() if i.state == ln.Invoice.SETTLED
        )
        sent = sum(
            p.value_msat + p.fee_msat
            for p in self.outgoing.values()
            if p.status == ln.Payment.SUCCEEDED
        )
        flight = sum(
            p.value_msat for p in self.outgoing.values() if p.status == ln.Payment.IN_FLIGHT
        )
        local = self.opening_local_msat + received - sent - flight
        return ln.ChannelBalanceResponse(
            local_balance=ln.Amount(sat=local // 1000, msat=local),
            unsettled_local_balance=ln.Amount(sat=flight // 1000, msat=flight),
        )

    async def TrackPaymentV2(self, request: Any, context: Any) -> AsyncIterator[ln.Payment]:
        await self._auth(context)
        self.tracked.append(bytes(request.payment_hash).hex())
        payment = self.outgoing.get(bytes(request.payment_hash).hex())
        if payment is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "payment isn't initiated")
        assert payment is not None
        if payment.status != ln.Payment.IN_FLIGHT or not request.no_inflight_updates:
            yield payment.message()  # the current state first
        if payment.status == ln.Payment.IN_FLIGHT:
            await payment.changed.wait()
            yield payment.message()

    def _payable(self, payment: _Outgoing) -> bytes | None:
        """The preimage a payment would get: an external payee's, or (a circular payment of
        this node's own open invoice, for its full amount) the invoice's own."""
        if not payment.circular:
            return self.external.get(payment.payment_hash)
        invoice = self.invoices[payment.payment_hash]
        if invoice.state != ln.Invoice.OPEN or payment.value_msat < invoice.value_msat:
            return None
        return invoice.preimage

    def finish(self, payment_hash: str, *, succeed: bool) -> None:
        """End an outgoing payment (one held by ``hold_payments`` or cut off in flight)."""
        payment = self.outgoing[payment_hash]
        preimage = self._payable(payment)
        if succeed and preimage is not None:
            payment.status = ln.Payment.SUCCEEDED
            payment.preimage = preimage.hex()
            # A circular payment's HTLC arrives at this node's own invoice: it settles it, and
            # no other node took a routing fee.
            payment.fee_msat = 0 if payment.circular else self.routing_fee_msat
            if payment.circular:
                self.settle(payment_hash)
        else:
            payment.status = ln.Payment.FAILED
            payment.failure_reason = ln.FAILURE_REASON_NO_ROUTE
        payment.changed.set()


@dataclass
class _Outgoing:
    payment_hash: str
    value_msat: int
    status: int = ln.Payment.IN_FLIGHT
    preimage: str = ""
    fee_msat: int = 0
    failure_reason: int = ln.FAILURE_REASON_NONE
    #: to one of this node's own invoices (``allow_self_payment``)
    circular: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def message(self) -> ln.Payment:
        return ln.Payment(
            payment_hash=self.payment_hash,
            status=self.status,  # type: ignore[arg-type]
            payment_preimage=self.preimage,
            value_msat=self.value_msat,
            fee_msat=self.fee_msat,
            failure_reason=self.failure_reason,  # type: ignore[arg-type]
        )


async def serve(node: FakeLnd, address: str, tls: tuple[bytes, bytes]) -> grpc.aio.Server:
    cert, key = tls
    server = grpc.aio.server()
    ln_grpc.add_LightningServicer_to_server(node, server)
    router_grpc.add_RouterServicer_to_server(node, server)
    port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    node.server, node.tls, node.address = server, tls, f"127.0.0.1:{port}"
    return server


async def start_node(macaroon: str) -> tuple[FakeLnd, str, bytes]:
    node = FakeLnd(macaroon)
    await serve(node, "127.0.0.1:0", self_signed_cert())
    return node, node.address, node.tls[0]


def lnd_settings(node: FakeLnd, workdir: Path) -> dict[str, Any]:
    """satrouter's LND settings for ``node``: its certificate and macaroon written to files."""
    (workdir / "tls.cert").write_bytes(node.tls[0])
    (workdir / "admin.macaroon").write_bytes(bytes.fromhex(node.macaroon))
    return {
        "lightning": "lnd",
        "lnd_grpc_host": "localhost:" + node.address.rsplit(":", 1)[1],  # the certificate's name
        "lnd_tls_cert": workdir / "tls.cert",
        "lnd_macaroon": workdir / "admin.macaroon",
    }
