"""OpenRouter's wire shapes in the emulator: JSON answers, error answers, authentication and
the parsing of a chat request."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from aiohttp import web

from ..upstream.schemas import plain
from .state import EmulatorState


def dumps(value: Any) -> str:
    return json.dumps(plain(value), separators=(",", ":"))


def json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(value, status=status, headers=headers, dumps=dumps)


class Refusal(Exception):
    """An OpenRouter-shaped error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        code: int | str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or {}
        self.code = code if code is not None else status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.error_type:
            error["metadata"] = {"error_type": self.error_type}
        return {"error": error, "user_id": "user_emulator"}

    def response(self) -> web.Response:
        return json_response(self.body(), status=self.status, headers=self.headers)


def authenticate(request: web.Request, state: EmulatorState) -> bool:
    """True for the management key, False for a normal key; refuses anything else."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Refusal(401, "No auth credentials found", "unauthorized")
    if secrets.compare_digest(key, state.config.management_key):
        return True
    if key.startswith("sk-or-"):
        return False
    raise Refusal(401, "User not found.", "unauthorized")


def parse_chat(body: Any) -> tuple[list[dict[str, Any]], int | None, bool]:
    if not isinstance(body, dict):
        raise Refusal(400, "Request body must be a JSON object", "invalid_request")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise Refusal(400, "messages: expected a non-empty array of objects", "invalid_request")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise Refusal(400, "max_tokens: expected a positive integer", "invalid_request")
    return messages, max_tokens, bool(body.get("stream"))


_REMEMBERED_HEADERS = ("HTTP-Referer", "X-OpenRouter-Title", "X-Title", "Accept")


def remember(state: EmulatorState, request: web.Request, body: Any) -> None:
    """Keep what the client sent (minus its key) for ``GET /_emulator/requests``."""
    headers = {h: request.headers[h] for h in _REMEMBERED_HEADERS if h in request.headers}
    state.requests.append(
        {"path": request.path, "headers": headers, "body": body, "at": time.time()}
    )


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refusal(400, "Request body is not valid JSON", "invalid_request") from None
