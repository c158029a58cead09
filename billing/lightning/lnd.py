"""LND over gRPC (``grpc.aio``), with stubs generated from ``proto/``.

Authentication is LND's: the node's TLS certificate pins the channel and the hex macaroon rides
as ``macaroon`` call metadata. ``SubscribeInvoices`` resumes from the last ``settle_index`` this
process handled (kept by an :class:`IndexStore`), so settlements made while disconnected are
replayed by LND itself; the index advances only after the consumer has taken the hint.

Payments go out with ``SendPaymentV2`` under LND's own fee limit. An ``IN_FLIGHT`` update, a
stream that ends or drops before a final update, or an error while LND may hold the payment is
*pending*, never failed; ``TrackPaymentV2`` (its first update is the payment's current state)
tells how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc

from ..money import Msat
from ..store import Store
from . import (
    CreatedInvoice,
    Hint,
    InvoiceState,
    InvoiceStatus,
    LightningError,
    PaymentOutcome,
    PaymentState,
)
from .bolt11 import InvalidInvoice, check_invoice, decode_invoice
from .lndrpc import lightning_pb2 as ln
from .lndrpc import lightning_pb2_grpc as ln_grpc
from .lndrpc import router_pb2 as router
from .lndrpc import router_pb2_grpc as router_grpc

log = logging.getLogger(__name__)

_STATES = {
    ln.Invoice.OPEN: InvoiceState.OPEN,
    ln.Invoice.SETTLED: InvoiceState.SETTLED,
    ln.Invoice.CANCELED: InvoiceState.CANCELED,
    ln.Invoice.ACCEPTED: InvoiceState.ACCEPTED,
}


#: Unary calls wait (boundedly) for a channel that is reconnecting instead of failing at once.
_CALL: dict[str, Any] = {"wait_for_ready": True, "timeout": 15.0}


class IndexStore(Protocol):
    async def get(self) -> int: ...
    async def set(self, value: int) -> None: ...


class StoredIndex:
    """The settle index, kept in the database's key-value table."""

    def __init__(self, store: Store, key: str = "lnd.settle_index") -> None:
        self._store = store
        self._key = key

    async def get(self) -> int:
        async with self._store.read() as tx:
            value = await tx.get_value(self._key)
        return int(value) if value else 0

    async def set(self, value: int) -> None:
        async with self._store.transaction() as tx:
            await tx.set_value(self._key, str(value))


class _MacaroonAuth(grpc.AuthMetadataPlugin):  # type: ignore[misc]
    def __init__(self, macaroon_hex: str) -> None:
        self._macaroon = macaroon_hex

    def __call__(self, context: Any, callback: Any) -> None:
        callback((("macaroon", self._macaroon),), None)


def lnd_channel(
    host: str, tls_cert: bytes, macaroon_hex: str, *, server_name: str | None = None
) -> grpc.aio.Channel:
    """A TLS channel to LND with the macaroon on every call."""
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=tls_cert),
        grpc.metadata_call_credentials(_MacaroonAuth(macaroon_hex)),
    )
    options: list[tuple[str, str | int]] = [("grpc.max_receive_message_length", 50 * 1024 * 1024)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(host, credentials, options=options)


class LndBackend:
    name = "lnd"

    def __init__(
        self, channel: grpc.aio.Channel, index: IndexStore, *, max_backoff: float = 30.0
    ) -> None:
        self._channel = channel
        self._lightning = ln_grpc.LightningStub(channel)  # type: ignore[no-untyped-call]
        self._router = router_grpc.RouterStub(channel)  # type: ignore[no-untyped-call]
        self._index = index
        self._max_backoff = max_backoff

    async def close(self) -> None:
        await self._channel.close()

    async def create_invoice(self, amount: Msat, memo: str, expiry: int) -> CreatedInvoice:
        if amount.value <= 0:
            raise ValueError("invoice amount must be positive")
        try:
            added = await self._lightning.AddInvoice(
                ln.Invoice(memo=memo, value_msat=amount.value, expiry=expiry), **_CALL
            )
        except grpc.aio.AioRpcError as exc:
            raise LightningError(f"LND AddInvoice: {exc.code().name}") from None
        payment_hash = bytes(added.r_hash).hex()
        try:
            decoded = check_invoice(added.payment_request, amount=amount, payment_hash=payment_hash)
        except InvalidInvoice as exc:
            raise LightningError(f"LND returned another invoice than asked: {exc}") from None
        return CreatedInvoice(payment_hash, added.payment_request, amount, decoded.expires_at)

    async def invoice_status(self, payment_hash: str) -> InvoiceStatus:
        try:
            invoice = await self._lightning.LookupInvoice(
                ln.PaymentHash(r_hash=bytes.fromhex(payment_hash)), **_CALL
            )
        except grpc.aio.AioRpcError as exc:
            raise LightningError(f"LND LookupInvoice: {exc.code().name}") from None
        except ValueError:
            raise ValueError("payment hash must be hex") from None
        state = _STATES.get(invoice.state, InvoiceState.OPEN)
        settled = state is InvoiceState.SETTLED
        return InvoiceStatus(
            payment_hash,
            state,
            Msat(invoice.amt_paid_msat if settled else 0),
            preimage=bytes(invoice.r_preimage).hex() if settled else None,
            settled_at=float(invoice.settle_date) if settled else None,
        )

    def fee_floor(self, amount: Msat) -> Msat:
        return Msat(0)  # SendPaymentV2 enforces fee_limit_msat itself

    async def wallet_balance(self) -> Msat:
        """The node's spendable channel balance: outgoing HTLCs in flight are already off it
        (LND counts them in ``unsettled_local_balance``); on-chain funds are not Lightning."""
        try:
            balance = await self._lightning.ChannelBalance(ln.ChannelBalanceRequest(), **_CALL)
        except grpc.aio.AioRpcError as exc:
            raise LightningError(f"LND ChannelBalance: {exc.code().name}") from None
        return Msat(balance.local_balance.msat)

    async def hints(self) -> AsyncIterator[Hint]:
        delay = 0.5
        while True:
            settle_index = await self._index.get()
            # LND sends nothing on a new subscription until an invoice changes, so "connected"
            # means the channel is up, not that the stream has spoken.
            await self._channel.channel_ready()
            stream = self._lightning.SubscribeInvoices(
                ln.InvoiceSubscription(settle_index=settle_index), wait_for_ready=True
            )
            try:
                yield None  # (re)connected: re-check what is open
                async for invoice in stream:
                    delay = 0.5
                    if invoice.state != ln.Invoice.SETTLED:
                        continue
                    yield bytes(invoice.r_hash).hex()
                    if invoice.settle_index > settle_index:
                        settle_index = invoice.settle_index
                        await self._index.set(settle_index)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "LND invoice subscription lost (%s); reconnecting in %.1f s",
                    exc.code().name,
                    delay,
                )
            finally:
                stream.cancel()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._max_backoff)

    async def payment_status(self, payment_hash: str) -> PaymentOutcome | None:
        try:
            request = router.TrackPaymentRequest(payment_hash=bytes.fromhex(payment_hash))
        except ValueError:
            raise ValueError("payment hash must be hex") from None
        # With in-flight updates on, the first update is the current state: read it and hang up
        # rather than wait for a held payment to end.
        stream = self._router.TrackPaymentV2(request, **_CALL)
        try:
            async for update in stream:
                return _outcome(payment_hash, update)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise LightningError(f"LND TrackPaymentV2: {exc.code().name}") from None
        finally:
            stream.cancel()
        raise LightningError("LND TrackPaymentV2 ended without an update")

    async def send_payment(
        self, bolt11: str, *, fee_limit: Msat, give_up_after: int = 60
    ) -> PaymentOutcome:
        decoded = decode_invoice(bolt11)
        if decoded.amount is None:
            raise InvalidInvoice("refusing to pay an invoice without an amount")
        if decoded.expired():
            raise InvalidInvoice("invoice has expired")
        request = router.SendPaymentRequest(
            payment_request=bolt11,
            fee_limit_msat=fee_limit.value,
            timeout_seconds=give_up_after,
            no_inflight_updates=True,
        )
        last: ln.Payment | None = None
        try:
            async for update in self._router.SendPaymentV2(request):
                last = update
                if update.status in (ln.Payment.SUCCEEDED, ln.Payment.FAILED):
                    break
        except grpc.aio.AioRpcError as exc:
            # LND refuses a payment it already holds (ALREADY_EXISTS) and streams can drop:
            # either way the payment may be out there. Ask; only "no such payment" after LND
            # itself answered means nothing was sent.
            reason = f"LND SendPaymentV2: {exc.code().name}: {exc.details()}"
            try:
                known = await self.payment_status(decoded.payment_hash)
            except LightningError:
                return _pending(decoded, reason)
            if known is not None:
                return known
            state = PaymentState.PENDING if exc.code() in _MAYBE_SENT else PaymentState.FAILED
            return PaymentOutcome(decoded.payment_hash, state, reason=reason)
        if last is None:
            return _pending(decoded, "the payment stream ended without an update")
        return _outcome(decoded.payment_hash, last)


#: Errors after which LND may have taken the payment even if it cannot show it yet.
_MAYBE_SENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ALREADY_EXISTS,
)


def _pending(decoded: Any, reason: str) -> PaymentOutcome:
    return PaymentOutcome(decoded.payment_hash, PaymentState.PENDING, reason=reason)


def _outcome(payment_hash: str, payment: ln.Payment) -> PaymentOutcome:
    if payment.status == ln.Payment.SUCCEEDED:
        return PaymentOutcome(
            payment_hash,
            PaymentState.SUCCEEDED,
            fee=Msat(payment.fee_msat),
            preimage=payment.payment_preimage,
        )
    if payment.status == ln.Payment.FAILED:
        reason = ln.PaymentFailureReason.Name(payment.failure_reason)
        return PaymentOutcome(payment_hash, PaymentState.FAILED, reason=reason)
    return PaymentOutcome(payment_hash, PaymentState.PENDING, reason="in flight")


def macaroon_hex(raw: bytes) -> str:
    """LND macaroon files are binary; a file that already holds hex is accepted as is."""
    text = raw.strip()
    try:
        return bytes.fromhex(text.decode()).hex()
    except (UnicodeDecodeError, ValueError):
        return raw.hex()


__all__ = ["IndexStore", "LndBackend", "StoredIndex", "lnd_channel", "macaroon_hex"]
