"""Nostr (NIP-01) events: the key, the event id, the BIP-340 signature, and sending to a relay.

The schnorr signature is libsecp256k1's, through ``coincurve``; ``nsec`` keys are bech32
(NIP-19), decoded by the ``bech32`` reference implementation. Both already come with ``bolt11``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import bech32
import coincurve

#: NIP-01 relay answers read while waiting for ``OK`` before giving up on a relay.
MAX_RELAY_MESSAGES = 100


class NostrKeyError(ValueError):
    """A key that is neither ``nsec1...`` nor 64 hex digits. The message never holds the key."""


@dataclass(frozen=True)
class NostrKey:
    secret: bytes = field(repr=False)

    @property
    def pubkey(self) -> str:
        """The x-only public key, hex (NIP-01 ``pubkey``)."""
        return coincurve.PublicKeyXOnly.from_secret(self.secret).format().hex()


def parse_key(text: str) -> NostrKey:
    """A secret key given as ``nsec1...`` (NIP-19) or as 64 hex digits."""
    text = text.strip()
    if text.lower().startswith("nsec1"):
        hrp, data = bech32.bech32_decode(text.lower())
        secret = bytes(bech32.convertbits(data, 5, 8, False) or []) if data else b""
        if hrp != "nsec":
            secret = b""
    else:
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
    if len(secret) != 32:
        raise NostrKeyError("not an nsec1... key nor 64 hex digits")
    try:
        coincurve.PrivateKey(secret)
    except ValueError:
        raise NostrKeyError("not a valid secp256k1 secret key") from None
    return NostrKey(secret)


def serialize(
    pubkey: str, created_at: int, kind: int, tags: list[list[str]], content: str
) -> bytes:
    """NIP-01's serialization, whose sha256 is the event id: compact JSON, UTF-8 verbatim."""
    return json.dumps(
        [0, pubkey, created_at, kind, tags, content], separators=(",", ":"), ensure_ascii=False
    ).encode()


def sign_event(
    key: NostrKey,
    kind: int,
    tags: list[list[str]],
    content: str,
    created_at: int | None = None,
) -> dict[str, Any]:
    """A signed event, ready to send."""
    created = int(time.time()) if created_at is None else created_at
    pubkey = key.pubkey
    digest = hashlib.sha256(serialize(pubkey, created, kind, tags, content)).digest()
    signature = coincurve.PrivateKey(key.secret).sign_schnorr(digest, os.urandom(32))
    return {
        "id": digest.hex(),
        "pubkey": pubkey,
        "created_at": created,
        "kind": kind,
        "tags": tags,
        "content": content,
        "sig": signature.hex(),
    }


def printable(text: str, limit: int = 200) -> str:
    """A relay's words, safe to print: no control characters (terminal escapes), bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


@dataclass(frozen=True)
class RelayAnswer:
    relay: str
    accepted: bool
    message: str


async def publish(
    session: aiohttp.ClientSession, relay: str, event: dict[str, Any], answer_within: float = 10.0
) -> RelayAnswer:
    """Send ``["EVENT", event]`` to ``relay`` and read its ``["OK", id, accepted, message]``.

    A relay that cannot be reached, closes, or does not answer in ``answer_within`` seconds is
    reported as not accepted, with the reason."""
    if not relay.startswith(("ws://", "wss://")):
        return RelayAnswer(relay, False, "not a ws:// or wss:// URL")
    try:
        async with asyncio.timeout(answer_within):
            async with session.ws_connect(relay, max_msg_size=1 << 20) as ws:
                await ws.send_str(json.dumps(["EVENT", event]))
                for _ in range(MAX_RELAY_MESSAGES):
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return RelayAnswer(relay, False, f"relay closed ({msg.type.name})")
                    try:
                        answer = json.loads(msg.data)
                    except ValueError:
                        continue
                    if (
                        isinstance(answer, list)
                        and len(answer) >= 3
                        and answer[0] == "OK"
                        and answer[1] == event["id"]
                    ):
                        message = str(answer[3]) if len(answer) > 3 else ""
                        return RelayAnswer(relay, answer[2] is True, printable(message))
                return RelayAnswer(relay, False, "no OK among the relay's answers")
    except TimeoutError:
        return RelayAnswer(relay, False, f"no OK within {answer_within:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return RelayAnswer(relay, False, f"{type(exc).__name__}: {exc}")
