"""Cashu ecash at the edge (Routstr's RIP-01): the ``X-Cashu`` request header, the change
and the mint's fee on the response, and the change kept by task id.

- ``X-Cashu: cashuB...`` on ``/v1/chat/completions`` pays that request. The answer carries
  ``X-Cashu`` (the change, a fresh token; absent when nothing is owed), ``X-Cashu-Change-Msat``,
  ``X-Cashu-Fee-Msat`` (what the mint charged to swap the token: the operator's, shown) and
  ``X-Satrouter-Task``; ``X-Cashu-Change: pending`` when the change could not be minted at
  once (the wallet busy): it waits at ``X-Cashu-Change-Url``.
- A stream cannot carry its change in a header (the headers leave before the cost is known):
  the change of a stream, or of any response that was lost, is at ``GET /v1/cashu/change``
  (or ``/v1/cashu/change/{task id}``) with the token that paid in ``X-Cashu``: only its holder
  can have the change, and it needs nothing else.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web

from .keys import ENGINE
from .problems import Problem

if TYPE_CHECKING:
    from ..tasks.engine import Chat

routes = web.RouteTableDef()

#: A serialized token (NUT-00: ``cashuA`` base64 JSON, ``cashuB`` base64url CBOR), bounded.
_TOKEN = re.compile(r"cashu[AB][A-Za-z0-9_\-+/=]{16,16000}")
_TASK = re.compile(r"task_[0-9a-f]{24}")


def is_cashu(value: str) -> bool:
    return value.startswith("cashu")


def cashu_checked(value: str) -> str:
    """``value`` if it looks like a serialized token, else a 400 problem."""
    if not _TOKEN.fullmatch(value):
        raise Problem(400, "cashu_invalid_token", "X-Cashu is not a serialized Cashu token")
    return value


def cashu_token(request: web.Request) -> str | None:
    value = request.headers.get("X-Cashu", "").strip()
    return cashu_checked(value) if value else None


def cashu_headers(outcome: Chat) -> dict[str, str]:
    headers: dict[str, str] = {}
    if outcome.cashu is not None:
        headers["X-Cashu-Fee-Msat"] = str(outcome.cashu.fee_msat)
        headers["X-Cashu-Change-Url"] = f"/v1/cashu/change/{outcome.cashu.task_id}"
    change = outcome.cashu_change
    if change is not None and change.pending:
        headers["X-Cashu-Change"] = "pending"  # fetch it at X-Cashu-Change-Url
    elif change is not None:
        headers["X-Cashu-Change-Msat"] = str(change.amount_msat)
        if change.token:
            headers["X-Cashu"] = change.token
    return headers


@routes.get("/v1/cashu/change")
async def change_of_token(request: web.Request) -> web.Response:
    """The change of whatever request the token in ``X-Cashu`` paid for: nothing else is
    needed, so a response lost before its headers (the task id) arrived loses nothing."""
    return await _change(request, None)


@routes.get("/v1/cashu/change/{task_id}")
async def change(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    if not _TASK.fullmatch(task_id):
        raise Problem(404, "not_found", "no Cashu payment has that task id")
    return await _change(request, task_id)


async def _change(request: web.Request, task_id: str | None) -> web.Response:
    token = cashu_token(request)
    if token is None:
        raise Problem(401, "credentials_required", "send the token that paid in the X-Cashu header")
    task_id, got = await request.app[ENGINE].cashu_change(task_id, token)
    body = {"task_id": task_id, "token": got.token, "amount_msat": got.amount_msat}
    return web.json_response(body, headers={"X-Cashu": got.token} if got.token else None)
