"""Withdrawals whose outcome is not known are not failures: they stay reserved until the backend
says how they ended, through lost answers, held payments, dropped streams and SIGKILL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing import ledger
from billing.lightning.lnbits import LnbitsBackend
from billing.lightning.lnd import LndBackend, lnd_channel
from billing.money import Msat
from billing.payouts import PayoutRefused, Payouts, State, ref_of
from billing.store import Store, open_store
from service.demo.lnbits import LnbitsServer, Wallet
from service.emulator.app import EmulatorConfig
from service.http.keys import STORE
from service.tasks.engine import EngineConfig

from .conftest import (
    Emulator,
    Service,
    ServiceProcess,
    create_service,
    serve,
    service_settings,
    start_emulator,
)
from .lnbits_proxy import LnbitsProxy
from .lnd_node import MACAROON, FakeLnd, start_node

MakeService = Callable[..., Awaitable[tuple[Service, LnbitsProxy, Wallet]]]


@pytest.fixture
async def proxied(lnbits: LnbitsServer, tmp_path: Path) -> AsyncIterator[MakeService]:
    """satrouter whose LNbits calls go through a :class:`LnbitsProxy`; and a payee wallet."""
    cleanup: list[Callable[[], Awaitable[object]]] = []

    async def make(**overrides: Any) -> tuple[Service, LnbitsProxy, Wallet]:
        emulator, emulator_runner = await start_emulator(EmulatorConfig(generation_delay=0.2))
        cleanup.append(emulator_runner.cleanup)
        wallet = lnbits.create_wallet("satrouter")
        agent = lnbits.create_wallet("agent")
        payee = lnbits.create_wallet("payee")
        lnbits.fund(agent, 1_000_000)
        lnbits.fund(wallet, 10_000)  # other agents' money, already in the wallet
        proxy = await LnbitsProxy(lnbits.url).start()
        cleanup.append(proxy.close)
        backend = LnbitsBackend(
            proxy.url, invoice_key=wallet.inkey, admin_key=wallet.adminkey, timeout=0.5
        )
        cleanup.append(backend.close)
        settings = service_settings(tmp_path, emulator, lnbits, wallet, **overrides)
        app = create_service(
            settings,
            lightning=backend,
            engine_config=EngineConfig(sweep_interval=0.1, invoice_expiry=60),
        )
        runner, url = await serve(app)
        cleanup.append(runner.cleanup)
        return Service(url, app, emulator, lnbits, agent), proxy, payee

    yield make
    for step in reversed(cleanup):
        await step()


def _invoice(lnbits: LnbitsServer, wallet: Wallet, sats: int) -> str:
    response = httpx.post(
        f"{lnbits.url}/api/v1/payments",
        json={"out": False, "amount": sats, "memo": "withdrawal"},
        headers={"X-Api-Key": wallet.inkey},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["bolt11"])


async def _until(
    check: Callable[[], Awaitable[Any]], timeout: float = 30, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = await check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _entries(store: Store, ref: str) -> list[str]:
    async with store.read() as tx:
        return sorted(j.kind for j in await tx.journal_by_ref(ref))


@pytest.mark.lnbits
async def test_late_lnbits_answers_never_drain_the_wallet(proxied: MakeService) -> None:
    """The reproduced incident: each pay call's answer arrives after satrouter's timeout (the
    payment went through). Answering 502 and refunding paid out 2,700 sat of a 1,000 sat
    deposit; a lost answer must leave the money reserved until LNbits tells."""
    service, proxy, payee = await proxied()
    proxy.mode, proxy.delay = "late", 2.0
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        account = await service.funded_account(http, 1_000)
        answers = []
        for _ in range(3):
            bolt11 = await asyncio.to_thread(_invoice, service.lnbits, payee, 900)
            response = await http.post(
                "/v1/accounts/withdrawals", headers=account["auth"], json={"invoice": bolt11}
            )
            answers.append(response)
        me = (await http.get("/v1/accounts/me", headers=account["auth"])).json()
    received = await asyncio.to_thread(service.lnbits.balance_msat, payee)
    assert received <= 1_000_000, f"paid out {received // 1000} sat of a 1,000 sat deposit"
    assert [a.status_code for a in answers] == [200, 409, 409], [a.text for a in answers]
    assert answers[0].json()["status"] == "succeeded"
    assert received == 900_000
    assert me["balance_msat"] == 1_000_000 - 900_000 - answers[0].json()["fee_msat"]
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_a_held_payment_answers_202_pending_and_is_resolved_later(
    proxied: MakeService,
) -> None:
    service, proxy, payee = await proxied(payout_patience=1.0)
    proxy.mode = "hold"  # LNbits has no record yet: the payment is on its way
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        account = await service.funded_account(http, 1_000)
        bolt11 = await asyncio.to_thread(_invoice, service.lnbits, payee, 400)
        response = await http.post(
            "/v1/accounts/withdrawals",
            headers=account["auth"],
            json={"invoice": bolt11, "fee_limit_msat": 5_000},
        )
        assert response.status_code == 202, response.text
        pending = response.json()
        assert pending["status"] == "pending"
        assert pending["balance_msat"] == 1_000_000 - 400_000 - 5_000  # still reserved
        location = response.headers["Location"]
        assert location == f"/v1/accounts/withdrawals/{pending['payment_hash']}"
        assert (await http.get(location, headers=account["auth"])).json()["status"] == "pending"
        # Another account cannot look it up.
        other = (await http.post("/v1/accounts")).json()
        stranger = {"Authorization": f"Bearer {other['api_key']}"}
        assert (await http.get(location, headers=stranger)).status_code == 404
        bad = await http.get("/v1/accounts/withdrawals/not-a-hash", headers=account["auth"])
        assert bad.status_code == 400
        assert bad.headers["Content-Type"].startswith("application/problem+json")
        await asyncio.sleep(1.0)  # the sweep keeps asking meanwhile, and keeps it reserved
        assert (await http.get(location, headers=account["auth"])).json()["status"] == "pending"
        proxy.release()  # the payment goes through

        async def done() -> dict[str, Any] | None:
            view = dict((await http.get(location, headers=account["auth"])).json())
            return view if view["status"] != "pending" else None

        final = await _until(done, what="the payout to end")
    assert final["status"] == "succeeded"
    assert final["preimage"]
    assert final["balance_msat"] == 1_000_000 - 400_000 - final["fee_msat"]
    assert await asyncio.to_thread(service.lnbits.balance_msat, payee) == 400_000
    store = service.app[STORE]
    assert await _entries(store, ref_of(pending["payment_hash"])) == [
        "withdrawal",
        "withdrawal_reserve",
    ]
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_a_definitive_failure_refunds(proxied: MakeService) -> None:
    from .lnd_node import external_style_invoice

    service, _, _ = await proxied()
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        account = await service.funded_account(http, 1_000)
        # An invoice of a node LNbits' FakeWallet cannot reach: LNbits says "failed".
        response = await http.post(
            "/v1/accounts/withdrawals",
            headers=account["auth"],
            json={"invoice": external_style_invoice(300_000)},
        )
        assert response.status_code == 502, response.text
        assert response.json()["type"].endswith("withdrawal_failed")
        assert response.json()["withdrawal"]["status"] == "failed"
        me = (await http.get("/v1/accounts/me", headers=account["auth"])).json()
    assert me["balance_msat"] == 1_000_000
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_a_withdrawal_to_satrouters_own_invoice_is_refused(proxied: MakeService) -> None:
    """Paying satrouter's own invoice from its own wallet debited the agent while the deposit
    (or another agent's task) it paid was never credited."""
    service, _, _ = await proxied()
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        account = await service.funded_account(http, 1_000)
        other = (await http.post("/v1/accounts")).json()
        deposit = (
            await http.post(
                "/v1/accounts/deposits",
                json={"amount_sat": 500},
                headers={"Authorization": f"Bearer {other['api_key']}"},
            )
        ).json()
        task = (
            await http.post(
                "/v1/tasks", json={"messages": [{"role": "user", "content": "Hi [[tokens=5]]"}]}
            )
        ).json()
        before = await service.journal_size()
        for bolt11 in (deposit["bolt11"], task["invoice"]["bolt11"]):
            response = await http.post(
                "/v1/accounts/withdrawals", headers=account["auth"], json={"invoice": bolt11}
            )
            assert response.status_code == 422, response.text
            assert response.json()["type"].endswith("own_invoice")
        me = (await http.get("/v1/accounts/me", headers=account["auth"])).json()
    assert me["balance_msat"] == 1_000_000
    assert await service.journal_size() == before
    async with service.app[STORE].read() as tx:
        assert await tx.payouts_in_states(list(State)) == []


# -- LND: in flight, then succeeded or failed ------------------------------------------------


@pytest.fixture
async def lnd_payouts(tmp_path: Path) -> AsyncIterator[tuple[FakeLnd, Payouts, Store]]:
    node, address, cert = await start_node(MACAROON)
    backend = LndBackend(
        lnd_channel(address, cert, MACAROON, server_name="localhost"), _NoIndex(), max_backoff=0.2
    )
    store = await open_store(f"sqlite:///{tmp_path}/payouts.db")
    async with store.transaction() as tx:
        await ledger.post(tx, ledger.deposit("agent", Msat(1_000_000), "d" * 64))
    yield node, Payouts(store, backend, patience=0.5, poll=0.05), store
    await backend.close()
    await store.close()
    await node.server.stop(None)


class _NoIndex:
    async def get(self) -> int:
        return 0

    async def set(self, value: int) -> None:
        pass


async def _agent(store: Store) -> int:
    async with store.read() as tx:
        return (await ledger.agent_balance(tx, "agent")).value


async def test_lnd_in_flight_is_pending_until_it_succeeds_or_fails(
    lnd_payouts: tuple[FakeLnd, Payouts, Store],
) -> None:
    node, payouts, store = lnd_payouts
    node.hold_payments = True
    paid, failed = node.external_invoice(100_000), node.external_invoice(200_000)
    first = await payouts.withdraw("agent", paid, Msat(2_000))
    second = await payouts.withdraw("agent", failed, Msat(2_000))
    assert (first.state, second.state) == (State.IN_FLIGHT, State.IN_FLIGHT)
    assert await _agent(store) == 1_000_000 - 102_000 - 202_000  # both stay reserved
    assert await payouts.sweep() == 0  # still in flight: nothing decided
    node.finish(first.payment_hash, succeed=True)
    node.finish(second.payment_hash, succeed=False)
    await _until(lambda: _final(payouts, first.payment_hash, second.payment_hash))
    assert (await payouts.get(first.payment_hash)).state == State.SUCCEEDED  # type: ignore[union-attr]
    assert (await payouts.get(second.payment_hash)).state == State.FAILED  # type: ignore[union-attr]
    assert await _agent(store) == 1_000_000 - 100_000 - 1_000  # the real routing fee
    assert await _entries(store, first.ref) == ["withdrawal", "withdrawal_reserve"]
    assert await _entries(store, second.ref) == ["withdrawal_failed", "withdrawal_reserve"]
    async with store.read() as tx:
        assert (await ledger.check(tx)).ok


async def _final(payouts: Payouts, *hashes: str) -> bool:
    await payouts.sweep()
    found = [await payouts.get(h) for h in hashes]
    return all(p is not None and p.state in (State.SUCCEEDED, State.FAILED) for p in found)


@pytest.mark.parametrize("cut", ["end", "drop"])
async def test_lnd_stream_that_ends_or_drops_in_flight_is_not_a_failure(
    lnd_payouts: tuple[FakeLnd, Payouts, Store], cut: str
) -> None:
    node, payouts, store = lnd_payouts
    node.send_stream_cut = cut
    bolt11 = node.external_invoice(100_000)
    payout = await payouts.withdraw("agent", bolt11, Msat(2_000))
    assert payout.state == State.IN_FLIGHT
    assert await _entries(store, payout.ref) == ["withdrawal_reserve"]
    node.finish(payout.payment_hash, succeed=True)
    await _until(lambda: _final(payouts, payout.payment_hash))
    assert await _entries(store, payout.ref) == ["withdrawal", "withdrawal_reserve"]
    assert len(node.outgoing) == 1  # paid once
    assert await _agent(store) == 1_000_000 - 101_000


async def test_a_fee_over_the_limit_is_the_operators(
    lnd_payouts: tuple[FakeLnd, Payouts, Store],
) -> None:
    """A backend that does not enforce the limit (LNbits' API takes none) charged more than the
    agent reserved: the agent pays its limit, the operator books the rest, the books balance."""
    node, payouts, store = lnd_payouts
    node.enforce_fee_limit, node.routing_fee_msat = False, 5_000
    payout = await payouts.withdraw("agent", node.external_invoice(100_000), Msat(1_000))
    assert payout.state == State.SUCCEEDED
    assert payout.fee_msat == 5_000  # what the route really cost, not min(real, limit)
    assert await _agent(store) == 1_000_000 - 100_000 - 1_000
    async with store.read() as tx:
        assert await ledger.balance(tx, ledger.LIGHTNING_FEES) == 4_000
        assert await ledger.balance(tx, ledger.LIGHTNING) == 1_000_000 - 105_000
        assert (await ledger.check(tx)).ok


async def test_refusals_move_nothing(lnd_payouts: tuple[FakeLnd, Payouts, Store]) -> None:
    node, payouts, store = lnd_payouts
    with pytest.raises(PayoutRefused) as refused:
        await payouts.withdraw("agent", node.external_invoice(2_000_000), Msat(1_000))
    assert refused.value.kind == "insufficient"
    with pytest.raises(PayoutRefused) as refused:
        await payouts.withdraw("agent", node.external_invoice(None), None)
    assert refused.value.kind == "invalid_invoice"
    bolt11 = node.external_invoice(10_000)
    await payouts.withdraw("agent", bolt11, None)
    with pytest.raises(PayoutRefused) as refused:
        await payouts.withdraw("agent", bolt11, None)
    assert refused.value.kind == "invoice_already_used"
    assert len(node.outgoing) == 1
    assert await _agent(store) == 1_000_000 - 10_000 - 1_000  # one payout, its real fee


@pytest.mark.lnbits
async def test_an_lnbits_payout_cannot_be_held_below_what_lnbits_may_spend(
    proxied: MakeService,
) -> None:
    """LNbits cannot cap a payment's routing fee: it spends up to its own reserve (2 sat or
    1 %). A smaller fee limit would leave the rest to the operator, payout after payout."""
    service, _, payee = await proxied()
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        account = await service.funded_account(http, 1_000)
        before = await service.journal_size()
        invoice = await asyncio.to_thread(_invoice, service.lnbits, payee, 500)
        low = await http.post(
            "/v1/accounts/withdrawals",
            headers=account["auth"],
            json={"invoice": invoice, "fee_limit_msat": 0},
        )
        assert low.status_code == 400, low.text
        assert low.json()["type"].endswith("fee_limit_too_low")
        assert "5000 msat" in low.json()["detail"]  # 1 % of 500 sat
        assert await service.journal_size() == before
        enough = await http.post(
            "/v1/accounts/withdrawals",
            headers=account["auth"],
            json={"invoice": invoice, "fee_limit_msat": 5_000},
        )
        assert enough.status_code == 200, enough.text


# -- SIGKILL during a withdrawal -------------------------------------------------------------


@pytest.mark.lnbits
async def test_sigkill_during_withdrawals_pays_or_refunds_once(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path],
) -> None:
    server, _, lnbits, agent, db = service_process
    payee = lnbits.create_wallet("payee")
    proxy = await LnbitsProxy(lnbits.url).start()
    server.env.update(
        {
            "LNBITS_URL": proxy.url,
            "LNBITS_TIMEOUT": "1",
            "SATROUTER_PAYOUT_PATIENCE": "60",
            "SATROUTER_PAYOUT_ABSENT_AFTER": "2",
        }
    )
    try:
        await server.start()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            account = (await http.post("/v1/accounts")).json()
            auth = {"Authorization": f"Bearer {account['api_key']}"}
            deposit = (
                await http.post("/v1/accounts/deposits", json={"amount_sat": 1_000}, headers=auth)
            ).json()
            paid = await asyncio.to_thread(lnbits.pay, agent, deposit["bolt11"])
            assert paid.status_code < 300, paid.text

            async def credited() -> bool:
                me = (await http.get("/v1/accounts/me", headers=auth)).json()
                return bool(me["balance_msat"] == 1_000_000)

            await _until(credited, what="the deposit")

            async def killed_while_paying(sats: int) -> str:
                bolt11 = await asyncio.to_thread(_invoice, lnbits, payee, sats)
                proxy.arrived.clear()
                request = asyncio.ensure_future(
                    http.post("/v1/accounts/withdrawals", headers=auth, json={"invoice": bolt11})
                )
                await asyncio.wait_for(proxy.arrived.wait(), 30)
                await server.kill()
                with pytest.raises(httpx.HTTPError):
                    await request
                from billing.lightning import decode_invoice

                return decode_invoice(bolt11).payment_hash

            # 1. Killed while LNbits is paying: the payment goes through while satrouter is down.
            proxy.mode = "hold"
            went_out = await killed_while_paying(300)
            proxy.release()
            await _until(lambda: _received(lnbits, payee, 300_000), what="the payment")
            proxy.mode = "pass"
            await server.start()
            # 2. Killed while the pay call never reached LNbits: refunded once LNbits has
            #    had ample time to show it and does not.
            proxy.mode = "drop"
            never_sent = await killed_while_paying(200)
            proxy.mode = "pass"
            await server.start()

            async def state(payment_hash: str) -> str | None:
                view = await http.get(f"/v1/accounts/withdrawals/{payment_hash}", headers=auth)
                status = str(view.json()["status"])
                return status if status != "pending" else None

            assert await _until(lambda: state(went_out)) == "succeeded"
            assert await _until(lambda: state(never_sent)) == "failed"
            me = (await http.get("/v1/accounts/me", headers=auth)).json()
        await server.kill()
    finally:
        await proxy.close()
    assert await asyncio.to_thread(lnbits.balance_msat, payee) == 300_000  # once, not twice
    assert me["balance_msat"] == 1_000_000 - 300_000  # FakeWallet routes for free
    store = await open_store(f"sqlite:///{db}")
    try:
        assert await _entries(store, ref_of(went_out)) == ["withdrawal", "withdrawal_reserve"]
        assert await _entries(store, ref_of(never_sent)) == [
            "withdrawal_failed",
            "withdrawal_reserve",
        ]
        async with store.read() as tx:
            check = await ledger.check(tx)
        assert check.ok, check.problems
    finally:
        await store.close()


async def _received(lnbits: LnbitsServer, wallet: Wallet, msat: int) -> bool:
    return await asyncio.to_thread(lnbits.balance_msat, wallet) == msat


@pytest.mark.postgresql
async def test_another_replicas_sweep_leaves_a_payout_it_is_about_to_send(
    postgres_url: str,
) -> None:
    """Two replicas on one PostgreSQL database: a payout one of them has just reserved and not
    yet sent is not refunded by the other's sweep (it would answer the agent 'failed' for a
    withdrawal that is about to be paid); a reserved payout past the grace still is."""
    node, address, cert = await start_node(MACAROON)
    backend = LndBackend(
        lnd_channel(address, cert, MACAROON, server_name="localhost"), _NoIndex(), max_backoff=0.2
    )
    store = await open_store(postgres_url)
    try:
        async with store.transaction() as tx:
            await ledger.post(tx, ledger.deposit("agent", Msat(1_000_000), "d" * 64))
        sending = Payouts(store, backend, patience=0.5, poll=0.05)
        other = Payouts(store, backend, patience=0.5, poll=0.05)
        reserved = await sending._reserve("agent", node.external_invoice(100_000), Msat(2_000))
        assert await other.sweep() == 0
        assert (await other.get(reserved.payment_hash)).state == State.RESERVED  # type: ignore[union-attr]
        paid = await sending._drive(reserved, time.monotonic() + 5)
        assert paid.state == State.SUCCEEDED
        # A reserved payout whose replica died before sending is refunded after the grace.
        late = Payouts(store, backend, reserved_grace=0.0)
        orphan = await sending._reserve("agent", node.external_invoice(50_000), Msat(2_000))
        assert await late.sweep() == 1
        assert (await late.get(orphan.payment_hash)).state == State.FAILED  # type: ignore[union-attr]
        assert await _agent(store) == 1_000_000 - 100_000 - (paid.fee_msat or 0)
        async with store.read() as tx:
            assert (await ledger.check(tx)).ok
    finally:
        await backend.close()
        await store.close()
        await node.server.stop(None)


@pytest.mark.postgresql
async def test_replicas_sweeping_at_once_ask_about_each_open_payout_once(
    postgres_url: str,
) -> None:
    """Three replicas' sweeps at once over payouts left in flight: each payout is claimed by
    one of them, so the node is asked about each once, not three times. A claim whose replica
    stops short (it died) is taken by another sweep once it runs out."""
    node, address, cert = await start_node(MACAROON)
    backend = LndBackend(
        lnd_channel(address, cert, MACAROON, server_name="localhost"), _NoIndex(), max_backoff=0.2
    )
    stores = [await open_store(postgres_url) for _ in range(3)]
    try:
        async with stores[0].transaction() as tx:
            await ledger.post(tx, ledger.deposit("agent", Msat(10_000_000), "d" * 64))
        node.hold_payments = True
        sending = Payouts(stores[0], backend, patience=0.2, poll=0.05)
        held = [
            await sending.withdraw("agent", node.external_invoice(10_000 + n), Msat(2_000))
            for n in range(12)
        ]
        assert {p.state for p in held} == {State.IN_FLIGHT}
        node.tracked.clear()
        # Claims that run out soon: the replicas stop sweeping after this once (they died).
        sweeps = [Payouts(store, backend, claim_for=0.5) for store in stores]
        assert await asyncio.gather(*(s.sweep() for s in sweeps)) == [0, 0, 0]
        assert sorted(node.tracked) == sorted(p.payment_hash for p in held)  # each once
        survivor = Payouts(stores[1], backend)
        assert await survivor.sweep() == 0  # all claimed: not asked about meanwhile
        assert len(node.tracked) == len(held)
        hashes = {p.payment_hash for p in held}

        async def taken_over() -> bool:
            await survivor.sweep()
            return set(node.tracked[len(held) :]) == hashes

        await _until(taken_over)  # once the dead replicas' claims ran out
        for payout in held:
            node.finish(payout.payment_hash, succeed=True)
        await asyncio.wait_for(asyncio.gather(*sending._jobs), 30)  # a bound, not a target
        assert await survivor.sweep() == 0
        async with stores[0].read() as tx:
            assert await tx.payouts_in_states(["reserved", "in_flight"]) == []
            assert (await ledger.check(tx)).ok
    finally:
        for store in stores:
            await store.close()
        await backend.close()
        await node.server.stop(None)
