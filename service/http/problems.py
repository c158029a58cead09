"""RFC 9457 problem responses. Every error satrouter answers is ``application/problem+json``
with a stable ``type`` (a URN under ``urn:satrouter:problem:``) that clients can branch on.

On ``/v1/*`` the body also carries OpenAI's ``error: {message, type, code, param}``: the OpenAI
SDKs build their exception text from ``error.message`` and expose ``type``/``code``/``param``,
and print only ``Error code: 402`` without it. A refusal that no automatic retry can fix says
``x-should-retry: false`` (the OpenAI SDKs obey it; they retry 408, 409, 429 and 5xx otherwise);
one that will pass later says when with ``Retry-After``.

Handlers raise :class:`Problem`; the middleware turns it (and aiohttp's own HTTP errors, bodies
that are too large, and anything unexpected) into a problem response. An unexpected exception
is logged with a reference and answered 500 without internal details.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic_core import from_json

from billing.l402 import challenge

from ..tasks.refusals import Refusal

log = logging.getLogger(__name__)

#: JSON nested deeper than this is refused before anything walks it recursively.
MAX_DEPTH = 64
#: Integers must fit in 64 signed bits (every amount in msat does; SQLite's INTEGER is that).
MAX_INT = 2**63 - 1

CONTENT_TYPE = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
#: OpenAI's error ``type`` for each status (what its SDKs and agents written for it branch on).
_OPENAI_TYPES = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    429: "rate_limit_error",
}
#: Spending caps are quota, not request rate (OpenAI answers its own quota 429 this way).
_QUOTA_KINDS = frozenset({"budget_exceeded", "budget_exhausted"})
#: Refusals that the same request cannot pass on an immediate retry.
_FINAL_KINDS = frozenset(
    {"insufficient_balance", "over_max_price", "budget_exceeded", "budget_exhausted"}
)


#: The HTTP status of each kind of :class:`Refusal` the engine makes (what is not listed is a
#: request the engine cannot serve as sent: 400). A refusal with an L402 challenge is a 402.
STATUS_OF = {
    "over_max_price": 402,
    "insufficient_balance": 402,
    "payment_required": 402,
    "price_changed": 402,
    "l402_expired": 402,
    "idempotency_conflict": 409,
    "payment_already_used": 409,
    "sensitive_content": 422,
    "budget_exceeded": 429,
    "budget_exhausted": 429,
    "too_many_listeners": 429,
    "catalog_unavailable": 503,
    "rate_unavailable": 503,
    "tier_unavailable": 503,
    "lightning_unavailable": 503,
    # Cashu ecash (service/tasks/cashu.py)
    "cashu_amount_too_low": 402,
    "cashu_change_not_ready": 409,
    "cashu_change_pending": 503,
    "cashu_mint_unavailable": 503,
    "cashu_wallet_unavailable": 503,
    "cashu_wallet_busy": 503,
    "cashu_refunded": 409,
    "cashu_outcome_unknown": 502,
    "not_found": 404,
}


class Problem(Exception):
    """An error answer: ``status``, a stable ``kind`` (the type's last segment) and details."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        header_lists: Mapping[str, list[str]] | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.header_lists = dict(header_lists or {})
        self.extra = dict(extra or {})
        self.param = param  # the request field at fault, when one is
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, retry_after))
        if kind in _FINAL_KINDS:
            self.headers["x-should-retry"] = "false"
        if status == 402:  # its offer is a single-use invoice (draft-lightning-charge-00)
            self.headers["Cache-Control"] = "no-store"

    def openai_error(self) -> dict[str, Any]:
        """OpenAI's error object for this problem."""
        if self.kind in _QUOTA_KINDS:
            kind = "insufficient_quota"
        elif self.status >= 500:
            kind = "server_error"
        else:
            kind = _OPENAI_TYPES.get(self.status, "invalid_request_error")
        return {"message": self.detail, "type": kind, "code": self.kind, "param": self.param}

    def body(self, instance: str | None = None, *, openai: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:satrouter:problem:{self.kind}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        if openai:
            body["error"] = self.openai_error()
        return body

    def response(self, instance: str | None = None) -> web.Response:
        """The answer; on the OpenAI-compatible API (``/v1/*``) with OpenAI's ``error`` too."""
        openai = instance is not None and instance.startswith("/v1/")
        response = web.Response(
            status=self.status,
            text=json.dumps(self.body(instance, openai=openai), default=str),
            content_type=CONTENT_TYPE,
            headers=self.headers,
        )
        for name, values in self.header_lists.items():
            for value in values:
                response.headers.add(name, value)
        return response


def problem_of(refusal: Refusal, *, headers: Mapping[str, str] | None = None) -> Problem:
    """The answer to a refusal of the engine's."""
    status = 402 if refusal.challenge else STATUS_OF.get(refusal.kind, 400)
    problem = Problem(
        status,
        refusal.kind,
        refusal.detail,
        headers=headers,
        extra=refusal.extra,
        header_lists={
            "WWW-Authenticate": challenge(refusal.challenge.macaroon, refusal.challenge.bolt11)
        }
        if refusal.challenge
        else None,
        retry_after=refusal.retry_after,
    )
    if not refusal.should_retry:
        problem.headers["x-should-retry"] = "false"
    return problem


_AIOHTTP_KINDS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        _refuse_undecodable(request)
        return await handler(request)
    except Problem as problem:
        return problem.response(request.path)
    except Refusal as refusal:
        return problem_of(refusal).response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _AIOHTTP_KINDS.get(exc.status, "http_error")
        detail = exc.reason if exc.status != 413 else "request body is too large"
        # A 405 says which methods the resource takes (RFC 9110): keep aiohttp's Allow.
        kept = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return Problem(exc.status, kind, detail, headers=kept).response(request.path)
    except ConnectionResetError:  # the client left (an event stream closed): nothing to answer
        raise
    except Exception:
        reference = secrets.token_hex(6)
        log.exception(
            "unexpected error (reference %s) on %s %s", reference, request.method, request.path
        )
        return Problem(
            500, "internal", f"an unexpected error occurred (reference {reference})"
        ).response(request.path)


def _refuse_undecodable(request: web.Request) -> None:
    """aiohttp decodes header bytes that are not UTF-8 into lone surrogates, which fail later
    wherever a value is encoded (a key's hash, an SQL parameter): refuse them here, like JSON
    text in :func:`parse_json`."""
    parts = (("path", request.path), ("query", request.query_string), *request.headers.items())
    for name, value in parts:
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise Problem(
                    400, "invalid_text", f"the request's {name} is not valid UTF-8"
                ) from None


class _Unparseable(logging.Filter):
    """aiohttp answers a request it cannot parse (a NUL in a header, a broken request line)
    with 400 itself, then logs it as an error with a traceback. It is the client's mistake:
    drop that record, so that malformed traffic cannot flood the error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], HttpProcessingError))


def quiet_unparseable_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _Unparseable) for f in server_log.filters):
        server_log.addFilter(_Unparseable())


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (see :func:`parse_json`), or a 400/415 problem."""
    if request.content_type not in ("application/json", "") and not request.content_type.endswith(
        "+json"
    ):
        raise Problem(415, "unsupported_media_type", "send JSON (Content-Type: application/json)")
    return parse_json(await request.read())


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, for every route, or a 400 problem: ``malformed_json``,
    ``json_too_deep`` (nested more than :data:`MAX_DEPTH`), ``invalid_text`` (not Unicode: a
    lone surrogate such as ``"\\ud800"`` cannot be encoded later, so it stops here) or
    ``number_out_of_range`` (``1e400``, NaN, an integer beyond 64 bits).

    pydantic-core's parser stops at 200 levels on its own (the standard library's recursed
    until RecursionError) and refuses lone surrogates and invalid UTF-8 (the standard
    library let them through); what it lets through is then walked without recursion.
    """
    try:
        data = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        message = str(exc)
        if "recursion limit" in message:
            raise _too_deep() from None
        if any(s in message for s in ("surrogate", "hex escape", "unicode", "utf-8", "UTF-8")):
            raise Problem(
                400,
                "invalid_text",
                f"the request body has text that is not valid Unicode, such as a lone "
                f"surrogate escape (\\ud800-\\udfff) ({message})",
            ) from None
        if "number out of range" in message:
            raise _out_of_range() from None
        raise Problem(
            400, "malformed_json", f"the request body is not valid JSON ({message})"
        ) from None
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise _too_deep()
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _out_of_range()
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise _out_of_range()
    return data


def _too_deep() -> Problem:
    return Problem(
        400, "json_too_deep", f"the request body is nested more than {MAX_DEPTH} levels deep"
    )


def _out_of_range() -> Problem:
    return Problem(
        400,
        "number_out_of_range",
        "a number in the request body is out of range (finite, integers within 64 bits)",
    )
