"""A bounded memo of decisions, reused only while each decision is still valid.

Owns: DecisionMemo.
Must not import: anything outside the standard library and policy_engine; holds no clock.

Decisions are grouped by device. A device's group belongs to one *generation*: everything else its
decisions depend on, the snapshot's identity and the policy version (the gateway passes
``(snapshot.collected_at, policies.version)``); within it each decision has a key (the tier). The
grace history (``failing_since``) only changes when a new snapshot is ingested, so a generation that
includes the snapshot identity covers it; if the gateway changes history for an unchanged
snapshot, it must put a history version in the generation too.

The memo is bounded by what it holds, not only by a count: a put of a new generation drops the
device's old group, and ``forget(device)`` drops it as soon as the device's snapshot is replaced,
so it holds at most one generation per device (one decision per tier), never the decisions of
replaced snapshots. ``maxsize`` is a hard cap on top, for fleets larger than it.
"""

from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Hashable, Mapping

from policy_engine.decision import Decision
from policy_engine.evaluate import CompiledPolicySet
from policy_engine.model import DeviceSnapshot


class DecisionMemo:
    """Decisions by device, generation and key; a hit is returned only while ``evaluated_at <= now < valid_until``."""

    __slots__ = ("_devices", "_size", "_maxsize", "hits", "misses")

    def __init__(self, maxsize: int = 200_000) -> None:
        if maxsize < 1:
            raise ValueError(f"`{maxsize}` is not a memo size; give at least `1`")
        self._devices: dict[Hashable, tuple[Hashable, dict[Hashable, Decision]]] = {}
        self._size = 0
        self._maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """How many decisions are held, over every device."""
        return self._size

    def devices(self) -> int:
        """How many devices have decisions held."""
        return len(self._devices)

    def get(self, device: Hashable, generation: Hashable, key: Hashable, *, now: datetime) -> Decision | None:
        """The memoised decision if it is of the device's ``generation`` and still holds at ``now``, else None."""
        held = self._devices.get(device)
        if held is None or held[0] != generation:
            return None
        decisions = held[1]
        decision = decisions.get(key)
        if decision is not None:
            until = decision.valid_until
            if (until is None or now < until) and decision.evaluated_at <= now:  # type: ignore[operator]
                return decision
            del decisions[key]
            self._size -= 1
        return None

    def put(self, device: Hashable, generation: Hashable, key: Hashable, decision: Decision) -> None:
        """Remember a decision; a new generation replaces the device's old decisions; when full, the devices remembered longest ago go."""
        if decision.evaluated_at is None:
            return
        held = self._devices.get(device)
        if held is not None and held[0] != generation:
            self.forget(device)
            held = None
        if held is None or key not in held[1]:
            if self._size >= self._maxsize:
                self._shrink()
                held = self._devices.get(device)
            if held is None:
                held = (generation, {})
                self._devices[device] = held
            self._size += 1
        held[1][key] = decision

    def forget(self, device: Hashable) -> None:
        """Drop every decision of ``device`` (its snapshot was replaced)."""
        held = self._devices.pop(device, None)
        if held is not None:
            self._size -= len(held[1])

    def _shrink(self) -> None:
        """Drop the devices remembered longest ago until an eighth of ``maxsize`` is free."""
        target = self._maxsize - max(1, self._maxsize // 8)
        for device in list(islice(self._devices, max(1, self._maxsize // 8))):
            if self._size <= target:
                break
            self.forget(device)

    def decide(
        self,
        policies: CompiledPolicySet,
        snapshot: DeviceSnapshot | None,
        tier: str,
        *,
        now: datetime,
        device: Hashable,
        generation: Hashable,
        failing_since: Mapping[str, datetime] | None = None,
    ) -> Decision:
        """The memoised decision, or a fresh ``policies.evaluate(...)`` remembered for ``device`` under the tier."""
        found = self.get(device, generation, tier, now=now)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        decision = policies.evaluate(snapshot, tier, now=now, failing_since=failing_since)
        self.put(device, generation, tier, decision)
        return decision

    def clear(self) -> None:
        """Forget everything."""
        self._devices.clear()
        self._size = 0
