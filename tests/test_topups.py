"""Top-ups from earnings against a real LNbits and the emulator's credits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from billing import ledger
from billing.lightning.lnbits import LnbitsBackend
from billing.money import Msat, NanoUsd, Rounding
from billing.rates import FixedRate
from billing.store import Store, TaskRow, open_store
from billing.topup import (
    CommandExecutor,
    Credits,
    Executor,
    InvoiceUrlExecutor,
    ManualExecutor,
    State,
    TopupController,
    TopupPolicy,
)
from service.demo.lnbits import LnbitsServer, Wallet
from service.demo.loopback import serve
from service.emulator.app import EmulatorConfig

from .conftest import Emulator, start_emulator
from .lnbits_proxy import LnbitsProxy
from .topup_seller import CreditSeller

pytestmark = pytest.mark.lnbits
POLICY = TopupPolicy(floor=NanoUsd(5_000_000_000))  # top up under $5


@dataclass
class World:
    store: Store
    emulator: Emulator
    lnbits: LnbitsServer
    wallet: Wallet
    backend: LnbitsBackend
    seller: CreditSeller
    seller_wallet: Wallet
    seller_url: str
    session: aiohttp.ClientSession

    async def credits(self) -> Credits:
        state = self.emulator.state
        return Credits(
            NanoUsd.from_usd(state.config.credits, Rounding.DOWN),
            NanoUsd.from_usd(state.usage, Rounding.UP),
        )

    def controller(
        self,
        executor: Executor,
        policy: TopupPolicy = POLICY,
        notify: object = None,
        lightning: LnbitsBackend | None = None,
    ) -> TopupController:
        return TopupController(
            store=self.store,
            lightning=lightning or self.backend,
            credits=self.credits,
            rates=FixedRate(Decimal(100_000)),
            policy=policy,
            executor=executor,
            notify=notify,
        )  # type: ignore[arg-type]

    async def earn(self, sats: int, margin_sats: int) -> None:
        """Revenue that really sits in the service wallet, with its recorded margin."""
        self.lnbits.fund(self.wallet, sats)
        async with self.store.transaction() as tx:
            await ledger.post(tx, ledger.invoice_paid_into_escrow("t1", Msat.from_sat(sats), "p1"))
            await ledger.post(
                tx,
                ledger.settle(
                    "t1", "agent", Msat.from_sat(sats), Msat.from_sat(sats), NanoUsd(2_400_000_000)
                ),
            )
            await tx.insert_task(
                TaskRow(
                    "t1",
                    "reconciled",
                    "agent",
                    {
                        "payer": "agent",
                        "charge_msat": sats * 1000,
                        "cost_nusd": 2_400_000_000,
                        "margin_msat": margin_sats * 1000,
                        "quote": {"btc_usd": "100000"},
                    },
                    1.0,
                    1.0,
                )
            )


@pytest.fixture
async def world(lnbits: LnbitsServer, tmp_path: Path) -> AsyncIterator[World]:
    emulator, emulator_runner = await start_emulator(EmulatorConfig(credits=Decimal(1)))
    store = await open_store(f"sqlite:///{tmp_path}/topups.db")
    wallet, seller_wallet = lnbits.create_wallet("satrouter"), lnbits.create_wallet("seller")
    backend = LnbitsBackend(lnbits.url, invoice_key=wallet.inkey, admin_key=wallet.adminkey)
    seller_backend = LnbitsBackend(lnbits.url, invoice_key=seller_wallet.inkey)
    seller = CreditSeller(seller_backend, emulator.url, Decimal("0.05"))
    runner, url = await serve(seller.app())
    async with aiohttp.ClientSession() as session:
        yield World(
            store,
            emulator,
            lnbits,
            wallet,
            backend,
            seller,
            seller_wallet,
            url + "/invoice",
            session,
        )
    await runner.cleanup()
    await backend.close()
    await seller_backend.close()
    await store.close()
    await emulator_runner.cleanup()


async def _books_ok(store: Store) -> None:
    async with store.read() as tx:
        check = await ledger.check(tx)
    assert check.ok, check.problems


async def test_the_whole_loop_with_an_invoice_url(world: World) -> None:
    await world.earn(50_000, margin_sats=30_000)
    controller = world.controller(InvoiceUrlExecutor(world.session, world.seller_url))
    (paid,) = await controller.step()
    assert paid.state == State.PAID  # planned -> executing -> paid in one step
    # $0.10/h over the last day, 72 h target, floor x 2 = $10: buy $10 - $1 = $9 for 9,450 sat.
    assert paid.usd_nusd == 9_000_000_000
    assert paid.amount_msat == 9_450_000
    assert world.lnbits.balance_msat(world.seller_wallet) == 9_450_000
    assert (await controller.step())[0].state == State.PAID  # credits not there yet
    await world.seller.deliver()
    (done,) = await controller.step()
    assert done.state == State.RECONCILED
    assert done.data["received_nusd"] == 8_550_000_000  # $9 less the seller's 5 %
    async with world.store.read() as tx:
        assert await ledger.balance(tx, ledger.OPENROUTER_CREDITS) == -2_400_000_000 + 8_550_000_000
        assert await ledger.balance(tx, ledger.LIGHTNING) == 50_000_000 - 9_450_000
        assert await ledger.balance(tx, ledger.TOPUPS_PENDING) == 0
    await _books_ok(world.store)
    assert await controller.step() == []  # balance $9.55 is over the floor: nothing to do


async def test_a_crash_between_paying_and_confirming_never_pays_twice(world: World) -> None:
    await world.earn(50_000, margin_sats=30_000)
    first = world.controller(InvoiceUrlExecutor(world.session, world.seller_url))
    planned = await first.plan()
    assert planned is not None
    executing = await first.advance(planned)
    assert executing is not None and executing.state == State.EXECUTING
    # The process pays, then dies before recording it.
    await world.backend.send_payment(executing.data["invoice"], fee_limit=Msat(100_000))
    restarted = world.controller(InvoiceUrlExecutor(world.session, world.seller_url))
    (after,) = await restarted.step()
    assert after.state == State.PAID
    assert world.lnbits.balance_msat(world.seller_wallet) == executing.data["invoice_msat"]
    await world.seller.deliver()
    (done,) = await restarted.step()
    assert done.state == State.RECONCILED
    async with world.store.read() as tx:
        paid_entries = [j for j in await tx.journal_by_ref(planned.id) if j.kind == "topup_paid"]
    assert len(paid_entries) == 1
    await _books_ok(world.store)


async def test_agent_money_is_never_spent(world: World) -> None:
    world.lnbits.fund(world.wallet, 1_000_000)
    async with world.store.transaction() as tx:  # the wallet is full, but of agent deposits
        await ledger.post(tx, ledger.deposit("agent", Msat.from_sat(1_000_000), "d1"))
    controller = world.controller(InvoiceUrlExecutor(world.session, world.seller_url))
    assert await controller.plan() is None
    async with world.store.read() as tx:
        assert await controller.spendable(tx) == Msat(0)
    await world.earn(3_000, margin_sats=3_000)  # a little margin: buys only what it covers
    planned = await controller.plan()
    assert planned is not None
    assert planned.amount_msat + -(-planned.amount_msat // 100) <= 3_000_000  # with the fee limit
    assert planned.usd_nusd < 9_000_000_000


async def test_caps_limit_what_is_bought(world: World) -> None:
    await world.earn(50_000, margin_sats=30_000)
    capped = TopupPolicy(floor=NanoUsd(5_000_000_000), daily_cap=NanoUsd(3_000_000_000))
    controller = world.controller(InvoiceUrlExecutor(world.session, world.seller_url), capped)
    (paid,) = await controller.step()
    assert paid.usd_nusd == 3_000_000_000
    await world.seller.deliver()
    await controller.step()  # reconciled; the balance is still under the floor...
    assert await controller.plan() is None  # ...but today's cap is used up


async def test_command_executor(world: World) -> None:
    await world.earn(50_000, margin_sats=30_000)
    script = Path(__file__).with_name("topup_command.py")
    controller = world.controller(CommandExecutor([sys.executable, str(script), world.seller_url]))
    (paid,) = await controller.step()
    assert paid.state == State.PAID
    await world.seller.deliver()
    assert (await controller.step())[0].state == State.RECONCILED
    failing = world.controller(CommandExecutor([sys.executable, "-c", "raise SystemExit(3)"]))
    world.emulator.state.usage += Decimal(9)  # the credits run low again
    (failed,) = await failing.step()
    assert failed.state == State.FAILED
    assert "failed (3)" in failed.data["error"]
    await _books_ok(world.store)


async def test_manual_executor_asks_the_operator(world: World) -> None:
    told: list[str] = []

    async def notify(message: str) -> None:
        told.append(message)

    controller = world.controller(ManualExecutor(), notify=notify)
    (waiting,) = await controller.step()
    assert waiting.state == State.AWAITING_OPERATOR
    assert "please buy $9" in told[0]
    world.emulator.state.config.credits += Decimal(9)  # the operator bought credits by card
    (done,) = await controller.step()
    assert done.state == State.RECONCILED
    async with world.store.read() as tx:
        assert await ledger.balance(tx, ledger.OWNER_NUSD) == 9_000_000_000
        assert await ledger.balance(tx, ledger.LIGHTNING) == 0  # no sats left the wallet
    await _books_ok(world.store)


async def test_a_byok_payable_in_dollars_is_not_counted_as_sats_owed(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/byok.db")
    async with store.transaction() as tx:
        # 100,000 sat paid for a task, all of it revenue: $0.01 OpenRouter fee, $1 BYOK cost.
        paid = Msat.from_sat(100_000)
        await ledger.post(tx, ledger.invoice_paid_into_escrow("t1", paid, "p1"))
        await ledger.post(
            tx,
            ledger.settle(
                "t1", "agent", paid, paid, NanoUsd(10_000_000), byok=NanoUsd(1_000_000_000)
            ),
        )
        await tx.insert_task(
            TaskRow(
                "t1", "reconciled", "agent", {"payer": "agent", "margin_msat": 90_000_000}, 1, 1
            )
        )
    async with store.read() as tx:
        spendable = await TopupController.spendable(tx)
    await store.close()
    assert spendable == Msat(90_000_000)  # nothing is owed to agents: the margin may be spent


async def test_a_top_up_whose_payment_is_in_flight_is_not_failed(world: World) -> None:
    """The pay call is held (a payee holding the payment, a slow node): the outcome is unknown,
    so the top-up stays executing, is never failed or paid again, and is paid once it lands."""
    await world.earn(50_000, margin_sats=30_000)
    proxy = await LnbitsProxy(world.lnbits.url).start()
    slow = LnbitsBackend(
        proxy.url, invoice_key=world.wallet.inkey, admin_key=world.wallet.adminkey, timeout=1
    )
    try:
        proxy.mode = "hold"
        executor = InvoiceUrlExecutor(world.session, world.seller_url)
        controller = world.controller(executor, lightning=slow)  # paying through the proxy
        (held,) = await controller.step()
        assert held.state == State.EXECUTING  # unknown: not failed
        assert world.lnbits.balance_msat(world.seller_wallet) == 0
        (still,) = await controller.step()
        assert still.state == State.EXECUTING
        proxy.release()  # the payment goes through
        for _ in range(50):
            if world.lnbits.balance_msat(world.seller_wallet) > 0:
                break
            await asyncio.sleep(0.1)
        (paid,) = await controller.step()
        assert paid.state == State.PAID
        assert proxy.pays == 1  # asked once, never paid again
        assert world.lnbits.balance_msat(world.seller_wallet) == held.data["invoice_msat"]
    finally:
        await slow.close()
        await proxy.close()
    await _books_ok(world.store)
