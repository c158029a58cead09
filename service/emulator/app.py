"""An offline stand-in for OpenRouter that speaks its exact shapes.

Routes (under ``/api/v1`` like the real service, so ``OPENROUTER_BASE_URL`` is the only change):
``POST /chat/completions`` (JSON, or SSE with ``: OPENROUTER PROCESSING`` keep-alives and the
usage chunk last), ``GET /models`` (the catalog the project ships), ``GET /generation?id=``
(404 until ``generation_delay`` has passed since the completion), ``GET /credits``
(management key only) and ``GET /key`` / ``GET /auth/key``.

An Ollama-style local OpenAI-compatible endpoint lives under ``/local/v1`` (free, no key).

The emulator-only control API under ``/_emulator`` sets faults, latency, delays and credits at
run time, and shows what requests arrived, so tests can check what the client sent.
"""

from aiohttp import web

from . import completions, control, endpoints
from .faults import FaultTable
from .state import (
    DEFAULT_API_KEY,
    DEFAULT_MANAGEMENT_KEY,
    LOCAL_MODELS,
    STATE,
    EmulatorConfig,
    EmulatorState,
    load_catalog,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MANAGEMENT_KEY",
    "LOCAL_MODELS",
    "STATE",
    "EmulatorConfig",
    "EmulatorState",
    "create_app",
    "load_catalog",
]


def create_app(config: EmulatorConfig | None = None) -> web.Application:
    config = config or EmulatorConfig()
    body = load_catalog(config.catalog_path)
    state = EmulatorState(
        config=config,
        catalog={m["id"]: m for m in body["data"]},
        catalog_body=body,
        faults=FaultTable(config.seed),
    )
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/api/v1/chat/completions", completions.chat)
    app.router.add_get("/api/v1/models", endpoints.list_models)
    app.router.add_get("/api/v1/generation", endpoints.get_generation)
    app.router.add_get("/api/v1/credits", endpoints.get_credits)
    app.router.add_get("/api/v1/key", endpoints.get_key)
    app.router.add_get("/api/v1/auth/key", endpoints.get_key)
    app.router.add_post("/local/v1/chat/completions", completions.local_chat)
    app.router.add_get("/local/v1/models", endpoints.list_local_models)
    app.router.add_get("/_emulator/state", control.control_state)
    app.router.add_post("/_emulator/faults", control.control_set_fault)
    app.router.add_delete("/_emulator/faults", control.control_clear_faults)
    app.router.add_post("/_emulator/config", control.control_config)
    app.router.add_post("/_emulator/credits", control.control_add_credits)
    app.router.add_get("/_emulator/requests", control.control_requests)
    return app
