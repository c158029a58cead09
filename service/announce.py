"""``satrouter announce``: a Routstr provider announcement (Nostr kind 38421) from the agent card.

Tags as Routstr's core and clients read them: ``d`` (the provider id; the event is addressable,
so a new one replaces the last with the same ``d``), ``u`` (each URL the OpenAI-compatible API
answers at), ``mint`` (Cashu mints taken), ``version``. The content is JSON with ``name`` and
``about`` (what Routstr shows) and the models and payment schemes the card lists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .config import HTTP_URL, Settings
from .http.discovery import CARD_PATH, PAYMENTS_EXTENSION
from .nostr import NostrKey, NostrKeyError, RelayAnswer, parse_key, publish, sign_event

KIND = 38421
#: The card is a few hundred bytes per model; this bounds what announce reads.
MAX_CARD_BYTES = 4 * 1024 * 1024


class AnnounceError(Exception):
    """Why no announcement could be built."""


def provider_id(url: str) -> str:
    """The default ``d`` tag: the host the service is reached at."""
    return urlsplit(url).netloc


def announcement(
    card: dict[str, Any], *, urls: list[str], mints: list[str], d: str
) -> tuple[list[list[str]], str]:
    """The tags and content of the announcement for ``card``."""
    payments: dict[str, Any] = next(
        (
            ext.get("params", {})
            for ext in card.get("capabilities", {}).get("extensions", [])
            if ext.get("uri") == PAYMENTS_EXTENSION
        ),
        {},
    )
    tags = [["d", d], *(["u", u] for u in urls), *(["mint", m] for m in mints)]
    tags.append(["version", str(card["version"])])
    content = {
        "name": card["name"],
        "about": card["description"],
        "models": [m["id"] for m in payments.get("models", [])],
        "payment_schemes": [s["id"] for s in payments.get("schemes", [])],
    }
    return tags, json.dumps(content, separators=(",", ":"))


async def fetch_card(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    url = base.rstrip("/") + CARD_PATH
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
            if response.status != 200:
                raise AnnounceError(f"{url} answered {response.status}")
            body = await response.content.read(MAX_CARD_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AnnounceError(f"{url}: {type(exc).__name__}: {exc}") from None
    if len(body) > MAX_CARD_BYTES:
        raise AnnounceError(f"{url}: the card is larger than {MAX_CARD_BYTES} bytes")
    try:
        card = json.loads(body)
        if not isinstance(card, dict) or not card.get("name") or not card.get("version"):
            raise ValueError("no name or version")
    except ValueError as exc:
        raise AnnounceError(f"{url}: not an agent card ({exc})") from None
    return card


async def announce(
    key: NostrKey,
    *,
    url: str,
    card_url: str | None,
    extra_urls: list[str],
    mints: list[str],
    d: str | None,
    relays: list[str],
) -> tuple[dict[str, Any], list[RelayAnswer]]:
    """Build and sign the announcement; send it to each relay. ``(event, answers)``."""
    async with aiohttp.ClientSession() as session:
        card = await fetch_card(session, card_url or url)
        tags, content = announcement(
            card, urls=[url, *extra_urls], mints=mints, d=d or provider_id(url)
        )
        event = sign_event(key, KIND, tags, content)
        answers = [await publish(session, relay, event) for relay in relays]
    return event, answers


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``satrouter announce``: print the signed event, or send it to each ``--relay``."""
    url = args.url or settings.public_url
    mints = args.mint or list(settings.cashu_mint_list)  # the mints satrouter takes
    if not url:
        print("satrouter announce: give --url or set SATROUTER_PUBLIC_URL", file=sys.stderr)
        return 2
    for given in (url, *args.also_url, *mints, *([args.card_from] if args.card_from else [])):
        if not re.fullmatch(HTTP_URL, given):
            print(f"satrouter announce: {given!r} is not an http(s) URL", file=sys.stderr)
            return 2
    if settings.nostr_key is None:
        print("satrouter announce: set SATROUTER_NOSTR_KEY (nsec1... or hex)", file=sys.stderr)
        return 2
    try:
        key = parse_key(settings.nostr_key.get_secret_value())
    except NostrKeyError as exc:
        print(f"satrouter announce: SATROUTER_NOSTR_KEY is {exc}", file=sys.stderr)
        return 2
    try:
        event, answers = asyncio.run(
            announce(
                key,
                url=url.rstrip("/"),
                card_url=args.card_from,
                extra_urls=args.also_url,
                mints=mints,
                d=args.id,
                relays=args.relay,
            )
        )
    except AnnounceError as exc:
        print(f"satrouter announce: {exc}", file=sys.stderr)
        return 1
    if not answers:
        print(json.dumps(event))
        return 0
    for answer in answers:
        verdict = "accepted" if answer.accepted else "refused"
        print(f"{answer.relay}: {verdict} {event['id']} {answer.message}".rstrip())
    return 0 if all(a.accepted for a in answers) else 1
