"""Structured logging: one JSON object per line (orjson) off a terminal, readable colours on one.

Owns: configure_logging, iso_utc (the ``timestamp`` field's text), EventWriter (one event on a hot path).
Must not import: app, gateway.gate.admission (any module may log through ``structlog.get_logger()``).

Events are named ``noun.past_verb`` (``request.completed``, ``config.reload_failed``). Tokens,
secrets and whole snapshots are never logged.

A JSON line holds the event's own fields, ``event``, the context variables bound with
``structlog.contextvars`` (those the event does not set itself), ``level`` and ``timestamp`` (UTC,
ISO 8601 with microseconds and ``Z``), in that order, and ``exception`` when one was logged. The
JSON chain is one processor (``_JsonLines``): a request's line costs one pass, not six, and the
timestamp's date and time of day are formatted once per second. Every logger writes through one
shared ``BytesLogger``, one ``write`` per line.

An event written on every request (``request.completed``) can go through an ``EventWriter`` made at
start instead of ``structlog.get_logger(...).info``, which builds a logger and passes the fields
through three layers of keyword arguments on every call: the same processors, the same line, half
the cost.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog
from structlog import DropEvent
from structlog.contextvars import merge_contextvars
from structlog.processors import dict_tracebacks, format_exc_info

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_METHOD_LEVELS = {"warn": "warning", "exception": "error"}
"""Logger methods whose ``level`` is another word (as ``structlog.processors.add_log_level`` maps them)."""


def _orjson_dumps(event: dict[str, object], **_: object) -> bytes:
    return orjson.dumps(event, default=str)


class _Second:
    """The text of one UTC second, ``YYYY-MM-DDTHH:MM:SS``, kept until the clock leaves it."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: tuple[int, str] = (-1, "")
        """(Unix second, its text), replaced as one value: a thread never reads one second's text for another."""


_SECOND = _Second()


def iso_utc(ns: int | None = None) -> str:
    """``datetime.now(UTC).isoformat()`` with ``Z`` for ``+00:00`` (structlog's ``TimeStamper(fmt="iso", utc=True)``), for ``ns`` (default: now).

    The same text as the datetime's, microseconds floored as ``datetime.now`` does (and left out
    when zero, as ``isoformat`` does), at a fraction of its cost: the date and time of day are
    formatted once per second.
    """
    second, micro = divmod((time.time_ns() if ns is None else ns) // 1000, 1_000_000)
    held = _SECOND.held
    if held[0] != second:
        held = _SECOND.held = (second, datetime.fromtimestamp(second, UTC).isoformat().removesuffix("+00:00"))
    return f"{held[1]}.{micro:06d}Z" if micro else f"{held[1]}Z"


class _JsonLines(structlog.processors.JSONRenderer):
    """The whole JSON chain in one processor: contextvars, level, timestamp, exception, orjson.

    The same fields, in the same order, as ``merge_contextvars``, ``add_log_level``,
    ``TimeStamper(fmt="iso", utc=True)``, ``format_exc_info``, ``dict_tracebacks`` and
    ``JSONRenderer`` one after another; the exception processors run only for an event that
    carries ``exc_info``. A JSONRenderer, so that the workers' supervisor sees the JSON format.
    """

    def __init__(self) -> None:
        super().__init__(serializer=_orjson_dumps)

    def __call__(self, logger: Any, name: str, event_dict: structlog.typing.EventDict) -> bytes:
        merge_contextvars(logger, name, event_dict)
        event_dict["level"] = _METHOD_LEVELS.get(name, name)
        event_dict["timestamp"] = iso_utc()
        if "exc_info" in event_dict:
            event_dict = dict_tracebacks(logger, name, format_exc_info(logger, name, event_dict))
        return orjson.dumps(event_dict, default=str)


class _SharedBytesLogger:
    """A logger factory that gives every logger the same ``BytesLogger``: none is built per log call."""

    __slots__ = ("_logger",)

    def __init__(self, file: Any) -> None:
        self._logger = structlog.BytesLogger(file)

    def __call__(self, *args: Any) -> structlog.BytesLogger:
        return self._logger


def configure_logging(level: str = "info", fmt: str = "auto", *, stream: TextIO | None = None) -> None:
    """Set up structlog for the process: JSON lines unless ``fmt`` is console (or auto on a tty)."""
    out = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    if use_json:
        processors: list[structlog.typing.Processor] = [_JsonLines()]
        # A text stream's binary .buffer; a stream without one (a test's BytesIO) takes bytes already.
        binary = out.buffer if hasattr(out, "buffer") else out
        factory: Any = _SharedBytesLogger(binary)
    else:
        processors = [
            merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            format_exc_info,
            structlog.dev.ConsoleRenderer(colors=out.isatty()),
        ]
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


class EventWriter:
    """Writes one event, at one level, through the processors and logger configured when it was made.

    ``writer(**fields)`` writes what ``structlog.get_logger(logger).<level>(event, **fields)`` would
    have written, without making a logger per call: the configured processor list is kept (the same
    list object, so ``structlog.testing.capture_logs``, which edits it in place, still sees every
    event) and so is the logger. Make it after logging is configured (as the proxy reads the log
    level once, at start); ``enabled`` says whether the configured level writes the event at all
    (when not, a call writes nothing).
    """

    __slots__ = ("event", "enabled", "_method", "_processors", "_logger", "_write")

    def __init__(self, event: str, *, logger: str, level: str = "info") -> None:
        config = structlog.get_config()
        self.event = event
        wrapper: Any = config["wrapper_class"]
        try:  # make_filtering_bound_logger's classes know their level without an instance
            threshold = int(wrapper.get_effective_level(None))
        except Exception:  # any other wrapper: assume it logs everything
            threshold = 0
        self.enabled = _LEVELS[level] >= threshold
        self._method = level
        self._processors: list[structlog.typing.Processor] = config["processors"]
        self._logger: Any = config["logger_factory"](logger)
        self._write: Any = getattr(self._logger, level)

    def __call__(self, **fields: Any) -> None:
        """Write the event with ``fields`` (nothing when ``enabled`` is false or a processor drops it)."""
        if not self.enabled:
            return
        fields["event"] = self.event
        method, logger = self._method, self._logger
        line: Any = fields
        try:
            for processor in self._processors:
                line = processor(logger, method, line)
        except DropEvent:
            return
        if isinstance(line, (bytes, str, bytearray)):
            self._write(line)
        elif isinstance(line, tuple):
            self._write(*line[0], **line[1])
        else:
            self._write(**line)
