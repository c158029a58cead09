"""New tasks for the task API: their token, their callback secret, their Idempotency-Key,
and their payment (from credit at once, or by an invoice of their own)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

from billing import budget
from billing.budget import BudgetExceeded
from billing.store import TaskRow

from .. import logs
from . import budgets, destinations, idempotency
from .context import Context
from .idempotency import Record, idem_scope
from .payments import Payments
from .quotes import Priced, Quoter, quote_data
from .record import record_of
from .refusals import Refusal
from .requests import ChatRequest
from .states import Hub, State, insert

#: The store key of the server secret task tokens are derived from.
TOKEN_KEY = "secret:task_tokens"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def callback_secret() -> str:
    """Standard Webhooks' secret form: base64 behind ``whsec_``."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


Created = tuple[TaskRow, str | None, str | None]  # the task, its token, its callback secret


class Intake:
    def __init__(self, ctx: Context, hub: Hub, quoter: Quoter, payments: Payments) -> None:
        self._ctx = ctx
        self._hub = hub
        self._quoter = quoter
        self._payments = payments
        self._token_key: bytes | None = None

    async def create_task(
        self,
        request: ChatRequest,
        *,
        payer: str | None,
        caller: str,
        callback_url: str | None,
        idempotency_key: str | None,
    ) -> Created:
        """A task for the task API: ``(task, task token, callback secret)``. With a ``payer``
        its maximum price is reserved from that credit and it is ``paid`` at once; without,
        it waits on its own invoice.

        An ``idempotency_key`` belongs to the ``caller`` that sent it (see :func:`idem_scope`):
        the same key and request from the same caller returns the first task and charges
        nothing more; the same key from anyone else is a key of theirs, a new task. A replay
        hands back the task token re-derived for that caller (the record keeps no credential);
        a task made before tokens were derived gets none, its payer reads it by its own key."""
        priced = await self._quoter.price(request)
        seen = idempotency.fingerprint(request.model_dump(mode="json"), callback_url)
        scope = idem_scope(caller, idempotency_key) if idempotency_key else None
        if scope and (earlier := await self._replay(Record.scoped(scope, "", seen), scope)):
            return earlier
        if payer and idempotency_key:  # a record from before keys were scoped this way
            legacy = Record(Record.legacy_key(payer, idempotency_key), "", seen)
            earlier = await self._replay(legacy, None)
            if earlier is not None and record_of(earlier[0]).payer == payer:
                return earlier
        task_id = "task_" + secrets.token_hex(12)
        token = (
            await self._derived_token(scope, task_id)
            if scope
            else f"tt_{task_id}.{secrets.token_urlsafe(24)}"
        )
        if callback_url is not None:
            try:
                await destinations.check(
                    callback_url, allow_private=self._ctx.config.callback_allow_private
                )
            except destinations.DestinationRefused as exc:
                raise Refusal("callback_url_refused", str(exc)) from None
        secret = callback_secret() if callback_url else None
        data = {
            "callback_url": callback_url,
            "callback_secret": secret,
            "token_hash": token_hash(token),
        }
        remember = Record.scoped(scope, task_id, seen).stored() if scope else None
        if payer is not None:
            task = await self._payments.reserve(
                payer, priced, kind="account", task_id=task_id, extra=data, remember=remember
            )
        else:
            task = await self._invoice_task(task_id, priced, data, remember)
        if task.id != task_id:  # a concurrent retry under the same key got there first
            assert scope is not None
            earlier = await self._replay(Record.scoped(scope, "", seen), scope)
            assert earlier is not None
            return earlier
        if task.state == State.PAID:
            self._hub.announce(task)
        return task, token, secret

    async def _replay(self, wanted: Record, scope: str | None) -> Created | None:
        """The task the key of ``wanted`` names, or refused if its caller used the key for a
        different request. The token is re-derived from ``scope``; a task made before tokens
        were derived (or an earlier release's record, ``scope`` None) gets none back: nothing
        is stored to give, and its payer reads it by its own key."""
        async with self._ctx.store.read() as tx:
            record = await idempotency.find(tx, wanted.key)
            if record is None:
                return None
            if record.fingerprint != wanted.fingerprint:
                raise Refusal(
                    "idempotency_conflict", "this Idempotency-Key was used for a different request"
                )
            task = await tx.task(record.task_id)
        assert task is not None
        token = await self._derived_token(scope, task.id) if scope else None
        kept = record_of(task)
        if token is not None and token_hash(token) != kept.token_hash:
            token = None
        return task, token, kept.callback_secret

    async def _derived_token(self, scope: str, task_id: str) -> str:
        """The task token of a task made under an Idempotency-Key: a MAC of the key's scope
        and the task under a server secret, so a replay by the same caller gets it again
        without the token ever being stored."""
        if self._token_key is None:
            async with self._ctx.store.transaction() as tx:
                stored = await tx.get_value(TOKEN_KEY)
                if stored is None:
                    stored = secrets.token_hex(32)
                    await tx.set_value(TOKEN_KEY, stored)
            self._token_key = bytes.fromhex(stored)
        mac = hmac.new(self._token_key, f"{scope}|{task_id}".encode(), hashlib.sha256)
        return f"tt_{task_id}." + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    async def _invoice_task(
        self,
        task_id: str,
        priced: Priced,
        extra: dict[str, Any],
        remember: tuple[str, str] | None,
    ) -> TaskRow:
        """A task paid by its own invoice, ``awaiting_payment``; the task ``remember`` names
        instead when its key was taken meanwhile."""
        ctx = self._ctx
        total = priced.quote.total
        try:
            async with ctx.store.read() as tx:
                await budget.check(
                    tx, ctx.config.budgets, task_id, total, priced.quote.cost_max, time.time()
                )
        except BudgetExceeded as exc:
            raise budgets.over_budget(ctx.config.budgets, exc) from None
        invoice = await self._payments.invoice(total, f"satrouter {task_id}")
        now = time.time()
        data = {
            "kind": "invoice",
            "payer": task_id,
            "request": priced.body,
            "quote": quote_data(priced.quote),
            "invoice": {
                "payment_hash": invoice.payment_hash,
                "bolt11": invoice.bolt11,
                "amount_msat": invoice.amount.value,
                "expires_at": invoice.expires_at,
            },
            **extra,
            **priced.decision.record(),
        }
        task = TaskRow(task_id, State.AWAITING_PAYMENT, task_id, data, now, now)
        logs.task_id.set(task_id)
        async with ctx.store.transaction() as tx:
            if remember and (earlier := await idempotency.taken(tx, remember[0])):
                return earlier
            task = await insert(tx, task)
            await tx.insert_invoice(Payments.row(invoice, "task", task_id, now))
            if remember:
                await tx.set_value(*remember)
        return task
