"""The clock every part of the gateway receives: a callable returning timezone-aware UTC now.

Owns: Clock, utc_now.
Must not import: anything from gateway (a leaf: keys.py names Clock, so this module stays below it).

Only ``gateway/app.py`` and the server (and the command line) call ``utc_now``; everything below them
receives a ``Clock`` or ``now``, so tests pass a fixed one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


__all__ = ["Clock", "utc_now"]
