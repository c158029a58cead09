"""A credit seller for the top-up tests: sells OpenRouter (emulator) credits for Lightning.

``GET /invoice?amount_sat=&amount_usd=&id=`` answers ``{"invoice": ...}`` from the seller's own
LNbits wallet; :meth:`deliver` adds the credits of every paid invoice to the emulator, keeping a
purchase fee, as a real seller would after the payment cleared.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
from aiohttp import web

from billing.lightning.lnbits import LnbitsBackend
from billing.money import Msat


class CreditSeller:
    def __init__(self, backend: LnbitsBackend, emulator_url: str, fee: Decimal) -> None:
        self.backend = backend
        self.emulator_url = emulator_url
        self.fee = fee
        self.pending: dict[str, Decimal] = {}
        self.delivered: list[Decimal] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/invoice", self.invoice)
        return app

    async def invoice(self, request: web.Request) -> web.Response:
        sats = int(request.query["amount_sat"])
        created = await self.backend.create_invoice(Msat.from_sat(sats), "credits", 600)
        self.pending[created.payment_hash] = Decimal(request.query["amount_usd"])
        return web.json_response({"invoice": created.bolt11})

    async def deliver(self) -> None:
        for payment_hash, usd in list(self.pending.items()):
            if (await self.backend.invoice_status(payment_hash)).settled:
                credited = (usd * (1 - self.fee)).quantize(Decimal("0.000001"))
                async with httpx.AsyncClient() as http:
                    response = await http.post(
                        self.emulator_url + "/_emulator/credits", json={"amount": str(credited)}
                    )
                    response.raise_for_status()
                self.delivered.append(credited)
                del self.pending[payment_hash]
