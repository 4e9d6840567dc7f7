"""A bounded memo of decisions, reused only while each decision is still valid.

Owns: DecisionMemo.
Must not import: anything outside the standard library and policy_engine; holds no clock.

Key decisions by everything they depend on: ``(serial, snapshot identity, policy version, tier)``.
The grace history (``failing_since``) only changes when a new snapshot is ingested, so a key that
includes the snapshot identity covers it; if the gateway changes history for an unchanged
snapshot, it must put a history version in the key too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Hashable, Mapping

from policy_engine.decision import Decision
from policy_engine.evaluate import CompiledPolicySet
from policy_engine.model import DeviceSnapshot


class DecisionMemo:
    """Decisions by key; a hit is returned only while ``evaluated_at <= now < valid_until``."""

    __slots__ = ("_entries", "_maxsize", "hits", "misses")

    def __init__(self, maxsize: int = 200_000) -> None:
        if maxsize < 1:
            raise ValueError(f"`{maxsize}` is not a memo size; give at least `1`")
        self._entries: dict[Hashable, Decision] = {}
        self._maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, *, now: datetime) -> Decision | None:
        """The memoised decision for ``key`` if it still holds at ``now``, else None."""
        decision = self._entries.get(key)
        if decision is not None:
            until = decision.valid_until
            if (until is None or now < until) and decision.evaluated_at <= now:  # type: ignore[operator]
                return decision
            del self._entries[key]
        return None

    def put(self, key: Hashable, decision: Decision) -> None:
        """Remember a decision; when full, the oldest eighth of the entries is dropped."""
        entries = self._entries
        if decision.evaluated_at is None:
            return
        if key not in entries and len(entries) >= self._maxsize:
            drop = max(1, self._maxsize // 8)
            for old in list(entries)[:drop]:
                del entries[old]
        entries[key] = decision

    def decide(
        self,
        policies: CompiledPolicySet,
        snapshot: DeviceSnapshot | None,
        tier: str,
        *,
        now: datetime,
        key: Hashable,
        failing_since: Mapping[str, datetime] | None = None,
    ) -> Decision:
        """The memoised decision, or a fresh ``policies.evaluate(...)`` remembered under ``key``."""
        found = self.get(key, now=now)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        decision = policies.evaluate(snapshot, tier, now=now, failing_since=failing_since)
        self.put(key, decision)
        return decision

    def clear(self) -> None:
        """Forget everything (for example after a policy reload)."""
        self._entries.clear()
