"""The engine without HTTP: built from its real parts (a SQLite file, LNbits' FakeWallet, the
OpenRouter emulator) and driven through its use cases, as the HTTP edge drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from billing import ledger
from billing.lightning.lnbits import LnbitsBackend
from billing.money import Msat
from billing.pricing import PricingPolicy
from billing.rates import FixedRate
from billing.store import Store, TaskRow, open_store
from service.demo.lnbits import LnbitsServer, Wallet
from service.emulator.app import DEFAULT_API_KEY
from service.http.problems import problem_of
from service.routing.policy import PolicyHolder, builtin
from service.tasks.engine import Engine, EngineConfig
from service.tasks.idempotency import Record, idem_scope
from service.tasks.record import record_of
from service.tasks.refusals import Refusal
from service.tasks.requests import ChatRequest
from service.tasks.states import State, move
from service.upstream.catalog import CatalogCache
from service.upstream.openrouter import OpenRouterClient

from .conftest import Emulator

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"


def _ask(text: str = "hello [[tokens=5]]", **fields: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": CHEAP, "messages": [{"role": "user", "content": text}], **fields}
    )


@dataclass
class Core:
    engine: Engine
    store: Store
    lnbits: LnbitsServer
    agent: Wallet

    async def fund(self, payer: str, sats: int) -> None:
        """Credit ``payer`` the way agents are credited: a deposit invoice, paid."""
        invoice = await self.engine.deposit(payer, Msat.from_sat(sats))
        paid = await asyncio.to_thread(self.lnbits.pay, self.agent, invoice.bolt11)
        assert paid.status_code < 300, paid.text
        for _ in range(100):
            if await self.engine.confirm(invoice.payment_hash):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the deposit did not settle")

    async def until(self, task_id: str, state: State) -> TaskRow:
        for _ in range(200):
            task = await self.engine.task(task_id)
            if task is not None and task.state == state:
                return task
            await asyncio.sleep(0.05)
        raise AssertionError(f"{task_id} never reached {state}")


@pytest.fixture
async def core(lnbits: LnbitsServer, emulator: Emulator, tmp_path: Path) -> AsyncIterator[Core]:
    wallet, agent = lnbits.create_wallet("satrouter"), lnbits.create_wallet("agent")
    lnbits.fund(agent, 100_000)
    store = await open_store(f"sqlite:///{tmp_path}/engine.db")
    async with aiohttp.ClientSession() as session:
        upstream = OpenRouterClient(
            base_url=emulator.base_url, api_key=DEFAULT_API_KEY, session=session, timeout=10
        )
        catalog = CatalogCache(upstream.models, path=tmp_path / "models.json", ttl=3600)
        await catalog.get()
        engine = Engine(
            store=store,
            lightning=LnbitsBackend(
                lnbits.url, invoice_key=wallet.inkey, admin_key=wallet.adminkey, session=session
            ),
            upstream=upstream,
            catalog=catalog,
            rates=FixedRate(Decimal(100_000)),
            policy=PricingPolicy(1000, Msat(1000)),
            routing=PolicyHolder(builtin(lambda m: m in (catalog.catalog or ())), None, bool),
            config=EngineConfig(generation_deadline=3),
        )
        yield Core(engine, store, lnbits, agent)
    await store.close()


async def _ledger_ok(store: Store) -> None:
    async with store.read() as tx:
        assert (await ledger.check(tx)).ok


async def test_a_move_is_a_compare_and_set_with_one_event(core: Core) -> None:
    task, _, _ = await core.engine.create_task(
        _ask(), payer=None, caller="address:test", callback_url=None, idempotency_key=None
    )
    assert task.state == State.AWAITING_PAYMENT
    async with core.store.transaction() as tx:
        first = await move(tx, task, State.EXPIRED, updates={"error": "first"})
        second = await move(tx, task, State.EXPIRED, updates={"error": "second"})
    assert first is not None and first.state == State.EXPIRED
    assert second is None  # moved by someone else from the state it expected
    async with core.store.read() as tx:
        stored = await tx.task(task.id)
        events = await tx.events_for(task.id)
    assert stored is not None and record_of(stored).error == "first"
    assert [e.payload["status"] for e in events] == ["awaiting_payment", "expired"]


def test_an_idempotency_record_reads_back_what_it_wrote() -> None:
    scope = idem_scope("acct_1", "key")
    record = Record.scoped(scope, "task_1", "f" * 64)
    key, value = record.stored()
    assert Record.parse(key, value) == record
    # a caller's key cannot spell another caller's
    assert idem_scope("acct_1|k", "x") != idem_scope("acct_1", "k|x")


async def test_a_key_used_for_another_request_is_refused_and_charges_nothing(core: Core) -> None:
    await core.fund("acct_idem", 50)
    made = await core.engine.create_task(
        _ask(), payer="acct_idem", caller="acct_idem", callback_url=None, idempotency_key="k1"
    )
    again = await core.engine.create_task(
        _ask(), payer="acct_idem", caller="acct_idem", callback_url=None, idempotency_key="k1"
    )
    assert again[0].id == made[0].id and again[1] == made[1]
    before = await core.engine.balance("acct_idem")
    with pytest.raises(Refusal) as refused:
        await core.engine.create_task(
            _ask("another question [[tokens=5]]"),
            payer="acct_idem",
            caller="acct_idem",
            callback_url=None,
            idempotency_key="k1",
        )
    assert refused.value.kind == "idempotency_conflict"
    assert problem_of(refused.value).status == 409
    assert await core.engine.balance("acct_idem") == before
    await _ledger_ok(core.store)


async def test_a_settlement_applies_once(core: Core) -> None:
    invoice = await core.engine.deposit("acct_once", Msat.from_sat(7))
    paid = await asyncio.to_thread(core.lnbits.pay, core.agent, invoice.bolt11)
    assert paid.status_code < 300, paid.text
    status = await core.engine.lightning.invoice_status(invoice.payment_hash)
    assert status.settled
    assert await core.engine.on_settled(status) is True
    assert await core.engine.on_settled(status) is False  # a second push changes nothing
    assert await core.engine.balance("acct_once") == Msat.from_sat(7)
    await _ledger_ok(core.store)


async def test_credit_short_of_the_price_is_refused_before_anything_runs(core: Core) -> None:
    with pytest.raises(Refusal) as refused:
        await core.engine.chat("acct_empty", _ask())
    assert refused.value.kind == "insufficient_balance"
    assert refused.value.should_retry is False
    problem = problem_of(refused.value)
    assert problem.status == 402 and problem.headers["x-should-retry"] == "false"
    async with core.store.read() as tx:
        assert (await tx.ledger_totals()).entries == 0


async def test_a_prepaid_chat_is_reserved_run_recorded_and_reconciled(core: Core) -> None:
    await core.fund("acct_chat", 50)
    outcome = await core.engine.chat("acct_chat", _ask())
    assert outcome.answer is not None and not outcome.failed
    assert outcome.task.state == State.COMPLETED
    done = await core.until(outcome.task.id, State.RECONCILED)
    charged = done.data["charge_msat"]
    assert 0 < charged <= outcome.max_price_msat
    assert done.data["change_msat"] == outcome.max_price_msat - charged
    assert await core.engine.balance("acct_chat") == Msat.from_sat(50) - Msat(charged)
    await _ledger_ok(core.store)


async def test_a_stream_is_billed_when_its_reader_stops_early(core: Core) -> None:
    await core.fund("acct_stream", 50)
    outcome = await core.engine.chat("acct_stream", _ask(stream=True), stream=True)
    assert outcome.events is not None
    first = await anext(outcome.events)
    assert first
    await outcome.events.aclose()  # the caller left after the first chunk
    done = await core.until(outcome.task.id, State.RECONCILED)
    assert done.data["charge_msat"] > 0
    await _ledger_ok(core.store)


async def test_the_engine_refuses_in_its_own_words(core: Core) -> None:
    with pytest.raises(Refusal) as unknown:
        await core.engine.quote(_ask(model="no/such-model"))
    assert unknown.value.kind == "unknown_model"
    assert problem_of(unknown.value).status == 400
    with pytest.raises(Refusal) as dear:
        await core.engine.quote(_ask(max_price_msat=1))
    assert dear.value.kind == "over_max_price"
    assert problem_of(dear.value).status == 402
