"""What a candidate policy would do to the fleet, and one device's decision at every tier.

Owns: simulate, explain, SimulationReport, TierSimulation, Explanation, DeviceRef, Outcome, outcome_of.
Must not import: anything outside the standard library and policy_engine; reads no store (the
gateway passes the snapshots in) and holds no clock (``now`` is an argument).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Iterable, Mapping

from policy_engine.decision import Decision, Reason
from policy_engine.evaluate import CompiledPolicySet
from policy_engine.model import DeviceSnapshot

TOP = 10
_TEXT_LIST = 20


class Outcome(StrEnum):
    """A device's standing at a tier; each device has exactly one per tier."""

    ALLOWED = "allowed"
    """Allowed with nothing to fix."""
    NUDGED = "nudged"
    """Allowed, with nudges."""
    IN_GRACE = "in-grace"
    """Allowed for now; a failing check blocks when its grace ends."""
    DENIED = "denied"


def outcome_of(decision: Decision) -> Outcome:
    """Classify a decision: denied, else in grace, else nudged, else allowed."""
    if not decision.allowed:
        return Outcome.DENIED
    if decision.in_grace:
        return Outcome.IN_GRACE
    if decision.nudges:
        return Outcome.NUDGED
    return Outcome.ALLOWED


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A device named in a report: its serial and owners."""

    serial: str
    owners: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.serial} ({', '.join(self.owners)})" if self.owners else self.serial

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {"serial": self.serial, "owners": list(self.owners)}


def _pairs(counter: Counter[str], limit: int = TOP) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


@dataclass(frozen=True, slots=True)
class TierSimulation:
    """One tier under the candidate policy: counts, owners, top failures and the diff."""

    tier: str
    allowed: int
    nudged: int
    in_grace: int
    denied: int
    owners: tuple[tuple[Outcome, tuple[str, ...]], ...]
    """Owners of the devices in each outcome, sorted, each owner once per outcome."""
    denied_by_reason: tuple[tuple[str, int], ...]
    top_failing_checks: tuple[tuple[str, int], ...]
    """Blocking failures: check name and number of devices, most first."""
    top_grace_checks: tuple[tuple[str, int], ...]
    top_nudges: tuple[tuple[str, int], ...]
    lost_access: tuple[DeviceRef, ...]
    """Allowed by the policy in force, denied by the candidate."""
    gained_access: tuple[DeviceRef, ...]
    """Denied by the policy in force, allowed by the candidate."""
    new_tier: bool = False
    """The policy in force has no such tier, so there is no diff."""

    @property
    def devices(self) -> int:
        """Devices evaluated at this tier."""
        return self.allowed + self.nudged + self.in_grace + self.denied

    def owners_in(self, outcome: Outcome) -> tuple[str, ...]:
        """Owners of devices with this outcome."""
        return dict(self.owners).get(outcome, ())

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {
            "tier": self.tier,
            "counts": {
                Outcome.ALLOWED.value: self.allowed,
                Outcome.NUDGED.value: self.nudged,
                Outcome.IN_GRACE.value: self.in_grace,
                Outcome.DENIED.value: self.denied,
            },
            "owners": {o.value: list(names) for o, names in self.owners},
            "denied_by_reason": dict(self.denied_by_reason),
            "top_failing_checks": [{"check": c, "devices": n} for c, n in self.top_failing_checks],
            "top_grace_checks": [{"check": c, "devices": n} for c, n in self.top_grace_checks],
            "top_nudges": [{"check": c, "devices": n} for c, n in self.top_nudges],
            "lost_access": [d.to_dict() for d in self.lost_access],
            "gained_access": [d.to_dict() for d in self.gained_access],
            "new_tier": self.new_tier,
        }


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """A candidate policy evaluated over a fleet, per tier, against the policy in force."""

    candidate_version: str
    current_version: str | None
    evaluated_at: datetime
    devices: int
    tiers: tuple[TierSimulation, ...]
    removed_tiers: tuple[str, ...] = ()
    """Tiers the policy in force has and the candidate drops (routes using them would deny)."""

    def tier(self, name: str) -> TierSimulation | None:
        """The simulation of one tier, or None."""
        return next((t for t in self.tiers if t.tier == name), None)

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON (``--format json``)."""
        return {
            "candidate_version": self.candidate_version,
            "current_version": self.current_version,
            "evaluated_at": self.evaluated_at.isoformat(),
            "devices": self.devices,
            "tiers": [t.to_dict() for t in self.tiers],
            "removed_tiers": list(self.removed_tiers),
        }

    def to_text(self) -> str:
        """A plain-text report for a terminal."""
        against = f" against {self.current_version}" if self.current_version else ""
        lines = [
            f"policy {self.candidate_version}{against}: {self.devices} devices at {self.evaluated_at.isoformat()}",
            "",
            f"{'tier':<16}{'allowed':>9}{'nudged':>9}{'in grace':>10}{'denied':>9}{'loses':>8}{'gains':>8}",
        ]
        for t in self.tiers:
            lost = "new" if t.new_tier else str(len(t.lost_access))
            gained = "" if t.new_tier else str(len(t.gained_access))
            lines.append(
                f"{t.tier:<16}{t.allowed:>9}{t.nudged:>9}{t.in_grace:>10}{t.denied:>9}{lost:>8}{gained:>8}"
            )
        for name in self.removed_tiers:
            lines.append(f"{name:<16}  removed: routes on this tier would deny every request")
        for t in self.tiers:
            lines.append("")
            lines.append(f"tier {t.tier}:")
            if t.denied_by_reason:
                lines.append("  denied by reason: " + ", ".join(f"{r} {n}" for r, n in t.denied_by_reason))
            if t.top_failing_checks:
                lines.append("  top failing checks: " + ", ".join(f"{c} {n}" for c, n in t.top_failing_checks))
            if t.top_grace_checks:
                lines.append("  in grace: " + ", ".join(f"{c} {n}" for c, n in t.top_grace_checks))
            if t.top_nudges:
                lines.append("  nudges: " + ", ".join(f"{c} {n}" for c, n in t.top_nudges))
            for label, refs in (("loses access", t.lost_access), ("gains access", t.gained_access)):
                if refs:
                    shown = ", ".join(str(r) for r in refs[:_TEXT_LIST])
                    more = f" and {len(refs) - _TEXT_LIST} more" if len(refs) > _TEXT_LIST else ""
                    lines.append(f"  {label} ({len(refs)}): {shown}{more}")
            denied_owners = t.owners_in(Outcome.DENIED)
            if denied_owners:
                shown = ", ".join(denied_owners[:_TEXT_LIST])
                more = f" and {len(denied_owners) - _TEXT_LIST} more" if len(denied_owners) > _TEXT_LIST else ""
                lines.append(f"  denied owners ({len(denied_owners)}): {shown}{more}")
        return "\n".join(lines)


def simulate(
    candidate: CompiledPolicySet,
    current: CompiledPolicySet | None,
    snapshots: Iterable[DeviceSnapshot],
    *,
    now: datetime,
    failing_since_by_serial: Mapping[str, Mapping[str, datetime]] | None = None,
) -> SimulationReport:
    """Evaluate every snapshot at every candidate tier and compare with the policy in force."""
    history = failing_since_by_serial or {}
    current_tiers = set(current.tier_names) if current is not None else set()
    names = candidate.tier_names
    counts = {n: Counter[Outcome]() for n in names}
    owners: dict[str, dict[Outcome, set[str]]] = {n: {o: set() for o in Outcome} for n in names}
    reasons = {n: Counter[str]() for n in names}
    failing = {n: Counter[str]() for n in names}
    grace = {n: Counter[str]() for n in names}
    nudges = {n: Counter[str]() for n in names}
    lost: dict[str, list[DeviceRef]] = {n: [] for n in names}
    gained: dict[str, list[DeviceRef]] = {n: [] for n in names}
    devices = 0
    for snapshot in snapshots:
        devices += 1
        since = history.get(snapshot.serial)
        ref = DeviceRef(snapshot.serial, tuple(snapshot.owners))
        for name in names:
            decision = candidate.evaluate(snapshot, name, now=now, failing_since=since)
            outcome = outcome_of(decision)
            counts[name][outcome] += 1
            owners[name][outcome].update(snapshot.owners)
            if not decision.allowed:
                reasons[name][decision.reason.value] += 1
            failing[name].update(f.check for f in decision.failing)
            grace[name].update(f.check for f in decision.in_grace)
            nudges[name].update(f.check for f in decision.nudges)
            if current is not None and name in current_tiers:
                before = current.evaluate(snapshot, name, now=now, failing_since=since).allowed
                if before and not decision.allowed:
                    lost[name].append(ref)
                elif decision.allowed and not before:
                    gained[name].append(ref)
    tiers = tuple(
        TierSimulation(
            tier=n,
            allowed=counts[n][Outcome.ALLOWED],
            nudged=counts[n][Outcome.NUDGED],
            in_grace=counts[n][Outcome.IN_GRACE],
            denied=counts[n][Outcome.DENIED],
            owners=tuple((o, tuple(sorted(owners[n][o]))) for o in Outcome),
            denied_by_reason=_pairs(reasons[n], len(Reason)),
            top_failing_checks=_pairs(failing[n]),
            top_grace_checks=_pairs(grace[n]),
            top_nudges=_pairs(nudges[n]),
            lost_access=tuple(sorted(lost[n], key=lambda r: r.serial)),
            gained_access=tuple(sorted(gained[n], key=lambda r: r.serial)),
            new_tier=current is not None and n not in current_tiers,
        )
        for n in names
    )
    removed = tuple(n for n in (current.tier_names if current is not None else ()) if n not in names)
    return SimulationReport(
        candidate_version=candidate.version,
        current_version=current.version if current is not None else None,
        evaluated_at=now,
        devices=devices,
        tiers=tiers,
        removed_tiers=removed,
    )


@dataclass(frozen=True, slots=True)
class Explanation:
    """One device's decision at every tier of a policy."""

    serial: str
    owners: tuple[str, ...]
    policy_version: str
    evaluated_at: datetime
    decisions: tuple[Decision, ...]
    """One per tier, least sensitive first."""

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {
            "serial": self.serial,
            "owners": list(self.owners),
            "policy_version": self.policy_version,
            "evaluated_at": self.evaluated_at.isoformat(),
            "decisions": [d.to_dict() for d in self.decisions],
        }

    def to_text(self) -> str:
        """A plain-text explanation for a terminal."""
        who = f" ({', '.join(self.owners)})" if self.owners else ""
        lines = [f"device {self.serial}{who} under policy {self.policy_version} at {self.evaluated_at.isoformat()}"]
        for d in self.decisions:
            verdict = "allowed" if d.allowed else "denied"
            age = f", snapshot {int(d.snapshot_age.total_seconds())}s old" if d.snapshot_age is not None else ""
            lines.append(f"  {d.tier}: {verdict} ({d.reason.value}{age})")
            if d.detail:
                lines.append(f"    {d.detail}")
            for label, findings in (("fails", d.failing), ("in grace", d.in_grace), ("nudge", d.nudges)):
                for f in findings:
                    until = f" until {f.grace_deadline.isoformat()}" if label == "in grace" and f.grace_deadline else ""
                    lines.append(f"    {label}: {f.check}: {f.actual}, requires {f.required}{until}")
        return "\n".join(lines)


def explain(
    snapshot: DeviceSnapshot | None,
    policies: CompiledPolicySet,
    *,
    now: datetime,
    failing_since: Mapping[str, datetime] | None = None,
    serial: str = "",
) -> Explanation:
    """The decision for one device at every tier, least sensitive first; never raises."""
    decisions = tuple(policies.evaluate(snapshot, n, now=now, failing_since=failing_since) for n in policies.tier_names)
    return Explanation(
        serial=snapshot.serial if snapshot is not None else serial,
        owners=tuple(snapshot.owners) if snapshot is not None else (),
        policy_version=policies.version,
        evaluated_at=now,
        decisions=decisions,
    )
