"""Tool calls and structured output, deterministic, so agents' tool loops can be tested offline.

- With ``tools`` the emulated model calls one, as ``tool_choice`` allows: ``"none"`` never;
  ``{"type": "function", "function": {"name": N}}`` always N; ``"required"`` always the first
  tool; ``"auto"`` (the default) the first tool, unless the conversation's last message is a
  ``tool`` result, which it answers in text (one round of an agent's loop).
- The arguments are an instance of the tool's ``parameters`` JSON schema (as far as simple
  schemas go: types, properties, required, enum, const, default, items, anyOf/oneOf/allOf).
- With ``response_format`` ``json_object`` the reply is ``{"answer": <text>}``; with
  ``json_schema``, an instance of its schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_MAX_DEPTH = 8
#: One token with the space before it: joining the pieces gives the text back.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")


def instance(schema: Any, depth: int = 0) -> Any:
    """A value valid for ``schema`` (simple JSON schemas), the same every time."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("allOf", "anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return instance(options[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        value = {str(k): instance(v, depth + 1) for k, v in properties.items()}
        required = schema.get("required")
        for name in required if isinstance(required, list) else []:
            value.setdefault(str(name), "example")
        return value
    if kind == "array":
        count = schema.get("minItems")
        count = count if isinstance(count, int) and 0 < count <= 3 else 1
        return [instance(schema.get("items"), depth + 1) for _ in range(count)]
    if kind == "string":
        return "example"
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        number: int | float = 1
        if isinstance(low, int | float) and not isinstance(low, bool):
            number = low
        if isinstance(high, int | float) and not isinstance(high, bool) and number > high:
            number = high
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return True
    return None


def tool_call(body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The tool call the model makes, in OpenAI's shape, or ``{}`` for a text answer."""
    tools = [
        t["function"]
        for t in body.get("tools") or []
        if isinstance(t, Mapping)
        and isinstance(t.get("function"), Mapping)
        and isinstance(t["function"].get("name"), str)
    ]
    if not tools:
        return {}
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return {}
    if isinstance(choice, Mapping):
        wanted = (choice.get("function") or {}).get("name")
        tool = next((t for t in tools if t["name"] == wanted), None)
        if tool is None:
            return {}
    elif choice == "required":
        tool = tools[0]
    elif messages and messages[-1].get("role") == "tool":
        return {}  # the tool answered: now the model answers in text
    else:
        tool = tools[0]
    arguments = json.dumps(instance(tool.get("parameters") or {"type": "object"}))
    seed = json.dumps([tool["name"], len(messages)]).encode()
    return {
        "id": "call_" + hashlib.sha256(seed).hexdigest()[:24],
        "type": "function",
        "function": {"name": tool["name"], "arguments": arguments},
    }


def json_reply(response_format: Any, text: str) -> str | None:
    """The reply as JSON for a ``response_format`` that asks for it, else None."""
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return json.dumps({"answer": text})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return json.dumps(instance(schema if schema is not None else {"type": "object"}))
    return None


def pieces(text: str) -> list[str]:
    """``text`` as stream deltas of one token each; they join back to ``text`` (less any
    trailing space)."""
    return _PIECE.findall(text)
