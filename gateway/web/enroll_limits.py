"""Per-process enrollment state: the rate limit on sign-in sessions one client address may start.

Owns: EnrollRuntime, SESSION_LIMIT, SESSION_WINDOW.
Must not import: gateway.keys, enroll.api (keys.py names EnrollRuntime, so this module stays below it).
"""

from __future__ import annotations

import collections
from datetime import datetime, timedelta

SESSION_LIMIT = 10
"""Sign-in sessions one client address may start per ``SESSION_WINDOW`` (the endpoint needs no credentials)."""
SESSION_WINDOW = timedelta(minutes=10)


class EnrollRuntime:
    """Per-process state: when each client address last started sessions (a sliding window)."""

    def __init__(self) -> None:
        self._starts: dict[str, collections.deque[datetime]] = {}

    def allow(self, address: str, *, now: datetime) -> int | None:
        """None when ``address`` may start a session now (and counts it), else the seconds to wait."""
        starts = self._starts.setdefault(address, collections.deque())
        while starts and now - starts[0] >= SESSION_WINDOW:
            starts.popleft()
        if len(starts) >= SESSION_LIMIT:
            return max(1, int((starts[0] + SESSION_WINDOW - now).total_seconds()) + 1)
        starts.append(now)
        if len(self._starts) > 100_000:  # INVARIANT: bounded memory; forget the addresses with no recent start
            self._starts = {a: d for a, d in self._starts.items() if d and now - d[-1] < SESSION_WINDOW}
        return None


__all__ = ["SESSION_LIMIT", "SESSION_WINDOW", "EnrollRuntime"]
