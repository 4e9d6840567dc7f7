"""Structured logging: one JSON object per line (orjson) off a terminal, readable colours on one.

Owns: configure_logging.
Must not import: app, handlers (any module may log through ``structlog.get_logger()``).

Events are named ``noun.past_verb`` (``request.completed``, ``config.reload_failed``). Tokens,
secrets and whole snapshots are never logged.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import TextIO

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _orjson_dumps(event: dict[str, object], **_: object) -> bytes:
    return orjson.dumps(event, default=str)


def configure_logging(level: str = "info", fmt: str = "auto", *, stream: TextIO | None = None) -> None:
    """Set up structlog for the process: JSON lines unless ``fmt`` is console (or auto on a tty)."""
    out = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if use_json:
        processors: list[structlog.typing.Processor] = [
            *shared, structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
        # A text stream's binary .buffer; a stream without one (a test's BytesIO) takes bytes already.
        binary = out.buffer if hasattr(out, "buffer") else out
        factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(binary)  # type: ignore[arg-type]
    else:
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=out.isatty())]
        factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def log_context_var(name: str) -> contextvars.ContextVar[object]:
    """structlog's context variable behind ``bind_contextvars(name=...)``; ``.set(v)`` binds ``name`` without its per-call lookups."""
    token = structlog.contextvars.bind_contextvars(**{name: None})[name]
    structlog.contextvars.reset_contextvars(**{name: token})
    return token.var
