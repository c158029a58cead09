"""Async client for OpenRouter's API (and anything that speaks its shapes, e.g. the emulator).

One :class:`OpenRouterClient` per app, on one pooled ``aiohttp.ClientSession`` (aiohttp rather
than httpx, by measurement: see docs/dependencies.md). Request bodies are passed through as
given (``models`` fallback arrays, ``provider`` preferences and any other field OpenRouter
accepts), so the client never lags behind the API. Every failure is a typed
:class:`~service.upstream.errors.UpstreamError`.

    async with OpenRouterClient(base_url=..., api_key=...) as client:
        result = await client.chat({"model": "openai/gpt-4o-mini", "messages": [...]})
        async with client.stream_chat(body) as stream:
            async for chunk in stream:
                ...
            stream.usage  # the final usage chunk
        generation = await client.generation(result.generation_id, deadline=30)
"""

from __future__ import annotations

import asyncio
import codecs
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

import aiohttp
import httpx
from httpx_sse import EventSource, SSEError

from . import errors
from .errors import Forbidden, NotFound, TransportError, UpstreamError
from .schemas import ChatChunk, ChatCompletion, Credits, Generation, KeyInfo, Usage, loads

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"


class GenerationNotReady(NotFound):
    """``/generation`` still answered 404 when the deadline passed."""


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A non-streaming completion: typed view, the raw body to pass on, and the generation id."""

    completion: ChatCompletion
    raw: dict[str, Any]
    generation_id: str

    @property
    def usage(self) -> Usage | None:
        return self.completion.usage


class OpenRouterClient:
    """OpenRouter's chat, models, generation, credits and key endpoints."""

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        management_key: str | None = None,
        referer: str | None = None,
        title: str | None = None,
        timeout: float = 120.0,
        max_connections: int = 512,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._api_key = api_key
        self._management_key = management_key
        headers = {"Accept": "application/json"}
        if referer:
            headers["HTTP-Referer"] = referer
        if title:
            headers["X-OpenRouter-Title"] = title
            headers["X-Title"] = title  # older name, still read by OpenRouter
        self._headers = headers
        self._base = base_url.rstrip("/")
        # A read timeout, not a total one: a long stream is fine while tokens keep coming.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections),
            timeout=self._timeout,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_session:
            await self._session.close()

    # -- requests -------------------------------------------------------------------------

    def _auth(self, *, management: bool = False) -> dict[str, str]:
        key = (self._management_key or self._api_key) if management else self._api_key
        headers = dict(self._headers)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        management: bool = False,
        model: str | None = None,
    ) -> Any:
        """Send one request; the parsed JSON body, or the typed error."""
        try:
            async with self._session.request(
                method,
                self._base + path,
                json=json_body,
                params=params,
                headers=self._auth(management=management),
                timeout=self._timeout,
            ) as response:
                body = await response.read()
                if response.status >= 400:
                    raise _error_from_response(response.status, response.headers, body, model=model)
                return _json(body, path, response.status), response.headers
        except TimeoutError as exc:
            raise TransportError(
                f"{path}: timed out", error_type="timeout", model=model, code=408
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{path}: {type(exc).__name__}: {exc}", model=model) from exc

    async def chat(self, body: Mapping[str, Any]) -> ChatResult:
        """``POST /chat/completions`` without streaming."""
        payload = {**body, "stream": False}
        model = _model_of(payload)
        raw, headers = await self._request(
            "POST", "/chat/completions", json_body=payload, model=model
        )
        if isinstance(raw, Mapping) and "error" in raw and "choices" not in raw:
            # OpenRouter may answer 200 with an error body when the provider failed late.
            raise errors.error_from_body(_code_as_status(raw), raw, model=model, stream=True)
        completion = ChatCompletion.model_validate(raw)
        generation_id = headers.get("X-Generation-Id") or completion.id
        return ChatResult(completion, raw, generation_id)

    def stream_chat(self, body: Mapping[str, Any]) -> ChatStream:
        """``POST /chat/completions`` with ``stream: true``; use as ``async with``."""
        return ChatStream(self, {**body, "stream": True})

    async def models(self) -> Any:
        """``GET /models``: the raw body (see :class:`~service.upstream.catalog.Catalog`)."""
        body, _ = await self._request("GET", "/models")
        return body

    async def generation(
        self,
        generation_id: str,
        *,
        deadline: float = 30.0,
        initial_delay: float = 0.25,
        max_delay: float = 4.0,
    ) -> Generation:
        """``GET /generation?id=``, polling with jittered backoff while it answers 404.

        The record usually appears seconds after the completion. Raises
        :class:`GenerationNotReady` if it is still absent after ``deadline`` seconds.
        """
        give_up = time.monotonic() + deadline
        delay = initial_delay
        while True:
            try:
                body, _ = await self._request("GET", "/generation", params={"id": generation_id})
            except NotFound as exc:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise GenerationNotReady(
                        f"generation {generation_id} not found after {deadline:g} s",
                        code=404,
                        metadata=exc.metadata,
                    ) from exc
                await asyncio.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, max_delay)
                continue
            return Generation.model_validate(body.get("data", body))

    async def credits(self) -> Credits:
        """``GET /credits``: needs a management key (a normal key gets 403)."""
        try:
            body, _ = await self._request("GET", "/credits", management=True)
        except Forbidden as exc:
            hint = (
                "set OPENROUTER_MANAGEMENT_KEY"
                if not self._management_key
                else "OPENROUTER_MANAGEMENT_KEY is not a management key"
            )
            raise Forbidden(
                f"/credits needs a management key ({hint}); OpenRouter said: {exc.message}",
                code=exc.code,
                error_type=exc.error_type or "management_key_required",
                metadata=exc.metadata,
            ) from exc
        return Credits.model_validate(body["data"])

    async def key(self) -> KeyInfo:
        """``GET /key`` (older deployments: ``/auth/key``): limits and usage of the key."""
        try:
            body, _ = await self._request("GET", "/key")
        except NotFound:
            body, _ = await self._request("GET", "/auth/key")
        return KeyInfo.model_validate(body["data"])


class ChatStream:
    """One streaming completion. Iterate for chunks; leaving the ``async with`` block early
    closes the upstream connection, which is how a stream is cancelled."""

    def __init__(self, client: OpenRouterClient, payload: dict[str, Any]) -> None:
        self._client = client
        self._payload = payload
        self._model = _model_of(payload)
        self._response: aiohttp.ClientResponse | None = None
        self.usage: Usage | None = None
        self.generation_id: str | None = None
        self.model: str | None = None
        self.done = False
        #: The last chunk exactly as received, for passing on unchanged.
        self.last_raw: str = ""

    async def __aenter__(self) -> Self:
        client = self._client
        try:
            response = await client._session.post(
                client._base + "/chat/completions",
                json=self._payload,
                headers={**client._auth(), "Accept": "text/event-stream"},
                timeout=client._timeout,
            )
            if response.status >= 400:
                try:
                    body = await response.read()
                finally:
                    response.release()
                raise _error_from_response(
                    response.status, response.headers, body, model=self._model
                )
        except TimeoutError as exc:
            raise TransportError(
                "stream: timed out before the first byte",
                error_type="timeout",
                code=408,
                model=self._model,
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"stream: {type(exc).__name__}", model=self._model) from exc
        self._response = response
        self.generation_id = response.headers.get("X-Generation-Id")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.aclose()

    def aclose(self) -> None:
        """Release a finished stream to the pool; close the connection of an unfinished one."""
        if self._response is None:
            return
        if self.done:
            self._response.release()
        else:
            self._response.close()

    def __aiter__(self) -> AsyncIterator[ChatChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[ChatChunk]:
        assert self._response is not None, "use `async with client.stream_chat(...)`"
        # httpx-sse implements the SSE grammar: `:` comment lines (OpenRouter's keep-alive
        # `: OPENROUTER PROCESSING`) never become events.
        source = EventSource(cast(httpx.Response, _SSEBody(self._response)))
        try:
            async for event in source.aiter_sse():
                if event.data == "[DONE]":
                    self.done = True
                    return
                if not event.data:
                    continue
                yield self._chunk(event.data)
        except TimeoutError as exc:
            raise TransportError(
                "stream: timed out", model=self._model, error_type="timeout", code=408
            ) from exc
        except (aiohttp.ClientError, SSEError) as exc:
            raise TransportError(f"stream broke: {type(exc).__name__}", model=self._model) from exc
        raise TransportError("stream ended without [DONE]", model=self._model)

    def _chunk(self, data: str) -> ChatChunk:
        self.last_raw = data
        try:
            parsed = loads(data)
        except json.JSONDecodeError as exc:
            raise TransportError(
                "stream: malformed chunk", model=self._model, error_type="bad_chunk"
            ) from exc
        if isinstance(parsed, Mapping) and "error" in parsed:
            raise errors.error_from_body(
                _code_as_status(parsed), parsed, model=self.model or self._model, stream=True
            )
        chunk = ChatChunk.model_validate(parsed)
        self.generation_id = self.generation_id or chunk.id
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        return chunk


class _SSEBody:
    """The two things httpx-sse's ``EventSource`` reads from a response (``headers`` and
    ``aiter_text``), served from an aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.headers = response.headers
        self._content = response.content

    async def aiter_text(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        async for data in self._content.iter_any():
            if text := decoder.decode(data):
                yield text
        if tail := decoder.decode(b"", final=True):
            yield tail


def _model_of(payload: Mapping[str, Any]) -> str | None:
    model = payload.get("model")
    if isinstance(model, str):
        return model
    models = payload.get("models")
    if isinstance(models, list) and models and isinstance(models[0], str):
        return models[0]
    return None


def _json(body: bytes, path: str, status: int) -> Any:
    try:
        return loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransportError(
            f"{path}: answer is not JSON (HTTP {status})", error_type="bad_response"
        ) from exc


def _code_as_status(body: Mapping[str, Any]) -> int:
    """An HTTP-like status for an error chunk: its integer code, or 500 for string codes."""
    error = body.get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else 500


def _error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, *, model: str | None
) -> UpstreamError:
    try:
        parsed = loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        parsed = {"error": {"message": body[:200].decode("utf-8", "replace") or f"HTTP {status}"}}
    retry_after = errors.parse_retry_after(headers.get("Retry-After"))
    return errors.error_from_body(status, parsed, retry_after=retry_after, model=model)
