"""Deciding where a request that may hold sensitive content may go: every text of the request
that reaches a model (:func:`request_texts`) is scanned (``sensitive.py`` finds the kinds,
:func:`review` without holding the event loop), and :func:`decide` sends it as asked, to local
models, to cloud providers with zero data retention, or refuses it.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from .sensitive import SLICE_SECONDS, Detector

__all__ = [
    "ROUTING_FIELDS",
    "ZDR_PROVIDER",
    "Action",
    "Decision",
    "Detector",
    "PrivacyMode",
    "decide",
    "request_texts",
    "review",
]

#: Top-level request fields that are routing instructions, not text sent to a model.
ROUTING_FIELDS = frozenset({"model", "models", "provider", "consensus", "route", "transforms"})


def request_texts(body: Mapping[str, Any] | BaseModel) -> Iterator[str]:
    """Every string in a request that reaches a model: messages at any depth (string content,
    content parts, names, ``tool_calls`` arguments, tool results), ``tools``, ``functions``,
    ``response_format`` and any other field, less the routing instructions
    (:data:`ROUTING_FIELDS`). Plain JSON, or a pydantic model read as one (its fields and
    extra fields, without serialising it): no field of a message schema is assumed. Walked
    without recursion, so any depth is fine."""
    stack: list[Any] = [v for k, v in reversed(list(_items(body))) if k not in ROUTING_FIELDS]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping | BaseModel):
            stack.extend(reversed([v for _, v in _items(value)]))
        elif isinstance(value, list | tuple):
            stack.extend(reversed(value))


def _items(value: Mapping[str, Any] | BaseModel) -> Iterable[tuple[str, Any]]:
    if isinstance(value, BaseModel):
        return [*value.__dict__.items(), *(value.model_extra or {}).items()]
    return value.items()


class PrivacyMode(enum.StrEnum):
    """What a sensitive prompt does (``SATROUTER_PRIVACY_MODE``)."""

    LOCAL = "local"  # the [privacy] tier's local models
    REFUSE = "refuse"  # 422 sensitive_content, unless the agent consents to the cloud
    ZDR = "zdr"  # cloud models with zero data retention
    OFF = "off"  # no scan: every prompt is routed as any other


#: Provider preferences that keep a prompt with providers that neither log nor train on it.
ZDR_PROVIDER: Mapping[str, Any] = {"data_collection": "deny", "zdr": True}

Action = Literal["send", "local", "cloud_zdr", "refuse"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request may go. ``send``: as asked (nothing sensitive, or no scan)."""

    action: Action = "send"
    kinds: tuple[str, ...] = ()
    #: ``cloud_zdr``: the provider preferences to send (the agent's, made zero-retention)
    provider: Mapping[str, Any] | None = None
    #: ``refuse``: why, and how the agent can opt in
    reason: str = ""

    def record(self) -> dict[str, Any] | None:
        """What the task keeps: the kinds found and where the prompt went (never the text)."""
        if self.action in ("local", "cloud_zdr"):
            return {"kinds": list(self.kinds), "decision": self.action}
        return None


def decide(
    kinds: Iterable[str],
    *,
    mode: PrivacyMode | None,
    consent: bool,
    local: bool,
    provider: Mapping[str, Any] | None = None,
) -> Decision:
    """Where a request whose scan found ``kinds`` may go.

    ``mode`` is the operator's (None: ``local`` when a local endpoint is configured, else
    ``refuse``); ``consent`` is the agent's ``allow_sensitive_cloud``; ``local`` whether local
    models can take it (an endpoint and a ``[privacy] tier``); ``provider`` the agent's own
    provider preferences, kept under the zero-retention ones."""
    found = tuple(sorted(set(kinds)))
    if mode is PrivacyMode.OFF or not found:
        return Decision("send")
    if mode is None:
        mode = PrivacyMode.LOCAL if local else PrivacyMode.REFUSE
    if consent or mode is PrivacyMode.ZDR:
        return Decision("cloud_zdr", found, {**(provider or {}), **ZDR_PROVIDER})
    if mode is PrivacyMode.LOCAL and local:
        return Decision("local", found)
    where = (
        "no local model is configured here"
        if mode is PrivacyMode.LOCAL or not local
        else "this satrouter sends such prompts to cloud models only with consent"
    )
    return Decision(
        "refuse",
        found,
        reason=(
            f"the prompt contains {', '.join(found)}; {where}. Send "
            '"allow_sensitive_cloud": true to run it on cloud models with zero data retention '
            '(provider data_collection "deny", zdr true)'
        ),
    )


async def review(
    body: Mapping[str, Any] | BaseModel,
    detector: Detector,
    *,
    mode: PrivacyMode | None,
    consent: bool,
    local: bool,
    slice_seconds: float = SLICE_SECONDS,
) -> Decision:
    """Scan a request (:func:`request_texts`) without holding the event loop longer than
    ``slice_seconds`` at a time, and :func:`decide` where it may go."""
    provider = dict(_items(body)).get("provider")
    if mode is PrivacyMode.OFF:
        return Decision("send")
    began = time.perf_counter()

    async def pause() -> None:
        nonlocal began
        if time.perf_counter() - began >= slice_seconds:
            await asyncio.sleep(0)
            began = time.perf_counter()

    texts: list[str] = []
    for n, text in enumerate(request_texts(body)):
        texts.append(text)
        if n % 256 == 255:
            await pause()
    scan = detector.scan(texts)
    for _ in scan.steps():
        await pause()
    return decide(
        scan.found,
        mode=mode,
        consent=consent,
        local=local,
        provider=provider if isinstance(provider, Mapping) else None,
    )
