"""Logging: plain text or JSON lines (``SATROUTER_LOG_FORMAT``), each line carrying the
request, task and payer it belongs to.

The ids live in context variables, so every line logged while a request is handled (or while
the engine runs a task) names them without being passed around. The payer is an account or
token *id* (``acct_...``, ``task_...``, ``l402_...``), never a key. Fields given with
``extra=`` (``status``, ``cost_nusd``, ``charge_msat``...) go into the JSON line as they are.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id: ContextVar[str | None] = ContextVar("task_id", default=None)
payer_id: ContextVar[str | None] = ContextVar("payer_id", default=None)

_CONTEXT = {"request_id": request_id, "task_id": task_id, "payer_id": payer_id}
#: The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", *_CONTEXT}
#: Loggers that write raw request and response headers (API keys, L402 credentials) at DEBUG:
#: kept at INFO whatever the level. The service itself never logs a header.
HEADER_LOGGERS = ("httpcore", "hpack", "httpx")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class ContextFilter(logging.Filter):
    """Puts the context's ids on every record (``-`` where unknown, for the text format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the ids, and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.request_id is None:  # type: ignore[attr-defined]
            record.request_id = "-"
            try:
                return super().format(record)
            finally:
                record.request_id = None
        return super().format(record)


def formatter(kind: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else _TextFormatter(TEXT_FORMAT)


def configure(kind: Literal["text", "json"], level: int) -> None:
    """Log to stderr in ``kind``: replaces whatever handlers the root logger had."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(kind))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    quiet_header_loggers()


def quiet_header_loggers() -> None:
    for name in HEADER_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
