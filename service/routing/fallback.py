"""Running a request down its fallback chain.

The first hop hands OpenRouter the whole chain as its ``models`` array (it falls back
internally and bills only the model that ran); models whose breaker is open are left out. When
the whole hop fails with an error that another try may cure, the runner waits (``Retry-After``
when given, else jittered backoff) and tries again with whatever the breakers allow, up to
``max_attempts``. Errors that no other model or later try can fix (a bad request, OpenRouter out
of credits) end it at once. Every hop is recorded as an attempt.

For a stream, a failure before the first token falls back like any other; after it, the caller
gets what arrived and an honest error (see the chat completions handler).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..upstream.errors import StreamError, TransportError, UpstreamError
from ..upstream.openrouter import ChatResult, ChatStream, OpenRouterClient
from ..upstream.schemas import ChatChunk
from .breaker import Breakers


@dataclass(frozen=True, slots=True)
class Attempt:
    models: list[str]
    outcome: str  # ok | error
    served: str | None = None
    error: str | None = None
    error_type: str | None = None
    at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AllModelsFailed(Exception):
    def __init__(self, message: str, attempts: list[Attempt], last: UpstreamError | None):
        super().__init__(message)
        self.attempts = attempts
        self.last = last


Sleep = Callable[[float], Awaitable[None]]


class FallbackRunner:
    def __init__(
        self,
        upstream: OpenRouterClient,
        breakers: Breakers,
        *,
        max_attempts: int = 10,
        base_delay: float = 0.1,
        max_delay: float = 2.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._upstream = upstream
        self.breakers = breakers
        self._max_attempts = max_attempts
        self._base = base_delay
        self._max_delay = max_delay
        self._sleep = sleep

    def _hop(self, body: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        chain: list[str] = []
        for model in [body.get("model"), *(body.get("models") or [])]:
            if isinstance(model, str) and model not in chain:
                chain.append(model)
        allowed = [m for m in chain if self.breakers.allow(m)]
        if not allowed and chain:  # all cooling down: probe the one that recovers first
            allowed = [self.breakers.soonest(chain)]
        request = {**body, "model": allowed[0]} if allowed else dict(body)
        request.pop("models", None)
        if len(allowed) > 1:
            request["models"] = allowed
        return allowed, request

    def _failed(self, allowed: list[str], exc: UpstreamError) -> None:
        if not (exc.retryable or exc.fallback_ok):  # the request is at fault, not a model
            return
        unwell = allowed  # the whole hop failed: every model in it did
        if isinstance(exc, StreamError) and exc.model in allowed:
            unwell = allowed[: allowed.index(exc.model) + 1]  # a stream names who broke
        for model in unwell:
            self.breakers.failed(model, retry_after=exc.retry_after)

    def _served(self, allowed: list[str], served: str | None) -> None:
        if served in allowed:
            for skipped in allowed[: allowed.index(served)]:  # OpenRouter moved past these
                self.breakers.failed(skipped)
            self.breakers.succeeded(served)

    async def _backoff(self, n: int, exc: UpstreamError) -> None:
        if exc.retry_after is not None and exc.retry_after <= self._max_delay:
            await self._sleep(exc.retry_after)
        else:
            await self._sleep(min(self._max_delay, self._base * 2**n) * random.uniform(0.5, 1.0))

    async def _run(
        self, body: dict[str, Any], call: Callable[[dict[str, Any]], Awaitable[Any]]
    ) -> tuple[Any, list[Attempt]]:
        attempts: list[Attempt] = []
        last: UpstreamError | None = None
        for n in range(self._max_attempts):
            allowed, request = self._hop(body)
            if not allowed:
                raise AllModelsFailed("the request names no model", attempts, last)
            try:
                outcome, served = await call(request)
            except UpstreamError as exc:
                last = exc
                self._failed(allowed, exc)
                attempts.append(
                    Attempt(
                        allowed,
                        "error",
                        error=f"{type(exc).__name__}: {exc.message}",
                        error_type=exc.error_type,
                        at=time.time(),
                    )
                )
                if not (exc.retryable or exc.fallback_ok):
                    break
                await self._backoff(n, exc)
                continue
            self._served(allowed, served)
            attempts.append(Attempt(allowed, "ok", served=served, at=time.time()))
            return outcome, attempts
        raise AllModelsFailed(f"every model failed after {len(attempts)} attempts", attempts, last)

    async def chat(self, body: dict[str, Any]) -> tuple[ChatResult, list[Attempt]]:
        async def call(request: dict[str, Any]) -> tuple[ChatResult, str]:
            result = await self._upstream.chat(request)
            return result, result.completion.model

        result, attempts = await self._run(body, call)
        return result, attempts

    async def stream(
        self, body: dict[str, Any]
    ) -> tuple[ChatStream, AsyncIterator[ChatChunk], ChatChunk, list[Attempt]]:
        """An open stream that has produced its first chunk (earlier failures fell back)."""

        async def call(
            request: dict[str, Any],
        ) -> tuple[tuple[ChatStream, AsyncIterator[ChatChunk], ChatChunk], str]:
            stream = self._upstream.stream_chat(request)
            await stream.__aenter__()
            try:
                chunks = aiter(stream)
                first = await anext(chunks)
            except (UpstreamError, StopAsyncIteration) as exc:
                stream.aclose()
                if isinstance(exc, StopAsyncIteration):
                    raise TransportError("stream ended before any token") from None
                raise
            return (stream, chunks, first), stream.model or request["model"]

        (stream, chunks, first), attempts = await self._run(body, call)
        return stream, chunks, first, attempts
