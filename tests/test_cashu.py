"""Cashu ecash (Routstr's RIP-01) against a real nutshell mint (fake Lightning backend) and
nutshell's own wallet as the agent: a token pays a completion, the change comes back as a
token the agent's wallet redeems, and every refusal leaves the token spendable (or, spent
already, gets no work) and the books untouched."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from aiohttp import web

from billing import ledger
from billing.store import open_store
from service.app import create_app as create_service
from service.config import Settings
from service.demo.cashu import PYTHON, AgentWallet, Mint, running_mint
from service.demo.lnbits import LnbitsServer, Wallet
from service.demo.loopback import serve
from service.ecash.wallet import EcashWallet, mint_id
from service.emulator.faults import Fault
from service.http.keys import SETTINGS, STORE
from service.tasks import redeems
from service.tasks.cashu import payer_of, token_hash
from service.tasks.engine import EngineConfig
from tests.conftest import (
    HELLO,
    Emulator,
    ServiceProcess,
    satrouter_command,
    service_settings,
    start_emulator,
    until,
)

pytestmark = pytest.mark.lnbits
BODY = {"model": "openai/gpt-4o", "messages": HELLO, "max_tokens": 2000}


@pytest.fixture(scope="module")
def mint() -> Iterator[Mint]:
    with running_mint(input_fee_ppk=100) as m:
        yield m


@pytest.fixture(scope="module")
def other_mint() -> Iterator[Mint]:
    with running_mint(input_fee_ppk=0) as m:
        yield m


@dataclass
class CashuService:
    http: httpx.AsyncClient
    app: Any
    emulator: Emulator
    mint: Mint
    wallet: AgentWallet
    ecash: EcashWallet

    async def journal_size(self) -> int:
        async with self.app[STORE].read() as tx:
            return (await tx.ledger_totals()).entries

    async def check(self) -> None:
        """The ledger check passes, and the ecash the books hold is the proofs the wallet
        holds at the mint."""
        async with self.app[STORE].read() as tx:
            checked = await ledger.check(tx)
            books = await ledger.balance(tx, ledger.ecash_account(mint_id(self.mint.url)))
        assert checked.ok, checked.problems
        assert books == await self.proofs_held()

    async def proofs_held(self) -> int:
        """The proofs the operator's wallet holds at the mint, in msat."""
        return await held_msat(self.ecash, self.mint.url)

    def completions(self) -> int:
        return int(self.emulator.state.counters["completions"])

    async def token(self, sats: int) -> str:
        return await asyncio.to_thread(self.wallet.token, sats)


def cashu_settings(
    tmp_path: Path,
    emulator: Emulator,
    lnbits: LnbitsServer,
    mint_url: str,
    *,
    python: Path | str = PYTHON,
    wallet: str = "satrouter",
    **overrides: Any,
) -> Settings:
    """satrouter's settings taking ecash at ``mint_url``, its wallet under ``tmp_path``."""
    return service_settings(
        tmp_path,
        emulator,
        lnbits,
        lnbits.create_wallet(wallet),
        cashu_mints=mint_url,
        cashu_python=str(python),
        cashu_dir=tmp_path / "cashu",
        **overrides,
    )


async def token_through(mint_url: str, mint: Mint, folder: Path, sats: int = 60) -> str:
    """A token of ``sats`` from an agent wallet funded with 200 sat at ``mint_url`` (the mint
    behind a proxy, which does not carry the wallet's websocket: ask, then mint)."""
    wallet = AgentWallet(Mint(mint_url, mint.folder), folder)
    asked = await asyncio.to_thread(wallet._run, "invoice", "200", "--no-check")
    quote = re.search(r"--id (\S+)", asked)
    assert quote, asked
    await asyncio.to_thread(wallet._run, "invoice", "200", "--id", quote[1])
    return await asyncio.to_thread(wallet.token, sats)


@pytest.fixture
async def cashu(lnbits: LnbitsServer, mint: Mint, tmp_path: Path) -> AsyncIterator[CashuService]:
    emulator, emulator_runner = await start_emulator()
    settings = cashu_settings(tmp_path, emulator, lnbits, mint.url)
    app = create_service(settings, engine_config=EngineConfig(generation_deadline=3))
    runner, url = await serve(app)
    wallet = AgentWallet(mint, tmp_path / "agent-wallet")
    await asyncio.to_thread(wallet.fund, 2000)
    ecash = EcashWallet(str(PYTHON), tmp_path / "cashu", (mint.url,))
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        yield CashuService(http, app, emulator, mint, wallet, ecash)
    await runner.cleanup()
    await emulator_runner.cleanup()


async def held_msat(ecash: EcashWallet, mint: str) -> int:
    async with ecash.turn(mint) as at_mint:
        return await at_mint.balance() * 1000


async def _price_sat(service: CashuService) -> int:
    """The request's maximum, in sat, as a refusal of a 1-sat token names it."""
    response = await service.http.post(
        "/v1/chat/completions", json=BODY, headers={"X-Cashu": await service.token(1)}
    )
    assert response.status_code == 402, response.text
    assert response.json()["type"].endswith("cashu_amount_too_low")
    return int(response.json()["price_sat"])


async def test_a_token_pays_and_its_change_comes_back_as_a_token(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    sent = price + 20
    before = await asyncio.to_thread(cashu.wallet.balance)
    response = await cashu.http.post(
        "/v1/chat/completions", json=BODY, headers={"X-Cashu": await cashu.token(sent)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    change = response.headers["X-Cashu"]
    assert change.startswith("cashuB")
    change_msat = int(response.headers["X-Cashu-Change-Msat"])
    fee_msat = int(response.headers["X-Cashu-Fee-Msat"])
    assert fee_msat == 1000  # the mint's fee for swapping the token (100 ppk, 4 proofs), shown
    assert 20_000 - fee_msat <= change_msat < sent * 1000 - fee_msat  # the excess, not all
    await asyncio.to_thread(cashu.wallet.receive, change)
    after = await asyncio.to_thread(cashu.wallet.balance)
    # The agent paid the token less its change (and the mint's own fee for its swaps).
    assert before - after <= sent - change_msat // 1000 + 2
    await cashu.check()


async def test_a_double_spent_token_gets_no_work_and_books_nothing(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    token = await cashu.token(price + 5)
    await asyncio.to_thread(cashu.wallet.receive, token)  # spent by its owner first
    calls, entries = cashu.completions(), await cashu.journal_size()
    response = await cashu.http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("cashu_token_spent")
    assert cashu.completions() == calls
    assert await cashu.journal_size() == entries
    await cashu.check()


async def test_a_token_paid_once_cannot_pay_again(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    token = await cashu.token(price + 5)
    first = await cashu.http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
    assert first.status_code == 200, first.text
    calls, entries = cashu.completions(), await cashu.journal_size()
    again = await cashu.http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
    assert again.status_code == 400
    assert again.json()["type"].endswith("cashu_token_spent")
    assert (cashu.completions(), await cashu.journal_size()) == (calls, entries)
    await cashu.check()


async def test_a_mint_off_the_allow_list_is_refused(
    cashu: CashuService, other_mint: Mint, tmp_path: Path
) -> None:
    stranger = AgentWallet(other_mint, tmp_path / "stranger")
    await asyncio.to_thread(stranger.fund, 500)
    token = await asyncio.to_thread(stranger.token, 300)
    entries = await cashu.journal_size()
    response = await cashu.http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"].endswith("cashu_mint_not_allowed")
    assert problem["mints"] == [cashu.mint.url]
    assert await cashu.journal_size() == entries
    await asyncio.to_thread(stranger.receive, token)  # never redeemed: still its owner's
    assert await asyncio.to_thread(stranger.balance) == 500


async def test_a_token_short_of_the_price_is_refused_and_stays_spendable(
    cashu: CashuService,
) -> None:
    price = await _price_sat(cashu)
    assert price > 4
    token = await cashu.token(4)  # one proof: its swap fee (1 sat) leaves something to keep
    entries, calls = await cashu.journal_size(), cashu.completions()
    response = await cashu.http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
    assert response.status_code == 402
    assert response.json()["price_sat"] == price
    assert response.json()["price_msat"] > 4000
    assert (await cashu.journal_size(), cashu.completions()) == (entries, calls)
    await asyncio.to_thread(cashu.wallet.receive, token)


async def test_a_lost_response_s_change_is_recovered_by_task_id(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    token = await cashu.token(price + 30)
    response = await cashu.http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
    assert response.status_code == 200
    task_id = response.headers["X-Satrouter-Task"]
    url = response.headers["X-Cashu-Change-Url"]
    assert url == f"/v1/cashu/change/{task_id}"
    # Only the holder of the token that paid may have the change.
    other = await cashu.token(3)
    stranger = await cashu.http.get(url, headers={"X-Cashu": other})
    assert stranger.status_code == 404
    assert (await cashu.http.get(url)).status_code == 401
    recovered = await cashu.http.get(url, headers={"X-Cashu": token})
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["token"] == response.headers["X-Cashu"]
    assert recovered.headers["X-Cashu"] == response.headers["X-Cashu"]
    await asyncio.to_thread(cashu.wallet.receive, recovered.json()["token"])
    await cashu.check()


async def test_a_stream_s_change_is_fetched_after_it(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    token = await cashu.token(price + 10)
    async with cashu.http.stream(
        "POST",
        "/v1/chat/completions",
        json={**BODY, "stream": True},
        headers={"X-Cashu": token},
    ) as response:
        assert response.status_code == 200
        assert "X-Cashu" not in response.headers  # sent before the cost was known
        url = response.headers["X-Cashu-Change-Url"]
        body = "".join([chunk async for chunk in response.aiter_text()])
    assert "[DONE]" in body
    for _ in range(100):
        got = await cashu.http.get(url, headers={"X-Cashu": token})
        if got.status_code != 409:
            break
        await asyncio.sleep(0.2)
    assert got.status_code == 200, got.text
    assert got.json()["amount_msat"] >= 10_000
    await asyncio.to_thread(cashu.wallet.receive, got.json()["token"])
    await cashu.check()


async def test_a_bearer_token_opens_a_balance(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    token = await cashu.token(price * 3)
    auth = {"Authorization": f"Bearer {token}"}
    first = await cashu.http.post("/v1/chat/completions", json=BODY, headers=auth)
    assert first.status_code == 200, first.text
    second = await cashu.http.post("/v1/chat/completions", json=BODY, headers=auth)
    assert second.status_code == 200, second.text  # the same token is the key now
    me = (await cashu.http.get("/v1/accounts/me", headers=auth)).json()
    assert 0 < me["balance_msat"] < price * 3 * 1000
    await cashu.check()


async def test_a_header_that_is_no_token_is_a_clear_400(cashu: CashuService) -> None:
    entries = await cashu.journal_size()
    for value in ("cashuBnot a token!", "cashuA" + "x" * 20, "sk-sat-nope"):
        response = await cashu.http.post(
            "/v1/chat/completions", json=BODY, headers={"X-Cashu": value}
        )
        assert response.status_code == 400, (value, response.text)
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert json.loads(response.text)["type"].endswith("cashu_invalid_token")
    assert await cashu.journal_size() == entries


async def _satrouter(cashu: CashuService, *args: str) -> tuple[int, str]:
    """``satrouter ARGS`` in its own process, on the service's database, wallet and mints."""
    settings = cashu.app[SETTINGS]
    env = {
        "SATROUTER_DATABASE_URL": settings.database_url,
        "SATROUTER_CASHU_MINTS": settings.cashu_mints,
        "SATROUTER_CASHU_PYTHON": settings.cashu_python,
        "SATROUTER_CASHU_DIR": str(settings.cashu_dir),
        "LNBITS_URL": str(settings.lnbits_url),
        "LNBITS_INVOICE_KEY": settings.lnbits_invoice_key.get_secret_value(),
        "LNBITS_ADMIN_KEY": settings.lnbits_admin_key.get_secret_value(),
    }
    return await satrouter_command(*args, settings=env)


async def test_cashu_balance_shows_books_against_proofs_held(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    paid = await cashu.http.post(
        "/v1/chat/completions", json=BODY, headers={"X-Cashu": await cashu.token(price + 3)}
    )
    assert paid.status_code == 200, paid.text
    code, out = await _satrouter(cashu, "cashu", "balance")
    assert code == 0, out
    held = await cashu.proofs_held()
    assert f"{cashu.mint.url}: books {held} msat, proofs held {held} msat" in out


async def test_a_melt_the_wallet_never_received_books_nothing(cashu: CashuService) -> None:
    """The test mint's fake backend says it paid any invoice; satrouter's LNbits wallet never
    sees the money, so nothing is booked and the balance check shows the proofs gone."""
    price = await _price_sat(cashu)
    opened = {"Authorization": f"Bearer {await cashu.token(price + 50)}"}  # held: a balance
    paid = await cashu.http.post("/v1/chat/completions", json=BODY, headers=opened)
    assert paid.status_code == 200, paid.text

    async def reconciled() -> bool:
        async with cashu.app[STORE].read() as tx:
            task = await tx.task(paid.headers["X-Satrouter-Task"])
        return task is not None and task.state == "reconciled"

    await until(reconciled)
    entries = await cashu.journal_size()
    code, out = await _satrouter(
        cashu, "cashu", "melt", "--mint", cashu.mint.url, "--amount-sat", "2", "--wait", "2"
    )
    assert code == 1, out
    assert "the wallet has not received it: nothing is booked" in out
    assert await cashu.journal_size() == entries
    code, out = await _satrouter(cashu, "cashu", "balance")
    assert code == 1, out  # the books hold more than the proofs now: said, not hidden
    async with cashu.app[STORE].read() as tx:
        assert (await ledger.check(tx)).ok


async def test_melting_at_a_mint_not_allowed_is_refused(cashu: CashuService) -> None:
    code, out = await _satrouter(
        cashu, "cashu", "melt", "--mint", "http://127.0.0.1:9", "--amount-sat", "2"
    )
    assert code == 1
    assert "is not an allowed mint" in out


async def test_a_failed_call_returns_the_whole_token_as_change(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    await cashu.emulator.control("POST", "/faults", {"model": BODY["model"], "kind": "bad_gateway"})
    sent = price + 4
    response = await cashu.http.post(
        "/v1/chat/completions", json=BODY, headers={"X-Cashu": await cashu.token(sent)}
    )
    assert response.status_code == 502, response.text
    assert response.json()["type"].endswith("upstream_failed")
    fee_msat = int(response.headers["X-Cashu-Fee-Msat"])
    # Nothing charged: all the token was worth once swapped comes back.
    assert int(response.headers["X-Cashu-Change-Msat"]) == sent * 1000 - fee_msat
    await asyncio.to_thread(cashu.wallet.receive, response.headers["X-Cashu"])
    await cashu.check()


async def test_admin_status_holds_the_ecash_books_against_the_proofs(cashu: CashuService) -> None:
    price = await _price_sat(cashu)
    opened = {"Authorization": f"Bearer {await cashu.token(price + 20)}"}
    assert (await cashu.http.post("/v1/chat/completions", json=BODY, headers=opened)).is_success
    admin = {"Authorization": "Bearer admin-secret-for-tests"}
    status = (await cashu.http.get("/admin/status", headers=admin)).json()
    held = status["world"]["holdings"][f"ecash:{mint_id(cashu.mint.url)}"]
    assert held["matches"] is True, held
    assert held["books"] == held["world"] == await cashu.proofs_held()
    assert held["books"] > 0


async def test_a_wallet_that_cannot_start_is_a_503_and_takes_nothing(
    lnbits: LnbitsServer, mint: Mint, tmp_path: Path
) -> None:
    emulator, emulator_runner = await start_emulator()
    settings = cashu_settings(
        tmp_path, emulator, lnbits, mint.url, python=tmp_path / "no-such-python"
    )
    runner, url = await serve(create_service(settings))
    wallet = AgentWallet(mint, tmp_path / "agent-wallet")
    await asyncio.to_thread(wallet.fund, 100)
    token = await asyncio.to_thread(wallet.token, 60)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            response = await http.post(
                "/v1/chat/completions", json=BODY, headers={"X-Cashu": token}
            )
    finally:
        await runner.cleanup()
        await emulator_runner.cleanup()
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("cashu_wallet_unavailable")
    await asyncio.to_thread(wallet.receive, token)  # still the agent's: it swaps it back
    assert await asyncio.to_thread(wallet.balance) == 99  # less the mint's 1 sat for that swap


async def test_killed_mid_call_the_token_s_holder_gets_it_all_back(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path],
    mint: Mint,
    tmp_path: Path,
) -> None:
    """SIGKILL while the paid call runs: no answer, no task id reached the agent. After the
    restart the call is refunded and the paying token alone fetches the change: all of it."""
    server, emulator, _, _, db = service_process
    server.env |= {
        "SATROUTER_CASHU_MINTS": mint.url,
        "SATROUTER_CASHU_PYTHON": str(PYTHON),
        "SATROUTER_CASHU_DIR": str(tmp_path / "cashu"),
    }
    emulator.state.faults.set(BODY["model"], Fault(kind="slow", delay=60))
    wallet = AgentWallet(mint, tmp_path / "agent-wallet")
    await asyncio.to_thread(wallet.fund, 200)
    token = await asyncio.to_thread(wallet.token, 60)
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        call = asyncio.create_task(
            http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
        )
        await until(lambda: _asked(emulator))  # redeemed, reserved, and now running
        await server.kill()
        with pytest.raises(httpx.HTTPError):
            await call
        await server.start()
        for _ in range(300):
            got = await http.get("/v1/cashu/change", headers={"X-Cashu": token})
            if got.status_code != 409:
                break
            await asyncio.sleep(0.2)
    await server.kill()
    assert got.status_code == 200, got.text
    store = await open_store(f"sqlite:///{db}")
    try:
        async with store.read() as tx:
            task = await tx.task(got.json()["task_id"])
            assert task is not None and task.state == "refunded"
            assert (await ledger.check(tx)).ok
            received = await tx.journal_by_ref(payer_of(task.id))
    finally:
        await store.close()
    assert [j.kind for j in received] == ["ecash_received"]
    fee = 1000  # 100 ppk on the token's proofs (32, 16, 8, 4)
    assert got.json()["amount_msat"] == 60_000 - fee
    await asyncio.to_thread(wallet.receive, got.json()["token"])
    assert emulator.state.counters["completions"] <= 1


async def _asked(emulator: Emulator) -> bool:
    return any(r["path"].endswith("/chat/completions") for r in emulator.state.requests)


class HoldingMint:
    """The mint behind a loopback proxy; once ``armed``, a swap reaches the mint, its answer
    is held (``swapped`` set) and, on ``release``, the connection is dropped unanswered."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.armed = False
        #: hold the swap before it reaches the mint instead (it never happens ...)
        self.before = False
        #: (... unless this is set: then it reaches the mint once released, its asker gone)
        self.late = False
        self.swapped = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        if self.armed and self.before and request.path == "/v1/swap":
            self.swapped.set()
            await self.release.wait()
            if request.transport is not None:
                request.transport.close()
            if not self.late:
                return web.Response(status=502)
            async with httpx.AsyncClient(timeout=60) as http:
                await http.post(self.upstream + request.path_qs, content=body, headers=headers)
            return web.Response(status=502)
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.request(
                request.method, self.upstream + request.path_qs, content=body, headers=headers
            )
        if self.armed and request.path == "/v1/swap":
            self.swapped.set()  # done at the mint; the wallet has not heard
            await self.release.wait()
            assert request.transport is not None
            request.transport.close()
        return web.Response(
            status=answer.status_code,
            body=answer.content,
            content_type=answer.headers.get("content-type", "application/json").split(";")[0],
        )


async def test_killed_between_the_swap_and_its_booking_the_holder_is_refunded(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path],
    mint: Mint,
    tmp_path: Path,
) -> None:
    """SIGKILL after the mint swapped the token and before satrouter booked it: the proofs
    are gone from the agent and the wallet never stored the swap's outputs. After the restart
    the token's intent is resolved from the wallet's record and the mint: the outputs are
    restored, the token's worth is booked once as a refund, and the token fetches it all."""
    server, emulator, _, _, db = service_process
    holding = HoldingMint(mint.url)
    proxy_runner, proxy_url = await serve(holding.app())
    proxied = Mint(proxy_url, mint.folder)
    server.env |= {
        "SATROUTER_CASHU_MINTS": proxy_url,
        "SATROUTER_CASHU_PYTHON": str(PYTHON),
        "SATROUTER_CASHU_DIR": str(tmp_path / "cashu"),
    }
    wallet = AgentWallet(proxied, tmp_path / "agent-wallet")
    token = await token_through(proxy_url, mint, tmp_path / "agent-wallet")
    await server.start()
    holding.armed = True
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            call = asyncio.create_task(
                http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
            )

            async def swapped() -> bool:
                return holding.swapped.is_set()

            await until(swapped, timeout=60)
            await server.kill()
            holding.release.set()
            with pytest.raises(httpx.HTTPError):
                await call
            holding.armed = False
            await server.start()
            got = await http.get("/v1/cashu/change", headers={"X-Cashu": token})
            again = await http.get("/v1/cashu/change", headers={"X-Cashu": token})
            replay = await http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
        await server.kill()
        assert got.status_code == 200, got.text
        # the agent's wallet takes the change (through the proxy: its token names it)
        await asyncio.to_thread(wallet.receive, got.json()["token"])
        ecash = EcashWallet(str(PYTHON), tmp_path / "cashu", (proxy_url,))
        held = await held_msat(ecash, proxy_url) // 1000
    finally:
        await proxy_runner.cleanup()
    fee = 1000  # 100 ppk on the token's proofs (32, 16, 8, 4)
    assert got.json()["amount_msat"] == 60_000 - fee
    assert again.json() == got.json()  # once: the same change again
    assert replay.status_code == 400, replay.text  # the token paid; it does not pay twice
    assert replay.json()["type"].endswith("cashu_token_spent")
    assert emulator.state.counters["completions"] == 0
    store = await open_store(f"sqlite:///{db}")
    try:
        async with store.read() as tx:
            assert (await ledger.check(tx)).ok
            received = await tx.journal_by_ref(payer_of(got.json()["task_id"]))
            books = await ledger.balance(tx, ledger.ecash_account(mint_id(proxy_url)))
    finally:
        await store.close()
    assert [j.kind for j in received] == ["ecash_received"]
    assert books == held * 1000  # the restored proofs, all sent back as the change


async def test_a_token_its_holder_spent_after_a_crash_is_not_credited(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path],
    mint: Mint,
    tmp_path: Path,
) -> None:
    """SIGKILL while the swap was asked but had not reached the mint; the holder then spends
    the token in its own wallet. The open intent finds the token spent with none of this
    wallet's outputs: someone else's spend. Nothing is credited, and the intent is deleted."""
    server, _, _, _, db = service_process
    holding = HoldingMint(mint.url)
    holding.before = True
    proxy_runner, proxy_url = await serve(holding.app())
    server.env |= {
        "SATROUTER_CASHU_MINTS": proxy_url,
        "SATROUTER_CASHU_PYTHON": str(PYTHON),
        "SATROUTER_CASHU_DIR": str(tmp_path / "cashu"),
    }
    wallet = AgentWallet(Mint(proxy_url, mint.folder), tmp_path / "agent-wallet")
    token = await token_through(proxy_url, mint, tmp_path / "agent-wallet")
    await server.start()
    holding.armed = True
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            call = asyncio.create_task(
                http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
            )

            async def asked_to_swap() -> bool:
                return holding.swapped.is_set()

            await until(asked_to_swap, timeout=60)
            await server.kill()
            holding.release.set()
            with pytest.raises(httpx.HTTPError):
                await call
            holding.armed = False
            await asyncio.to_thread(wallet.receive, token)  # its holder spends it
            await server.start()
            got = await http.get("/v1/cashu/change", headers={"X-Cashu": token})
        await server.kill()
    finally:
        await proxy_runner.cleanup()
    assert got.status_code == 404, got.text
    store = await open_store(f"sqlite:///{db}")
    try:
        async with store.read() as tx:
            assert (await ledger.check(tx)).ok
            assert (await tx.ledger_totals()).entries == 0
            intent = await tx.get_value(f"cashu-intent:{token_hash(token)}")
            still_open = json.loads(await tx.get_value("cashu-intents") or "[]")
    finally:
        await store.close()
    assert intent is None and still_open == []  # it came to nothing here: nothing kept


def counting_python(tmp_path: Path) -> tuple[Path, Callable[[], list[str]]]:
    """The wallet's interpreter behind a script that notes each command it runs."""
    runs = tmp_path / "wallet-runs"
    counting = tmp_path / "counting-python"
    counting.write_text(f'#!/bin/sh\necho "$3" >> {runs}\nexec {PYTHON} "$@"\n')
    counting.chmod(0o755)
    return counting, lambda: runs.read_text().split() if runs.exists() else []


def forged_token(
    mint: Mint, keyset: str, sats: int, *, dleq: bool = False, odd: bool = False
) -> str:
    """A token that reads as a real one of ``mint`` (its keyset, sat, enough value) but
    whose proofs no mint signed: only the mint can tell (or, with a made-up DLEQ proof
    (NUT-12), the wallet; ``odd``: an amount the keyset has no key for)."""
    amounts = [1 << bit for bit in range(sats.bit_length()) if sats >> bit & 1]
    if odd:
        amounts = [sats]
    proofs: list[dict[str, Any]] = [
        {"a": a, "s": secrets.token_hex(32), "c": b"\x02" + secrets.token_bytes(32)}
        for a in amounts
    ]
    if dleq:
        proofs[0]["d"] = {k: secrets.token_bytes(32) for k in ("e", "s", "r")}
    body = {"m": mint.url, "u": "sat", "t": [{"i": bytes.fromhex(keyset), "p": proofs}]}
    return "cashuB" + base64.urlsafe_b64encode(cbor2.dumps(body)).decode().rstrip("=")


async def test_a_flood_of_tokens_under_any_credential_is_bounded_per_address(
    lnbits: LnbitsServer, mint: Mint, tmp_path: Path
) -> None:
    """Tokens sent under a new bearer value each (any string, or a Cashu token as a key)
    were counted per credential, so each escaped every limit, and each wrote an intent kept
    forever and started a wallet process. Now every X-Cashu request is counted per address
    at the door, whatever credential it carries, and a Bearer cashu... token when it is
    redeemed; what is no token of an allowed mint is refused in process (nothing written, no
    wallet started); a redeem that came to nothing leaves no record."""
    counting, runs = counting_python(tmp_path)
    emulator, emulator_runner = await start_emulator()
    settings = cashu_settings(
        tmp_path,
        emulator,
        lnbits,
        mint.url,
        python=counting,
        limit_redeems_per_address="6/day",  # a minute's window would flake at its boundary
    )
    app = create_service(settings)
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            keysets = (await http.get(f"{mint.url}/v1/keysets")).json()["keysets"]
            keyset = next(k["id"] for k in keysets if k["unit"] == "sat" and k["active"])
            cheap = await http.post(
                "/v1/chat/completions",
                json=BODY,
                headers={"X-Cashu": forged_token(mint, keyset, 1), "Authorization": "Bearer x"},
            )
            assert cheap.status_code == 402, cheap.text  # read in process: too little
            price = int(cheap.json()["price_sat"])

            async def post(n: int, **headers: str) -> httpx.Response:
                headers.setdefault("Authorization", f"Bearer junk-{n}")
                return await http.post("/v1/chat/completions", json=BODY, headers=headers)

            other_mint = forged_token(Mint("http://mint.example", mint.folder), keyset, price)
            garbage = [
                await post(0, **{"X-Cashu": "cashuB" + secrets.token_urlsafe(40)}),
                await post(1, **{"X-Cashu": other_mint}),
                await post(2, Authorization=f"Bearer cashuB{secrets.token_urlsafe(40)}"),
            ]
            ample = price * 2 + 1  # the fee covered; odd, so no power of two
            forged = [
                forged_token(mint, keyset, ample),  # the mint refuses it
                forged_token(mint, keyset, ample, dleq=True),  # the wallet does, after reading
                forged_token(mint, keyset, ample, odd=True),  # no key for its amount
                forged_token(mint, keyset, ample),
                forged_token(mint, keyset, ample),
            ]
            answers = [await post(n, **{"X-Cashu": t}) for n, t in enumerate(forged[:4])]
            as_key = await post(9, Authorization=f"Bearer {forged[4]}")
            # without a credential, any X-Cashu is a redeem at the door: past the limit too
            anonymous = await http.post(
                "/v1/chat/completions", json=BODY, headers={"X-Cashu": forged[4]}
            )
    finally:
        await runner.cleanup()
        await emulator_runner.cleanup()
    # counted: cheap, garbage[0:2], forged[0:3]; garbage[2] was refused before any count
    assert [g.status_code for g in garbage] == [400, 400, 400], [g.text for g in garbage]
    assert [a.status_code for a in answers[3:]] == [429]
    assert all(a.status_code not in (200, 429, 500) for a in answers[:3]), answers
    assert answers[0].json()["type"].endswith("cashu_token_refused"), answers[0].text
    assert not [p for p in (tmp_path / "cashu").glob("*-swaps/*") if p.is_file()]  # no journal
    assert as_key.status_code == 429, as_key.text
    assert anonymous.status_code == 429, anonymous.text
    assert runs().count("redeem") == 3  # the three forged ones let through, no more
    store = await open_store(settings.database_url)
    try:
        async with store.read() as tx:
            assert await ledger.balance(tx, ledger.ecash_account(mint_id(mint.url))) == 0
            assert json.loads(await tx.get_value("cashu-intents") or "[]") == []
            for token in forged:
                assert await tx.get_value(f"cashu-intent:{token_hash(token)}") is None
    finally:
        await store.close()


async def test_a_paid_answer_is_not_held_back_by_a_busy_wallet(cashu: CashuService) -> None:
    """The change of a call that ran waits for the wallet's turn a few seconds at most: the
    answer then leaves with ``X-Cashu-Change: pending``, and the change waits at its URL."""
    price = await _price_sat(cashu)
    token = await cashu.token(price + 10)
    cashu.emulator.state.faults.set(BODY["model"], Fault(kind="slow", delay=4))
    call = asyncio.create_task(
        cashu.http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
    )
    await until(lambda: _asked(cashu.emulator))  # redeemed, and running
    beside = EcashWallet(str(PYTHON), cashu.ecash.data_dir, (cashu.mint.url,))  # as a process
    async with beside.turn(cashu.mint.url):
        answer = await call
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Cashu-Change"] == "pending"
    assert "X-Cashu" not in answer.headers
    got = await cashu.http.get(answer.headers["X-Cashu-Change-Url"], headers={"X-Cashu": token})
    assert got.status_code == 200, got.text
    async with beside.turn(cashu.mint.url):  # minted once: asking again takes no turn
        again = await cashu.http.get("/v1/cashu/change", headers={"X-Cashu": token}, timeout=5)
    assert again.json() == got.json()
    await asyncio.to_thread(cashu.wallet.receive, got.json()["token"])
    await cashu.check()


async def test_journals_of_swaps_that_never_started_are_pruned(cashu: CashuService) -> None:
    """A wallet killed after journaling a swap but before taking its outputs' counters
    leaves a journal naming counters the next operation takes: pruned by the next command,
    it cannot later pass that operation's outputs for the swap's. One whose counters were
    taken stays."""
    price = await _price_sat(cashu)
    paid = await cashu.http.post(
        "/v1/chat/completions", json=BODY, headers={"X-Cashu": await cashu.token(price + 5)}
    )
    assert paid.status_code == 200, paid.text  # the wallet's counter has moved on
    keysets = httpx.get(f"{cashu.mint.url}/v1/keysets").json()["keysets"]
    keyset = next(k["id"] for k in keysets if k["unit"] == "sat" and k["active"])
    swaps = cashu.ecash.journal(cashu.mint.url, "x").parent
    swaps.mkdir(exist_ok=True)
    record = {"mint": cashu.mint.url, "ys": [], "keyset_id": keyset, "outputs": 1}
    taken, unstarted = swaps / f"{'a' * 64}.json", swaps / f"{'b' * 64}.json"
    taken.write_text(json.dumps({**record, "counter": 0, "amount": 1, "fee": 0}))
    unstarted.write_text(json.dumps({**record, "counter": 10**6, "amount": 1, "fee": 0}))
    await cashu.proofs_held()  # any command
    assert taken.exists() and not unstarted.exists()


async def test_a_swap_that_lands_after_the_wallet_gave_up_is_refunded_not_dropped(
    lnbits: LnbitsServer, mint: Mint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet gives up on a swap it sent (its timeout); the mint, asked at once, still
    has the proofs unspent, and then carries out the swap. The token was not dropped as
    unspent (the holder would have lost it): its intent stays open, the caller is told the
    outcome is unknown, and once the swap has landed its worth is refunded to the holder."""
    monkeypatch.setattr(redeems, "RECHECK", 30.0)
    counting, runs = counting_python(tmp_path)
    holding = HoldingMint(mint.url)
    holding.before = holding.late = True
    proxy_runner, proxy_url = await serve(holding.app())
    emulator, emulator_runner = await start_emulator()
    settings = cashu_settings(
        tmp_path,
        emulator,
        lnbits,
        proxy_url,
        python=counting,
        cashu_timeout=10,  # a swap unspent is final after 20 s: ample for the late one
    )
    runner, url = await serve(create_service(settings))
    token = await token_through(proxy_url, mint, tmp_path / "agent-wallet")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            holding.armed = True
            first = await http.post("/v1/chat/completions", json=BODY, headers={"X-Cashu": token})
            # asked about a moment ago: however many ask now, the wallet is not asked again
            asking = [http.get("/v1/cashu/change", headers={"X-Cashu": token}) for _ in range(5)]
            meanwhile = await asyncio.gather(*asking)
            recovers = runs().count("recover")
            monkeypatch.setattr(redeems, "RECHECK", 0.5)
            holding.release.set()  # the swap reaches the mint now

            async def change() -> httpx.Response | None:
                got = await http.get("/v1/cashu/change", headers={"X-Cashu": token})
                return got if got.status_code != 502 else None

            got = await until(change, timeout=30)
    finally:
        await runner.cleanup()
        await emulator_runner.cleanup()
        await proxy_runner.cleanup()
    assert first.status_code == 502, first.text
    assert first.json()["type"].endswith("cashu_outcome_unknown")
    assert "Retry-After" in first.headers
    assert [m.status_code for m in meanwhile] == [502] * 5
    assert all(int(m.headers["Retry-After"]) >= 5 for m in meanwhile)
    assert recovers == 1  # the failed redeem's own check, no more
    assert got.status_code == 200, got.text
    assert got.json()["amount_msat"] == 60_000 - 1000  # all of it, less the swap's fee
    assert emulator.state.counters["completions"] == 0
