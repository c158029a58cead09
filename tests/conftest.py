"""Shared fixtures: the OpenRouter emulator on a real loopback port, and a client bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.emulator.app import (
    DEFAULT_API_KEY,
    DEFAULT_MANAGEMENT_KEY,
    STATE,
    EmulatorConfig,
    EmulatorState,
    create_app,
)
from service.upstream.openrouter import OpenRouterClient

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Emulator:
    url: str  # http://127.0.0.1:PORT
    app: web.Application

    @property
    def base_url(self) -> str:
        return self.url + "/api/v1"

    @property
    def state(self) -> EmulatorState:
        return self.app[STATE]

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient() as http:
            response = await http.request(method, self.url + "/_emulator" + path, json=body)
            response.raise_for_status()
            return response.json()


async def start_emulator(config: EmulatorConfig | None = None) -> tuple[Emulator, web.AppRunner]:
    app = create_app(config or EmulatorConfig(generation_delay=0.0))
    runner, url = await serve(app, handler_cancellation=True)
    return Emulator(url, app), runner


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu, runner = await start_emulator()
    yield emu
    await runner.cleanup()


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[OpenRouterClient]:
    async with OpenRouterClient(
        base_url=emulator.base_url,
        api_key=DEFAULT_API_KEY,
        management_key=DEFAULT_MANAGEMENT_KEY,
        referer="https://agents.example",
        title="satrouter tests",
        timeout=10,
    ) as c:
        yield c


@pytest.fixture(scope="session")
def lnbits() -> Iterator[LnbitsServer]:
    """A real LNbits server (FakeWallet) for the whole session."""
    server = LnbitsServer()
    server.start()
    yield server
    server.stop()
