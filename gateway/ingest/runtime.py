"""The per-app ingest state the osquery and snapshot handlers share, and the seam for distributed-query answers.

Owns: IngestRuntime (per-device locks, the history throttle), AnswerHandler.
Must not import: gateway.keys, ingest.http (keys.py names both types, so this module stays below it).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

from aiohttp import web

from gateway.ingest.pipeline import HistoryThrottle
from gateway.store.base import Enrollment, PendingQuery

AnswerHandler = Callable[[web.Application, Enrollment, PendingQuery, Sequence[Mapping[str, str]] | None, datetime], Awaitable[None]]
"""Receives the rows a device's agent answered to a reserved distributed query (None when the agent
reported the query failed); registered in ``app[OSQUERY_ANSWERS]`` under the query name prefix."""


class IngestRuntime:
    """Per-app ingest state: one lock per device so two requests never interleave its query rows,
    and the history throttle."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.throttle = HistoryThrottle()

    def device_lock(self, serial: str) -> asyncio.Lock:
        lock = self._locks.get(serial)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[serial] = lock
        return lock


__all__ = ["AnswerHandler", "IngestRuntime"]
