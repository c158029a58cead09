"""Typed errors for OpenRouter (and OpenAI-compatible) upstreams.

OpenRouter reports errors as ``{"error": {"code", "message", "metadata"}}``, both as HTTP error
responses and, mid-stream, as a chunk with a top-level ``error`` under HTTP 200. ``code`` may be an
integer or a string (``"server_error"``). Each error says whether the same request may succeed
later (``retryable``) and whether another model may serve it (``fallback_ok``), so the router can
decide without knowing HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

#: error_type values after which another model may succeed where this one did not.
_FALLBACK_ERROR_TYPES = frozenset(
    {
        "context_length_exceeded",
        "provider_overloaded",
        "rate_limit_exceeded",
        "model_not_available",
        "moderation",
        "timeout",
        "server_error",
    }
)


class UpstreamError(Exception):
    """An upstream answered with an error, or could not be reached."""

    status: ClassVar[int] = 0
    default_retryable: ClassVar[bool] = False
    default_fallback: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: int | str | None = None,
        error_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else (self.status or None)
        self.error_type = error_type
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.retry_after = retry_after
        self.model = model

    @property
    def retryable(self) -> bool:
        """The same request to the same model may succeed later (after ``retry_after``)."""
        availability = self.metadata.get("availability")
        if isinstance(availability, Mapping) and "retryable" in availability:
            return bool(availability["retryable"])
        return self.default_retryable

    @property
    def fallback_ok(self) -> bool:
        """Another model may serve this request."""
        if self.error_type in _FALLBACK_ERROR_TYPES:
            return True
        return self.default_fallback

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, error_type={self.error_type!r}, "
            f"message={self.message!r}, retry_after={self.retry_after!r})"
        )


class BadRequest(UpstreamError):
    status = 400


class Unauthorized(UpstreamError):
    status = 401


class PaymentRequired(UpstreamError):
    """OpenRouter's own credits ran out: no other model helps, the operator must top up."""

    status = 402


class Forbidden(UpstreamError):
    """Moderation or guardrail refusal, or a normal key used where a management key is needed."""

    status = 403


class NotFound(UpstreamError):
    status = 404


class _Transient(UpstreamError):
    """A failure of the moment: worth retrying, and another model may serve meanwhile."""

    default_retryable = True
    default_fallback = True


class RequestTimeout(_Transient):
    status = 408


class RateLimited(_Transient):
    status = 429


class BadGateway(_Transient):
    """The model is down or its provider answered badly."""

    status = 502


class ServiceUnavailable(_Transient):
    """No provider meets the routing requirements right now."""

    status = 503


class ServerError(_Transient):
    """Any other 5xx."""

    status = 500


class TransportError(_Transient):
    """The upstream could not be reached, or the connection broke or timed out."""


class StreamError(UpstreamError):
    """An error chunk arrived mid-stream (HTTP status was already 200)."""

    @property
    def retryable(self) -> bool:
        return _status_class(self.code).default_retryable

    @property
    def fallback_ok(self) -> bool:
        return super().fallback_ok or _status_class(self.code).default_fallback


_BY_STATUS: dict[int, type[UpstreamError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        PaymentRequired,
        Forbidden,
        NotFound,
        RequestTimeout,
        RateLimited,
        BadGateway,
        ServiceUnavailable,
    )
}


def _status_class(code: int | str | None) -> type[UpstreamError]:
    if isinstance(code, int):
        if code in _BY_STATUS:
            return _BY_STATUS[code]
        if code >= 500:
            return ServerError
    if code == "server_error":
        return ServerError
    return UpstreamError


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        import time

        seconds = when.timestamp() - (now if now is not None else time.time())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_from_body(
    status: int,
    body: Any,
    *,
    retry_after: float | None = None,
    model: str | None = None,
    stream: bool = False,
) -> UpstreamError:
    """Build the typed error for an OpenRouter error body (HTTP error or mid-stream chunk)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        error = {}
    message = str(error.get("message") or f"upstream answered HTTP {status}")
    code = error.get("code", status)
    if not isinstance(code, (int, str)) or isinstance(code, bool):
        code = status
    metadata = error.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
    if isinstance(error.get("availability"), Mapping):
        metadata["availability"] = dict(error["availability"])
        if retry_after is None:
            ra = error["availability"].get("retry_after")
            if isinstance(ra, (int, float)) and not isinstance(ra, bool):
                retry_after = float(ra)
    error_type = metadata.get("error_type")
    error_type = str(error_type) if error_type is not None else None
    cls: type[UpstreamError] = StreamError if stream else _status_class(status)
    return cls(
        message,
        code=code,
        error_type=error_type,
        metadata=metadata,
        retry_after=retry_after,
        model=model,
    )
