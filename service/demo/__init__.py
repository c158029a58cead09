"""``make demo``: every way to pay, end to end, on embedded defaults.

Starts a real LNbits (FakeWallet; installed into ``.venv-lnbits`` on the first run), the
OpenRouter emulator (or uses the real OpenRouter when ``OPENROUTER_API_KEY`` is set), and
satrouter itself on a fresh SQLite file; creates two agent wallets and funds them; then runs an
L402 chat completion (and one answering the same 402's MPP offer, one its x402 offer), a task
with a signed callback, a prepaid key used through the ``openai`` SDK with streaming, a task
whose first model is rate limited, one whose models all fail, routing, and a request paid
with a Cashu token (a nutshell mint from ``.venv-cashu``) whose change comes back as a token.
Prints what each paid, cost, got back and earned, then the ledger check, and stops everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from billing import ledger, mpp
from billing.store import TaskRow

from ..app import create_app
from ..config import Settings
from ..emulator.app import DEFAULT_API_KEY, STATE, EmulatorConfig
from ..emulator.app import create_app as create_emulator
from ..emulator.faults import Fault
from ..http.keys import STORE
from ..tasks.callbacks import verify
from ..tasks.engine import EngineConfig
from .cashu import PYTHON as CASHU_PYTHON
from .cashu import AgentWallet, Mint, running_mint
from .lnbits import LnbitsServer, Wallet
from .loopback import serve

CHEAP = "meta-llama/llama-3.1-8b-instruct"
BACKUP = "openai/gpt-4o-mini"
QUESTION: Any = [{"role": "user", "content": "In one sentence: why pay per task over Lightning?"}]


def _say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    def __init__(
        self, lnbits: LnbitsServer, app: web.Application, url: str, emulator: web.Application | None
    ) -> None:
        self.lnbits = lnbits
        self.app = app
        self.url = url
        self.emulator = emulator
        self.http = httpx.AsyncClient(base_url=url, timeout=60)

    async def pay(self, payer: Wallet, bolt11: str) -> dict[str, Any]:
        response = await asyncio.to_thread(self.lnbits.pay, payer, bolt11)
        response.raise_for_status()
        payment_hash = response.json()["payment_hash"]
        status = await asyncio.to_thread(
            httpx.get,
            f"{self.lnbits.url}/api/v1/payments/{payment_hash}",
            headers={"X-Api-Key": payer.adminkey},
        )
        return dict(status.json())

    async def task(self, task_id: str) -> TaskRow:
        async with self.app[STORE].read() as tx:
            task = await tx.task(task_id)
        assert task is not None
        return task

    async def settled(self, task_id: str, within: float = 60) -> TaskRow:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            task = await self.task(task_id)
            if task.state in ("reconciled", "refunded", "expired"):
                return task
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{task_id} did not finish")

    def account(self, task: TaskRow) -> None:
        data = task.data
        held = data.get("held_msat", 0)
        if task.state == "refunded":
            _say(f"   {task.id}: refunded {held / 1000:g} sat in full ({data.get('error')})")
            return
        cost_usd = data["cost_nusd"] / 1e9
        flag = " (provisional)" if data.get("provisional") else ""
        _say(
            f"   {task.id} on {data.get('model_used')}: paid {held / 1000:g} sat, OpenRouter "
            f"cost ${cost_usd:.9f}{flag}, charged {data['charge_msat'] / 1000:g} sat, change "
            f"{data['change_msat'] / 1000:g} sat, margin {data['margin_msat'] / 1000:g} sat"
        )

    async def l402(self, alice: Wallet) -> None:
        _say("\n1. L402 on /v1/chat/completions")
        body = json.dumps({"model": CHEAP, "messages": QUESTION, "max_tokens": 60}).encode()
        headers = {"Content-Type": "application/json"}
        challenge = await self.http.post("/v1/chat/completions", content=body, headers=headers)
        problem = challenge.json()
        _say(
            f"   no credential -> HTTP {challenge.status_code}, "
            f"{challenge.headers['WWW-Authenticate'].split(' ')[0]}/L402 challenge for "
            f"{problem['price']['total_msat'] / 1000:g} sat"
        )
        paid = await self.pay(alice, problem["invoice"])
        answer = await self.http.post(
            "/v1/chat/completions",
            content=body,
            headers={**headers, "Authorization": f"L402 {problem['macaroon']}:{paid['preimage']}"},
        )
        _say(
            f"   paid, retried with L402 -> HTTP {answer.status_code}: "
            f"{answer.json()['choices'][0]['message']['content'][:70]!r}"
        )
        self.account(await self.settled(answer.headers["X-Satrouter-Task"]))

    async def mpp_and_x402(self, alice: Wallet) -> None:
        """The same 402's other offers: its invoice paid, answered as MPP, then as x402."""
        _say("\n1b. The 402's MPP and x402 offers (the same invoice)")
        headers = {"Content-Type": "application/json"}
        for scheme, max_tokens in (("MPP", 50), ("x402", 40)):
            body = json.dumps({"model": CHEAP, "messages": QUESTION, "max_tokens": max_tokens})
            challenge = await self.http.post("/v1/chat/completions", content=body, headers=headers)
            _, payment, required = challenge.json()["offers"]
            paid = await self.pay(alice, challenge.json()["invoice"])
            if scheme == "MPP":
                echo = {k: payment[k] for k in ("id", "realm", "method", "intent", "request")}
                echo |= {"expires": payment["expires"], "digest": payment["digest"]}
                token = {"challenge": echo, "payload": {"preimage": paid["preimage"]}}
                credential = {"Authorization": "Payment " + mpp.b64url(json.dumps(token).encode())}
            else:
                accepted = required["accepts"][0]
                signature = {
                    "x402Version": 2,
                    **{k: accepted[k] for k in ("scheme", "network")},
                    "payload": {"invoice": accepted["extra"]["invoice"]},
                    "accepted": accepted,
                }
                encoded = base64.b64encode(json.dumps(signature).encode()).decode()
                credential = {"PAYMENT-SIGNATURE": encoded}
            answer = await self.http.post(
                "/v1/chat/completions", content=body, headers={**headers, **credential}
            )
            proof = "Payment-Receipt" if scheme == "MPP" else "PAYMENT-RESPONSE"
            _say(
                f"   paid, answered as {scheme} -> HTTP {answer.status_code} with {proof}: "
                f"{answer.json()['choices'][0]['message']['content'][:50]!r}"
            )
            self.account(await self.settled(answer.headers["X-Satrouter-Task"]))

    async def callback_task(self, bob: Wallet) -> None:
        _say("\n2. Task API with a signed callback")
        received: list[tuple[bytes, str]] = []

        async def hook(request: web.Request) -> web.Response:
            received.append((await request.read(), request.headers["X-Satrouter-Signature"]))
            return web.Response(status=204)

        receiver = web.Application()
        receiver.router.add_post("/hook", hook)
        runner, url = await serve(receiver)
        try:
            created = (
                await self.http.post(
                    "/v1/tasks",
                    json={"messages": QUESTION, "model": CHEAP, "callback_url": url + "/hook"},
                )
            ).json()
            _say(
                f"   POST /v1/tasks -> {created['id']} awaiting payment of "
                f"{created['invoice']['amount_msat'] / 1000:g} sat"
            )
            await self.pay(bob, created["invoice"]["bolt11"])
            task = await self.settled(created["id"])
            for _ in range(50):
                if len(received) >= 4:  # paid, running, completed, reconciled
                    break
                await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()
        good = all(verify(created["callback_secret"], body, sig) for body, sig in received)
        kinds = [json.loads(body)["type"].removeprefix("task.") for body, _ in received]
        _say(
            f"   callbacks ({'all signatures valid' if good else 'BAD SIGNATURE'}): "
            + " -> ".join(kinds)
        )
        self.account(task)

    async def prepaid(self, alice: Wallet) -> None:
        import openai

        _say("\n3. Prepaid API key: the openai SDK, streaming, and a task paid from the balance")
        account = (await self.http.post("/v1/accounts")).json()
        auth = {"Authorization": f"Bearer {account['api_key']}"}
        deposit = (
            await self.http.post("/v1/accounts/deposits", json={"amount_sat": 2000}, headers=auth)
        ).json()
        await self.pay(alice, deposit["bolt11"])
        for _ in range(100):
            balance = (await self.http.get("/v1/accounts/me", headers=auth)).json()
            if balance["balance_msat"]:
                break
            await asyncio.sleep(0.1)
        _say(f"   deposited 2000 sat; balance {balance['balance_msat'] / 1000:g} sat")
        sdk = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=account["api_key"])
        pieces: list[str] = []
        raw = await sdk.chat.completions.with_raw_response.create(
            model=CHEAP,
            messages=QUESTION,
            max_tokens=40,
            stream=True,
        )
        task_id = raw.headers["X-Satrouter-Task"]
        stream = raw.parse()
        assert isinstance(stream, openai.AsyncStream)
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
        await sdk.close()
        _say(f"   streamed {len(pieces)} chunks: {''.join(pieces)[:70]!r}")
        task = await self.settled(task_id)
        self.account(task)
        created = (
            await self.http.post(
                "/v1/tasks",
                json={"messages": QUESTION, "model": CHEAP, "max_tokens": 40},
                headers=auth,
            )
        ).json()
        _say(f"   the same key pays for a task at once, no invoice: {created['status']}")
        self.account(await self.settled(created["id"]))
        after = (await self.http.get("/v1/accounts/me", headers=auth)).json()
        _say(f"   balance now {after['balance_msat'] / 1000:g} sat")

    async def fallback_and_refund(self, bob: Wallet) -> None:
        if self.emulator is None:
            _say("\n4-5. fallback and refund need the emulator's fault injection: skipped")
            return
        faults = self.emulator[STATE].faults
        for step, (fault_model, title) in enumerate(
            ((CHEAP, "first model rate limited -> fallback"), ("*", "every model down -> refund")),
            start=4,
        ):
            _say(f"\n{step}. {title}")
            faults.set(fault_model, Fault(kind="rate_limit" if step == 4 else "bad_gateway"))
            self.account(
                await self._paid_task(bob, {"messages": QUESTION, "models": [CHEAP, BACKUP]})
            )
            faults.clear()

    async def _paid_task(self, payer: Wallet, body: dict[str, Any]) -> TaskRow:
        created = (await self.http.post("/v1/tasks", json=body)).json()
        await self.pay(payer, created["invoice"]["bolt11"])
        return await self.settled(created["id"])

    async def routing(self, bob: Wallet) -> None:
        _say("\n6. Routing: auto picks a tier by task class; cascade drafts, checks, escalates")
        for ask in (
            "Write a Python function that tells whether a number is prime.",
            "Extract the city from: 'I flew in from Lisbon yesterday.' Reply with the name only.",
        ):
            message = [{"role": "user", "content": ask}]
            task = await self._paid_task(bob, {"messages": message, "model": "auto"})
            _say(f"   auto: {ask[:48]!r}... is {task.data['task_class']} -> {task.data['tier']}")
            self.account(task)
        ask = "Name the capital of Australia in one word."
        if self.emulator is not None:  # emulated drafts are confident unless told otherwise
            ask += " [[confidence=0.3]]"
        message = [{"role": "user", "content": ask}]
        task = await self._paid_task(bob, {"messages": message, "model": "cascade"})
        report = task.data["cascade"]
        draft = report["steps"][0]
        check = draft.get("check") or {}
        verdict = "passed" if check.get("passed") else f"failed ({', '.join(check['reasons'])})"
        _say(
            f"   cascade: draft by {draft.get('model')} {verdict}"
            + (f" -> escalated to {report['answered_by']}" if report["escalated"] else "")
            + f"; {len(task.data['calls'])} calls paid"
        )
        self.account(task)

    async def cashu(self, mint: Mint, workdir: Path) -> None:
        _say("\n7. Cashu ecash (RIP-01): a token in X-Cashu pays, the change comes back as a token")
        carol = AgentWallet(mint, workdir / "carol-ecash")
        await asyncio.to_thread(carol.fund, 500)
        token = await asyncio.to_thread(carol.token, 100)
        _say(f"   carol minted 500 sat of ecash at {mint.url}; sends a 100 sat token")
        response = await self.http.post(
            "/v1/chat/completions",
            json={"model": CHEAP, "messages": QUESTION, "max_tokens": 60},
            headers={"X-Cashu": token},
        )
        response.raise_for_status()
        headers = response.headers
        _say(
            f"   the mint's fee for the swap: {int(headers['X-Cashu-Fee-Msat']) / 1000:g} sat; "
            f"change {int(headers['X-Cashu-Change-Msat']) / 1000:g} sat as a fresh token"
        )
        await asyncio.to_thread(carol.receive, headers["X-Cashu"])
        held = await asyncio.to_thread(carol.balance)
        _say(f"   carol redeemed her change: her wallet holds {held} sat")
        async with self.app[STORE].read() as tx:
            task = await tx.task(headers["X-Satrouter-Task"])
        assert task is not None
        self.account(task)

    async def books(self) -> bool:
        async with self.app[STORE].read() as tx:
            check = await ledger.check(tx)
            revenue = await ledger.balance(tx, ledger.REVENUE)
            cost = await ledger.balance(tx, ledger.LLM_COST)
            owed = sum(-a.balance for a in await tx.accounts("liabilities:agent:"))
        _say("\nBooks")
        _say(
            f"   revenue {revenue / 1000:g} sat, OpenRouter cost ${cost / 1e9:.9f}, "
            f"owed to agents (change and refunds) {owed / 1000:g} sat"
        )
        _say(
            f"   ledger check: {'balanced' if check.ok else 'FAILED'} "
            f"({check.totals.entries} entries, {check.totals.postings} postings)"
        )
        for problem in check.problems:
            _say(f"   ! {problem}")
        return check.ok

    async def close(self) -> None:
        await self.http.aclose()


async def run_demo() -> int:
    noisy = ("httpx", "httpx2", "aiohttp.access", "satrouter.access", "billing.lightning.lnbits")
    for name in (*noisy, "service.tasks"):
        logging.getLogger(name).setLevel(logging.WARNING)
    real_key = os.environ.get("OPENROUTER_API_KEY")
    workdir = Path(tempfile.mkdtemp(prefix="satrouter-demo-"))
    _say("satrouter demo")
    _say("   starting LNbits (FakeWallet; installed into .venv-lnbits on the first run)")
    lnbits = LnbitsServer()
    await asyncio.to_thread(lnbits.start)
    runners: list[web.AppRunner] = []
    demo: Demo | None = None
    stack = contextlib.ExitStack()
    try:
        _say("   starting a Cashu mint (nutshell, fake Lightning backend; .venv-cashu)")
        mint = await asyncio.to_thread(stack.enter_context, running_mint())
        emulator = None
        if real_key:
            base_url = os.environ.get("OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1")
            _say(f"   OpenRouter: {base_url}")
        else:
            emulator = create_emulator(EmulatorConfig(generation_delay=0.5))
            runner, emulator_url = await serve(emulator)
            runners.append(runner)
            base_url = emulator_url + "/api/v1"
            _say(f"   OpenRouter emulator: {base_url}")
        service_wallet = lnbits.create_wallet("satrouter")
        alice, bob = lnbits.create_wallet("alice"), lnbits.create_wallet("bob")
        lnbits.fund(alice, 200_000)
        lnbits.fund(bob, 200_000)
        _say("   agents alice and bob funded with 200,000 sat each")
        settings = Settings(
            database_url=f"sqlite:///{workdir}/satrouter.db",
            openrouter_base_url=base_url,
            openrouter_api_key=real_key or DEFAULT_API_KEY,
            lnbits_url=lnbits.url,
            lnbits_invoice_key=service_wallet.inkey,
            lnbits_admin_key=service_wallet.adminkey,
            btc_usd=os.environ.get("SATROUTER_BTC_USD", "100000"),
            catalog_cache=workdir / "models.json",
            callback_allow_private=True,  # the demo's callback receiver is on loopback
            metrics_port=None,  # the demo scrapes nothing
            cashu_mints=mint.url,
            cashu_dir=workdir / "cashu",
            cashu_python=str(CASHU_PYTHON),
        )
        app = create_app(settings, engine_config=EngineConfig(generation_deadline=20))
        runner, url = await serve(app)
        runners.append(runner)
        _say(f"   satrouter: {url} (SQLite {workdir}/satrouter.db)")
        demo = Demo(lnbits, app, url, emulator)
        await demo.l402(alice)
        await demo.mpp_and_x402(alice)
        await demo.callback_task(bob)
        await demo.prepaid(alice)
        await demo.fallback_and_refund(bob)
        await demo.routing(bob)
        await demo.cashu(mint, workdir)
        ok = await demo.books()
    finally:
        if demo is not None:
            await demo.close()
        for runner in reversed(runners):
            await runner.cleanup()
        await asyncio.to_thread(lnbits.stop)
        await asyncio.to_thread(stack.close)
    _say("\ndemo finished: everything stopped")
    return 0 if ok else 1
