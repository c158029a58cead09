"""Deterministic tokens and replies, so tests can predict usage and cost exactly.

A token is a run of word characters or a single other non-space character (``\\w+|[^\\w\\s]``).
That is never more tokens than UTF-8 bytes, so satrouter's quote bound (one token per byte plus
overhead) always holds against the emulator, as it does against real tokenizers.

Directives in the last user message steer the reply for tests and demos:
``[[tokens=N]]`` asks for exactly N completion tokens (capped by ``max_tokens``);
``[[reply:TEXT]]`` asks for TEXT as the reply; ``[[reply@MODEL:TEXT]]`` asks it of MODEL only
(for consensus tests, where models must disagree); ``[[confidence=P]]`` and
``[[confidence@MODEL=P]]`` set the probability every token gets when logprobs are asked for
(0.9 otherwise), for cascade tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")
_TOKENS_DIRECTIVE = re.compile(r"\[\[tokens=(\d{1,6})\]\]")
_REPLY_DIRECTIVE = re.compile(r"\[\[reply:(.*?)\]\]", re.DOTALL)
_MODEL_REPLY = re.compile(r"\[\[reply@([^:\]]+):(.*?)\]\]", re.DOTALL)
_CONFIDENCE = re.compile(r"\[\[confidence(?:@([^=\]]+))?=([01](?:\.\d+)?)\]\]")
DEFAULT_CONFIDENCE = 0.9

#: Per message (role and separators), per request and per tool or output schema, as chat
#: templates add them.
MESSAGE_TOKENS = 4
REQUEST_TOKENS = 3
SCHEMA_TOKENS = 8
DEFAULT_REPLY_TOKENS = 24

_WORDS = (
    "Here is the emulated answer . It is deterministic , so usage and cost can be "
    "predicted exactly by tests and demos ; every word counts as one token ."
).split()


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def _billed_besides_text(message: Mapping[str, Any]) -> str:
    """What a message adds to the prompt besides its text: its name, its tool calls."""
    extra = [message.get(k) for k in ("name", "tool_calls", "function_call") if message.get(k)]
    return json.dumps(extra) if extra else ""


def prompt_tokens(messages: Sequence[Mapping[str, Any]], schemas: Sequence[Any] = ()) -> int:
    """Every message's text, names and tool calls, and every tool or output schema (the
    model reads them all, so the provider bills them all)."""
    return (
        REQUEST_TOKENS
        + sum(
            MESSAGE_TOKENS + count_tokens(message_text(m)) + count_tokens(_billed_besides_text(m))
            for m in messages
        )
        + sum(SCHEMA_TOKENS + count_tokens(json.dumps(s)) for s in schemas)
    )


def reply_tokens(
    messages: Sequence[Mapping[str, Any]], max_tokens: int | None, model: str = ""
) -> list[str]:
    """The reply as a list of tokens, each to be sent as one stream chunk."""
    last_user = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    for target, text in _MODEL_REPLY.findall(last_user):
        if target == model:
            return _TOKEN.findall(text)[: max_tokens if max_tokens is not None else None]
    if reply := _REPLY_DIRECTIVE.search(last_user):
        tokens = _TOKEN.findall(reply.group(1))
    else:
        wanted = _TOKENS_DIRECTIVE.search(last_user)
        n = int(wanted.group(1)) if wanted else DEFAULT_REPLY_TOKENS
        tokens = list(_cycle(_WORDS, n))
    if max_tokens is not None:
        tokens = tokens[: max(0, max_tokens)]
    return tokens


def token_confidence(messages: Sequence[Mapping[str, Any]], model: str) -> float:
    """The probability each reply token is given in logprobs."""
    last_user = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    chosen = DEFAULT_CONFIDENCE
    for target, value in _CONFIDENCE.findall(last_user):
        if target == model:
            return float(value)
        if not target:
            chosen = float(value)
    return chosen


def _cycle(words: Sequence[str], n: int) -> Iterable[str]:
    for i in range(n):
        yield words[i % len(words)]


def join_tokens(tokens: Sequence[str]) -> str:
    """Tokens back to text: words separated by spaces, punctuation attached."""
    return "".join(piece(tokens, i) for i in range(len(tokens)))


def piece(tokens: Sequence[str], i: int) -> str:
    """The text of token ``i`` as a stream delta, so that joining the deltas gives the reply."""
    token = tokens[i]
    if i == 0 or (not token[0].isalnum() and token not in "(["):
        return token
    return " " + token
