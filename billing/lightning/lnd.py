"""LND over gRPC (``grpc.aio``), with stubs generated from ``proto/``.

Authentication is LND's: the node's TLS certificate pins the channel and the hex macaroon rides
as ``macaroon`` call metadata. ``SubscribeInvoices`` resumes from the last ``settle_index`` this
process handled (kept by an :class:`IndexStore`), so settlements made while disconnected are
replayed by LND itself; the index advances only after the consumer has taken the hint.
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
    Payment,
    PaymentFailed,
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

    async def payment_status(self, payment_hash: str) -> Payment | None:
        request = router.TrackPaymentRequest(
            payment_hash=bytes.fromhex(payment_hash), no_inflight_updates=True
        )
        try:
            final = await _final(self._router.TrackPaymentV2(request))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise LightningError(f"LND TrackPaymentV2: {exc.code().name}") from None
        if final is None or final.status != ln.Payment.SUCCEEDED:
            return None
        return Payment(
            payment_hash, final.payment_preimage, Msat(final.value_msat), Msat(final.fee_msat)
        )

    async def pay_invoice(
        self, bolt11: str, *, fee_limit: Msat, give_up_after: int = 60
    ) -> Payment:
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
        try:
            final = await _final(self._router.SendPaymentV2(request))
        except grpc.aio.AioRpcError as exc:
            raise PaymentFailed(f"LND SendPaymentV2: {exc.code().name}") from None
        if final is None or final.status != ln.Payment.SUCCEEDED:
            reason = ln.PaymentFailureReason.Name(final.failure_reason) if final else "no answer"
            raise PaymentFailed(f"payment failed: {reason}")
        return Payment(
            decoded.payment_hash,
            final.payment_preimage,
            Msat(final.value_msat),
            Msat(final.fee_msat),
        )


async def _final(updates: Any) -> ln.Payment | None:
    """The last update of a payment stream: once it succeeded or failed, or when it ends."""
    final: ln.Payment | None = None
    async for update in updates:
        final = update
        if update.status in (ln.Payment.SUCCEEDED, ln.Payment.FAILED):
            break
    return final


def macaroon_hex(raw: bytes) -> str:
    """LND macaroon files are binary; a file that already holds hex is accepted as is."""
    text = raw.strip()
    try:
        return bytes.fromhex(text.decode()).hex()
    except (UnicodeDecodeError, ValueError):
        return raw.hex()


__all__ = ["IndexStore", "LndBackend", "StoredIndex", "lnd_channel", "macaroon_hex"]
