"""The compiled policy set and its hot path: ``evaluate(snapshot, tier, *, now)`` -> Decision.

Owns: CompiledPolicySet, TierInfo.
Must not import: anything outside the standard library and policy_engine; built only by compile.py.

``evaluate`` is total and fail-closed: it never raises, and anything missing, unknown or broken
denies with a reason that says which. Each tier has one generated function that runs its checks
inline, cheapest first, and returns the indices of those that fail (the common all-pass case
costs one call); only failing checks are then described, from per-check caches.
``evaluate_without_device(tier, *, now)`` decides a request that names no device: ``identity-only``
at a ``device: optional`` tier, as ``evaluate(None, tier)`` everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

from policy_engine.checks import CompiledCheck
from policy_engine.decision import Decision, Finding, Reason
from policy_engine.decision import DecisionTwin as _DecisionTwin
from policy_engine.decision import FindingTwin as _FindingTwin
from policy_engine.document import BreakGlassSpec, ControlRef, DeviceRequirement, IfUnmeasurable, Severity
from policy_engine.model import DeviceSnapshot
from policy_engine.remediation import Remediation

_ONE_TICK = timedelta(microseconds=1)
_CHECKS_FAILED = Reason.CHECKS_FAILED
_CHECK_UNMEASURABLE = Reason.CHECK_UNMEASURABLE
_STALE = Reason.SNAPSHOT_STALE
_TIER_UNKNOWN = Reason.TIER_UNKNOWN
_DEVICE_UNKNOWN = Reason.DEVICE_UNKNOWN
_NUDGE = Severity.NUDGE
_OK = Reason.OK
_UNMEASURABLE_NUDGE = IfUnmeasurable.NUDGE
_DEVICE_OPTIONAL = DeviceRequirement.OPTIONAL


@dataclass(frozen=True, slots=True)
class TierInfo:
    """What the gateway and break-glass need to know about a tier."""

    name: str
    rank: int
    """0 for the least sensitive tier; higher is more sensitive."""
    checks: tuple[str, ...]
    """Every check the tier requires, inherited ones first, in document order."""
    max_snapshot_age: timedelta
    break_glass: BreakGlassSpec
    extends: str = ""
    description: str = ""
    device: DeviceRequirement = DeviceRequirement.REQUIRED
    """``optional``: a request naming no verified device is allowed on identity alone (``identity-only``)."""

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {
            "name": self.name,
            "rank": self.rank,
            "checks": list(self.checks),
            "max_snapshot_age_s": self.max_snapshot_age.total_seconds(),
            "break_glass": {
                "mode": self.break_glass.mode.value,
                "max_duration_s": self.break_glass.max_duration.total_seconds()
                if self.break_glass.max_duration is not None
                else None,
            },
            "extends": self.extends,
            "device": self.device.value,
        }


class _Tier:
    """A tier ready to evaluate; internal."""

    __slots__ = ("info", "name", "checks", "failing", "max_age", "fresh_shift")

    def __init__(
        self,
        info: TierInfo,
        checks: tuple[CompiledCheck, ...],
        failing: Callable[[DeviceSnapshot], list[int]],
    ) -> None:
        self.info = info
        self.name = info.name
        self.checks = checks
        self.failing = failing
        self.max_age = info.max_snapshot_age
        # A snapshot is stale once its age exceeds max_age: the first such instant is one tick later.
        self.fresh_shift = info.max_snapshot_age + _ONE_TICK


def _tier_name(tier: object) -> str:
    try:
        return tier if isinstance(tier, str) else repr(tier)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break evaluate
        return "?"


class CompiledPolicySet:
    """A validated, compiled policy; immutable once built by ``compile_policy_set``."""

    __slots__ = ("source", "version", "description", "max_clock_skew", "tiers", "checks",
                 "remediation", "controls", "_by_name", "_neg_skew", "_all_checks", "_all_failing")

    def __init__(
        self,
        *,
        source: str,
        version: str,
        description: str,
        max_clock_skew: timedelta,
        tiers: Iterable[_Tier],
        checks: Iterable[CompiledCheck],
        remediation: Mapping[str, Remediation],
        all_failing: Callable[[DeviceSnapshot], list[int]],
        controls: Mapping[str, tuple[ControlRef, ...]] | None = None,
    ) -> None:
        tier_list = tuple(tiers)
        self._all_failing = all_failing
        self.source = source
        self.version = version
        """Fingerprint of the document's content; part of any memo key."""
        self.description = description
        self.max_clock_skew = max_clock_skew
        self.tiers: tuple[TierInfo, ...] = tuple(t.info for t in tier_list)
        """Tiers, least sensitive first."""
        self._all_checks = tuple(checks)
        self.checks: Mapping[str, CompiledCheck] = MappingProxyType({c.name: c for c in self._all_checks})
        self.remediation: Mapping[str, Remediation] = MappingProxyType(dict(remediation))
        self.controls: Mapping[str, tuple[ControlRef, ...]] = MappingProxyType(dict(controls or {}))
        """Per check name, the compliance controls it evidences (the policy's ``controls``); reports read it."""
        self._by_name = {t.name: t for t in tier_list}
        self._neg_skew = -max_clock_skew

    def __repr__(self) -> str:
        return f"CompiledPolicySet(source={self.source!r}, version={self.version!r}, tiers={[t.name for t in self.tiers]!r})"

    @property
    def tier_names(self) -> tuple[str, ...]:
        """Tier names, least sensitive first."""
        return tuple(t.name for t in self.tiers)

    def tier(self, name: str) -> TierInfo | None:
        """A tier's rules (checks, max age, break-glass), or None when it is not defined."""
        found = self._by_name.get(name)
        return found.info if found is not None else None

    def remediation_for(self, key: str) -> Remediation:
        """The remediation entry for a finding's key; a bare title when the catalog has none."""
        entry = self.remediation.get(key)
        if entry is None:
            return Remediation(key=key, title=key.replace("_", " ").capitalize())
        return entry

    def failing_check_names(self, snapshot: DeviceSnapshot) -> frozenset[str]:
        """Every check of every tier that does not pass on this snapshot (errors count as failing).

        The gateway calls this at ingest to keep each device's ``failing_since`` history: record
        the snapshot's time for names that appear, drop names that no longer do.
        """
        checks = self._all_checks
        try:
            return frozenset(checks[i if i >= 0 else ~i].name for i in self._all_failing(snapshot))
        except Exception:  # noqa: BLE001 - a snapshot that breaks even this fails everything
            return frozenset(c.name for c in checks)

    def evaluate(
        self,
        snapshot: DeviceSnapshot | None,
        tier: str,
        *,
        now: datetime,
        failing_since: Mapping[str, datetime] | None = None,
    ) -> Decision:
        """Decide whether the device may enter the tier at ``now``; never raises.

        ``failing_since`` maps a check name to when this device first failed it (the gateway's
        history); a failing check with grace and no entry counts from the snapshot's own time.
        """
        try:
            t = self._by_name.get(tier)
            if t is None:
                return _DecisionTwin(False, _tier_name(tier), _TIER_UNKNOWN, (), (), (), None, now, None, "")  # type: ignore[no-any-return]
            if snapshot is None:
                return _DecisionTwin(False, t.name, _DEVICE_UNKNOWN, (), (), (), None, now, None, "")  # type: ignore[no-any-return]
            collected = snapshot.collected_at
            received = snapshot.received_at
            # INVARIANT: a snapshot is as old as the earlier of the device's and our own clock
            # say, so a device clock set ahead cannot make old data look fresh.
            observed = collected if collected <= received else received
            age = now - observed
            if age > t.max_age:
                return _DecisionTwin(False, t.name, _STALE, (), (), (), age, now, None, "")  # type: ignore[no-any-return]
            if age < self._neg_skew:
                return _DecisionTwin(  # type: ignore[no-any-return]
                    False, t.name, Reason.SNAPSHOT_FROM_FUTURE, (), (), (), age, now, observed + self._neg_skew, ""
                )
            # One generated function runs every check inline and lists the ones that fail;
            # the common, all-pass case ends here.
            indices = t.failing(snapshot)
            if not indices:
                return _DecisionTwin(True, t.name, _OK, (), (), (), age, now, observed + t.fresh_shift, "")  # type: ignore[no-any-return]
            return self._explain(t, snapshot, now, failing_since, age, observed, indices)
        except Exception as exc:  # noqa: BLE001 - evaluate is total: broken input denies
            return _error(tier, now, f"evaluation raised {type(exc).__name__}")

    def evaluate_without_device(self, tier: str, *, now: datetime) -> Decision:
        """Decide a request that names no verified device; never raises.

        A ``device: optional`` tier allows it on identity alone (reason ``identity-only``); any other
        tier denies it as ``device-unknown``, as ``evaluate(None, tier)`` does.
        """
        try:
            t = self._by_name.get(tier)
            if t is not None and t.info.device is _DEVICE_OPTIONAL:
                return Decision(True, t.name, Reason.IDENTITY_ONLY, evaluated_at=now)
            return self.evaluate(None, tier, now=now)
        except Exception as exc:  # noqa: BLE001 - total, like evaluate
            return _error(tier, now, f"evaluation raised {type(exc).__name__}")

    def _explain(
        self,
        t: _Tier,
        snapshot: DeviceSnapshot,
        now: datetime,
        failing_since: Mapping[str, datetime] | None,
        age: timedelta,
        observed: datetime,
        indices: list[int],
    ) -> Decision:
        failing: list[Finding] = []
        in_grace: list[Finding] = []
        nudges: list[Finding] = []
        valid_until = observed + t.fresh_shift
        checks = t.checks
        unmeasurable = snapshot.unmeasurable
        for index in indices:
            if index < 0:
                return Decision(
                    False, t.name, Reason.CHECK_ERROR, snapshot_age=age, evaluated_at=now,
                    valid_until=valid_until, detail=f"check `{checks[~index].name}` raised an error",
                )
            check = checks[index]
            try:
                # INVARIANT: a check whose fact is unmeasurable is only listed as failing when its
                # `if_unmeasurable` is nudge or fail (compile.py's generated function skips pass).
                blind = bool(unmeasurable) and check.fact in unmeasurable
                grace = check.grace
                if blind and check.if_unmeasurable is _UNMEASURABLE_NUDGE:
                    nudges.append(check.unmeasurable_finding(snapshot))
                    continue
                if grace is None:
                    found = check.unmeasurable_finding(snapshot) if blind else check.finding(snapshot)
                    (nudges if check.severity is _NUDGE else failing).append(found)
                    continue
                if blind:
                    blind_finding = check.unmeasurable_finding(snapshot)
                    actual, required = blind_finding.actual, blind_finding.required
                else:
                    actual, required = check.describe(snapshot)
            except Exception as exc:  # noqa: BLE001 - fail closed, naming the check
                return Decision(
                    False, t.name, Reason.CHECK_ERROR, snapshot_age=age, evaluated_at=now,
                    valid_until=valid_until, detail=f"check `{check.name}` raised {type(exc).__name__}",
                )
            since = failing_since.get(check.name) if failing_since else None
            # INVARIANT: grace counts from the first failure; without history that is at the
            # latest this snapshot's time, never `now` (which would make grace endless).
            start = observed if since is None or since > observed else since
            deadline = start + grace
            finding = _FindingTwin(
                check.name, check.fact, actual, required, check.severity, deadline, check.remediation, blind
            )
            if now < deadline:
                in_grace.append(finding)
                if deadline < valid_until:
                    valid_until = deadline
            else:
                failing.append(finding)
        allowed = not failing
        if allowed:
            reason = _OK
        elif all(f.unmeasurable for f in failing):
            reason = _CHECK_UNMEASURABLE
        else:
            reason = _CHECKS_FAILED
        return _DecisionTwin(  # type: ignore[no-any-return]
            allowed,
            t.name,
            reason,
            tuple(failing),
            tuple(in_grace),
            tuple(nudges),
            age,
            now,
            valid_until,
            "",
        )


def _error(tier: object, now: object, detail: str) -> Decision:
    return Decision(
        False,
        _tier_name(tier),
        Reason.CHECK_ERROR,
        evaluated_at=now if isinstance(now, datetime) else None,
        detail=detail,
    )
