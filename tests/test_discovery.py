"""Discovery: the A2A agent card and the Nostr kind 38421 provider announcement.

The card is checked against the A2A SDK's own ``AgentCard`` message (unknown field names are
refused), against ``/openapi.json`` and ``/v1/models`` as served; the announcement's id and
BIP-340 signature are checked by rust-nostr (``nostr-sdk``), not by the library that signs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest
from a2a.types import AgentCard
from aiohttp import web
from google.protobuf.json_format import ParseDict

from service.announce import KIND, announcement
from service.demo.loopback import serve
from service.http import health
from service.http.payment_schemes import PAYMENT_SCHEMES, PaymentScheme, register
from service.nostr import NostrKeyError, parse_key, sign_event
from tests.conftest import Emulator, offline_service

# NIP-19's own example key.
NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
SECRET_HEX = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
CARD = "/.well-known/agent-card.json"


def routstr_reads(event: dict[str, Any]) -> dict[str, Any]:
    """What Routstr's ``parse_provider_announcement`` takes from a kind 38421 event."""
    tags = event["tags"]
    metadata = json.loads(event["content"])
    urls = [t[1] for t in tags if t[0] == "u"]
    return {
        "id": next(t[1] for t in tags if t[0] == "d"),
        "endpoint_url": urls[0],
        "endpoint_urls": urls,
        "mint_urls": [t[1] for t in tags if t[0] == "mint"],
        "version": next(t[1] for t in tags if t[0] == "version"),
        "name": metadata["name"],
        "description": metadata["about"],
        "models": metadata["models"],
    }


def independently_valid(event: dict[str, Any]) -> bool:
    """rust-nostr's check: the id is the NIP-01 hash and the signature verifies."""
    return bool(nostr_sdk.Event.from_json(json.dumps(event)).verify())


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


async def test_the_openapi_document_is_built_once_for_all_readers(tmp_path: Path) -> None:
    health.openapi_body.cache_clear()
    async with offline_service(tmp_path) as http:
        answers = [await http.get("/openapi.json") for _ in range(3)]
    assert {a.status_code for a in answers} == {200}
    assert answers[0].headers["Content-Type"].startswith("application/json")
    assert answers[0].json() == health.openapi() == answers[2].json()
    assert health.openapi_body.cache_info().misses == 1


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


async def test_cashu_is_offered_with_its_mints_only_where_the_operator_allows_mints(
    tmp_path: Path,
) -> None:
    mints = "https://mint.example/,https://other.example/cashu"
    async with offline_service(tmp_path, cashu_mints=mints) as http:
        schemes = _payments((await http.get(CARD)).json())["schemes"]
    cashu = next(s for s in schemes if s["id"] == "cashu")
    assert cashu["mints"] == mints.split(",")
    assert cashu["securityScheme"] == "cashu"
    assert [s["id"] for s in schemes] == list(PAYMENT_SCHEMES)


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
    always = [s.id for s in PAYMENT_SCHEMES.values() if s.enabled_by is None]
    assert [s["id"] for s in before["schemes"]] == always
    assert "l402" in PAYMENT_SCHEMES and "cashu" not in always
    assert [s["id"] for s in _payments(after)["schemes"]] == [*always, "test-scheme"]
    chat = next(s for s in after["skills"] if s["id"] == "post-v1-chat-completions")
    assert "payment:test-scheme" in chat["tags"]
    with pytest.raises(ValueError, match="twice"):
        register(PAYMENT_SCHEMES["l402"])


def test_each_registered_scheme_names_real_operations_and_credentials() -> None:
    operations = {f"{method.upper()} {path}" for method, path, *_ in health.OPERATIONS}
    for scheme in PAYMENT_SCHEMES.values():
        assert set(scheme.operations) <= operations, scheme.id
        assert scheme.security_scheme in (None, *health.SECURITY_SCHEMES), scheme.id


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


async def test_card_has_an_etag_and_answers_304_to_it(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        first = await http.get(CARD)
        etag = first.headers["etag"]
        again = await http.get(CARD, headers={"If-None-Match": etag})
        other = await http.get(CARD, headers={"If-None-Match": '"something-else"'})
    assert etag.startswith('"') and etag.endswith('"')
    assert again.status_code == 304
    assert again.content == b""
    assert other.status_code == 200
    assert other.json() == first.json()


@pytest.mark.parametrize("host", ["h:abc", "evil.example:99999", "a b", "x/y", "[::1", ""])
async def test_a_bad_host_header_gets_a_problem(tmp_path: Path, host: str) -> None:
    async with offline_service(tmp_path) as http:
        reader, writer = await asyncio.open_connection(http.base_url.host, http.base_url.port)
        writer.write(f"GET {CARD} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"application/problem+json" in head
    assert json.loads(body)["type"] == "urn:satrouter:problem:invalid_host"


async def test_the_host_reached_names_the_card_without_a_public_url(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        named = (await http.get(CARD, headers={"Host": "sat.example.com:8443"})).json()
    assert named["supportedInterfaces"][0]["url"] == "http://sat.example.com:8443"


# -- the Nostr event --------------------------------------------------------------------------


def test_nsec_and_hex_are_the_same_key() -> None:
    expected = nostr_sdk.Keys.parse(NSEC).public_key().to_hex()
    assert parse_key(NSEC).pubkey == expected
    assert parse_key(SECRET_HEX).pubkey == expected
    assert parse_key(f"  {SECRET_HEX.upper()}\n").pubkey == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        SECRET_HEX[:-2],
        "zz" * 32,
        "0" * 64,  # out of the curve's range
        "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6",
        NSEC[:-1] + "x",  # checksum
    ],
)
def test_a_bad_key_is_refused_without_being_echoed(bad: str) -> None:
    with pytest.raises(NostrKeyError) as refused:
        parse_key(bad)
    assert not bad or bad not in str(refused.value)


def test_event_id_is_the_nip01_hash_and_the_signature_verifies() -> None:
    key = parse_key(NSEC)
    tags = [["d", "sat.example.com"], ["u", "https://sat.example.com"]]
    content = 'é "quoted"\n\ttab \\ 🙂'
    event = sign_event(key, KIND, tags, content, created_at=1_700_000_000)
    serialized = json.dumps(
        [0, event["pubkey"], 1_700_000_000, KIND, tags, content],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert event["id"] == hashlib.sha256(serialized.encode()).hexdigest()
    assert independently_valid(event)
    parsed = nostr_sdk.Event.from_json(json.dumps(event))
    assert parsed.id().to_hex() == event["id"]
    assert parsed.kind().as_u16() == KIND
    assert parsed.author().to_hex() == nostr_sdk.Keys.parse(NSEC).public_key().to_hex()
    forged = {**event, "content": content + "!"}
    assert not nostr_sdk.Event.from_json(json.dumps(forged)).verify()


def test_announcement_tags_are_what_routstr_reads() -> None:
    card = {
        "name": "satrouter",
        "description": "LLM work for sats",
        "version": "0.1.0",
        "capabilities": {
            "extensions": [
                {
                    "uri": "urn:satrouter:a2a:payments:v1",
                    "params": {"models": [{"id": "a/b"}], "schemes": [{"id": "l402"}]},
                }
            ]
        },
    }
    tags, content = announcement(
        card,
        urls=["https://sat.example.com", "http://x.onion"],
        mints=["https://mint.example"],
        d="sat.example.com",
    )
    event = sign_event(parse_key(NSEC), KIND, tags, content)
    assert independently_valid(event)
    assert routstr_reads(event) == {
        "id": "sat.example.com",
        "endpoint_url": "https://sat.example.com",
        "endpoint_urls": ["https://sat.example.com", "http://x.onion"],
        "mint_urls": ["https://mint.example"],
        "version": "0.1.0",
        "name": "satrouter",
        "description": "LLM work for sats",
        "models": ["a/b"],
    }


# -- satrouter announce -----------------------------------------------------------------------


async def announce_command(
    *args: str, key: str | None = NSEC, public_url: str | None = None
) -> tuple[int, str, str]:
    """``satrouter announce`` in its own process: (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SATROUTER_")}
    if key is not None:
        env["SATROUTER_NOSTR_KEY"] = key
    if public_url is not None:
        env["SATROUTER_PUBLIC_URL"] = public_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "announce",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Relay:
    """A loopback Nostr relay: checks each event with rust-nostr, answers ``OK``."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.events: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            verb, event = json.loads(msg.data)
            assert verb == "EVENT"
            await ws.send_str(json.dumps(["NOTICE", "hello"]))
            valid = independently_valid(event)
            self.events.append(event)
            reason = "" if self.accept and valid else "blocked: not today\x1b[2J"
            await ws.send_str(json.dumps(["OK", event["id"], self.accept and valid, reason]))
        return ws


@pytest.fixture
async def relays() -> AsyncIterator[list[tuple[Relay, str]]]:
    running = []
    for accept in (True, False):
        relay = Relay(accept)
        app = web.Application()
        app.router.add_get("/", relay.handle)
        runner, url = await serve(app)
        running.append((runner, relay, url.replace("http://", "ws://") + "/"))
    yield [(relay, url) for _, relay, url in running]
    for runner, _, _ in running:
        await runner.cleanup()


async def test_announce_prints_a_signed_announcement(tmp_path: Path, emulator: Emulator) -> None:
    async with offline_service(tmp_path, openrouter_base_url=emulator.base_url) as http:
        base = str(http.base_url).rstrip("/")
        listed = (await http.get("/v1/models")).json()
        code, out, err = await announce_command(
            "--url", base, "--mint", "https://mint.example", key=SECRET_HEX
        )
    assert code == 0, err
    event = json.loads(out)
    assert event["kind"] == KIND
    assert independently_valid(event)
    read = routstr_reads(event)
    assert read["endpoint_url"] == base
    assert read["id"] == base.removeprefix("http://")
    assert read["mint_urls"] == ["https://mint.example"]
    assert read["version"] == "0.1.0"
    assert read["models"] == [m["id"] for m in listed["data"]]
    assert SECRET_HEX not in out + err
    assert NSEC not in out + err


async def test_announce_publishes_and_reads_each_relays_ok(
    tmp_path: Path, relays: list[tuple[Relay, str]]
) -> None:
    (accepting, good), (refusing, bad) = relays
    async with offline_service(tmp_path) as http:
        base = str(http.base_url)
        code, out, err = await announce_command("--url", base, "--relay", good, "--id", "me")
        assert code == 0, err
        (event,) = accepting.events
        assert routstr_reads(event)["id"] == "me"
        assert f"{good}: accepted {event['id']}" in out

        code, out, err = await announce_command("--url", base, "--relay", good, "--relay", bad)
    assert code == 1
    assert f"{bad}: refused" in out and "blocked: not today?" in out
    assert "\x1b" not in out  # the relay's words cannot drive the terminal
    assert len(refusing.events) == 1 and independently_valid(refusing.events[0])
    assert NSEC not in out + err


async def test_announce_needs_a_valid_key_and_never_prints_it(tmp_path: Path) -> None:
    code, _, err = await announce_command("--url", "http://127.0.0.1:9", key=None)
    assert code == 2 and "SATROUTER_NOSTR_KEY" in err
    secretish = "ab" * 31  # 62 hex digits: wrong length
    code, out, err = await announce_command("--url", "http://127.0.0.1:9", key=secretish)
    assert code == 2 and "SATROUTER_NOSTR_KEY is not" in err
    assert secretish not in out + err


async def test_announce_reports_an_unreachable_service() -> None:
    code, out, err = await announce_command("--url", "http://127.0.0.1:9")
    assert code == 1 and "agent-card.json" in err
    assert out == ""


async def test_announce_takes_the_public_url_and_reads_the_card_elsewhere(
    tmp_path: Path,
) -> None:
    async with offline_service(tmp_path, public_url="https://sat.example.com") as http:
        code, out, err = await announce_command(
            "--card-from",
            str(http.base_url),
            "--also-url",
            "http://abc.onion",
            public_url="https://sat.example.com/",
        )
    assert code == 0, err
    read = routstr_reads(json.loads(out))
    assert read["endpoint_urls"] == ["https://sat.example.com", "http://abc.onion"]
    assert read["id"] == "sat.example.com"
    assert independently_valid(json.loads(out))


async def test_announce_without_a_url_says_so() -> None:
    code, out, err = await announce_command()
    assert code == 2
    assert "--url" in err and "SATROUTER_PUBLIC_URL" in err
    assert out == ""


async def test_announce_reports_relays_it_cannot_reach(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        code, out, err = await announce_command(
            "--url",
            str(http.base_url),
            "--relay",
            "ws://127.0.0.1:9/",
            "--relay",
            "https://relay.example",
        )
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].startswith("ws://127.0.0.1:9/: refused ")
    assert "ClientConnectorError" in lines[0]
    assert lines[1].startswith("https://relay.example: refused ")
    assert "not a ws:// or wss:// URL" in lines[1]


@pytest.mark.parametrize(
    "args",
    [
        ("--url", "ftp://sat.example.com"),
        ("--url", "http://"),
        ("--url", "https://sat.example.com", "--also-url", "sat.onion"),
        ("--url", "https://sat.example.com", "--mint", "mint.example com"),
    ],
)
async def test_announce_refuses_what_is_not_an_http_url(args: tuple[str, ...]) -> None:
    code, out, err = await announce_command(*args)
    assert code == 2
    assert "not an http(s) URL" in err
    assert out == ""
