"""Discovery: the A2A agent card.

The card is checked against the A2A SDK's own ``AgentCard`` message (unknown field names are
refused), against ``/openapi.json`` and ``/v1/models`` as served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from a2a.types import AgentCard
from google.protobuf.json_format import ParseDict

from service.http.payment_schemes import PAYMENT_SCHEMES, PaymentScheme, register
from tests.conftest import Emulator, offline_service

CARD = "/.well-known/agent-card.json"


# -- the agent card ---------------------------------------------------------------------------


async def test_card_is_an_a2a_agent_card(tmp_path: Path, emulator: Emulator) -> None:
    async with offline_service(tmp_path, openrouter_base_url=emulator.base_url) as http:
        response = await http.get(CARD)
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    card = response.json()
    parsed = ParseDict(card, AgentCard())  # refuses any name the A2A spec does not have
    for required in ("name", "description", "version"):
        assert getattr(parsed, required)
    assert parsed.supported_interfaces[0].url == str(http.base_url).rstrip("/")
    assert parsed.supported_interfaces[0].protocol_binding
    assert parsed.supported_interfaces[0].protocol_version == "1.0"
    assert list(parsed.default_input_modes) == ["application/json"]
    assert parsed.skills and all(
        s.id and s.name and s.description and s.tags for s in parsed.skills
    )
    assert parsed.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert parsed.security_schemes["l402"].api_key_security_scheme.location == "header"


async def test_card_skills_and_schemes_are_the_openapi_documents(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        card = (await http.get(CARD)).json()
        document = (await http.get("/openapi.json")).json()
    public = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    described = {" ".join(skill["tags"][:2]) for skill in card["skills"]}
    assert described == public
    summaries = {
        f"{method.upper()} {path}": op["summary"]
        for path, operations in document["paths"].items()
        for method, op in operations.items()
    }
    for skill in card["skills"]:
        assert skill["name"] == summaries[" ".join(skill["tags"][:2])]
    assert card["version"] == document["info"]["version"]
    assert card["securitySchemes"].keys() == document["components"]["securitySchemes"].keys()
    assert CARD in document["paths"]
    chat = next(s for s in card["skills"] if s["id"] == "post-v1-chat-completions")
    assert {"payment:l402", "payment:prepaid-key"} <= set(chat["tags"])
    assert {"schemes": {"l402": {"list": []}}} in chat["securityRequirements"]


def _payments(card: dict[str, Any]) -> dict[str, Any]:
    (ext,) = card["capabilities"]["extensions"]
    assert ext["uri"] == "urn:satrouter:a2a:payments:v1"
    params: dict[str, Any] = ext["params"]
    return params


async def test_card_lists_the_registered_payment_schemes(tmp_path: Path) -> None:
    extra = PaymentScheme(
        id="test-scheme",
        name="Test",
        description="registered by a test",
        security_scheme=None,
        operations=("POST /v1/chat/completions",),
    )
    async with offline_service(tmp_path) as http:
        before = _payments((await http.get(CARD)).json())
        register(extra)
        try:
            after = (await http.get(CARD)).json()
        finally:
            del PAYMENT_SCHEMES[extra.id]
    assert [s["id"] for s in before["schemes"]] == list(PAYMENT_SCHEMES)
    assert "l402" in PAYMENT_SCHEMES
    assert [s["id"] for s in _payments(after)["schemes"]] == [*PAYMENT_SCHEMES, "test-scheme"]
    chat = next(s for s in after["skills"] if s["id"] == "post-v1-chat-completions")
    assert "payment:test-scheme" in chat["tags"]
    with pytest.raises(ValueError, match="twice"):
        register(PAYMENT_SCHEMES["l402"])


async def test_card_prices_are_v1_models_prices(tmp_path: Path, emulator: Emulator) -> None:
    async with offline_service(tmp_path, openrouter_base_url=emulator.base_url) as http:
        card = (await http.get(CARD)).json()
        listed = (await http.get("/v1/models")).json()
    payments = _payments(card)
    assert payments["unit"] == "msat"
    assert payments["btcUsd"] == listed["btc_usd"]
    fields = ("prompt_msat_per_mtok", "completion_msat_per_mtok", "request_msat", "variable_price")
    assert listed["data"]
    assert payments["models"] == [
        {"id": m["id"], **{f: m[f] for f in fields}} for m in listed["data"]
    ]


async def test_card_without_a_catalog_still_says_how_to_pay(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:  # OpenRouter unreachable: no catalog
        response = await http.get(CARD)
    assert response.status_code == 200
    payments = _payments(response.json())
    assert payments["models"] == []
    assert payments["pricesUnavailable"] == "catalog_unavailable"
    assert payments["schemes"]


async def test_card_names_the_public_url(tmp_path: Path) -> None:
    async with offline_service(tmp_path, public_url="https://sat.example.com/") as http:
        card = (await http.get(CARD, headers={"Host": "evil.example"})).json()
    assert card["supportedInterfaces"][0]["url"] == "https://sat.example.com"
    assert card["documentationUrl"] == "https://sat.example.com/openapi.json"
