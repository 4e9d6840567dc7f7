"""The compliance report's numbers for a period, computed from the compliance history, the access ledger and the grants.

Owns: ComplianceReport and its parts, build_report (reads the stores), compute_report (pure), the
day rule and the remediation buckets.
Must not import: aiohttp, gateway.app, gateway.web.views (rendering is gateway.web.views.report's).

Definitions, as the report's footnotes state them:

- **Days** are UTC days. A device is *counted* on a day when it was evaluated that day, or when its
  last evaluation of the day before carries over (the history records a device at least daily, at
  a time that drifts, so one calendar day may hold no entry). The history is read from one day
  before ``since`` so the first day can carry over too.
- A device is **compliant** on a day when every ``fail`` check passed in *every* evaluation that
  day (the worst state of the day counts; a carried day uses the last state of the day before).
  ``nudge`` checks never make a device non-compliant; their per-check share is still shown.
  A check the policy no longer has counts as ``fail`` (it was in force when it was recorded).
- A **non-compliant streak** runs from the first evaluation with a failing ``fail`` check to the
  next evaluation where all pass (still open at the end of the period when there is none).
- **Remediation time** is from the first denial (access-ledger verdict ``denied``, reason
  ``checks-failed``) of a streak to the evaluation that ended it.
- A device is **stale** when it was not evaluated in the last ``stale_after`` of the period.
- **Access from a non-compliant device** is every ledger row whose verdict let such a device
  through: ``break-glass``, ``allowed-in-grace`` and ``monitor-would-deny``; break-glass rows are
  matched to the grant that covered them (user, device, scope, time).
"""

from __future__ import annotations

import asyncio
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from breakglass import Grant
from gateway.store.base import AccessRollup, AccessVerdict, HistoryEntry, HistoryStore, LedgerStore
from policy_engine import CompiledPolicySet, ControlRef, Severity

DAY = timedelta(days=1)
DEFAULT_STALE_AFTER = timedelta(days=3)
DENIAL_REASON = "checks-failed"
"""The decision reason whose denials start the remediation clock (a failing check, not a stale report)."""
REMEDIATION_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("under 1 h", timedelta(hours=1)),
    ("1–4 h", timedelta(hours=4)),
    ("4–24 h", timedelta(days=1)),
    ("1–3 days", timedelta(days=3)),
    ("3–7 days", timedelta(days=7)),
    ("7 days or more", None),
)
"""Upper bounds (exclusive) of the remediation-time distribution; the last is open."""
NON_COMPLIANT_VERDICTS = (AccessVerdict.BREAK_GLASS, AccessVerdict.GRACE, AccessVerdict.MONITOR)


def share_of(passing: int, counted: int) -> float | None:
    """``passing / counted``, or None when nothing was counted (a day or a control with no device is no 0 %)."""
    return passing / counted if counted else None


@dataclass(frozen=True, slots=True)
class DayShare:
    """How many devices counted on one day passed (were compliant, or passed one check)."""

    day: date
    passing: int
    counted: int

    @property
    def share(self) -> float | None:
        """passing / counted, or None when no device was counted."""
        return share_of(self.passing, self.counted)


@dataclass(frozen=True, slots=True)
class Series:
    """A named line of daily shares over the period (the whole fleet, one check, one platform)."""

    name: str
    days: tuple[DayShare, ...]

    @property
    def passing(self) -> int:
        """Passing device-days over the period."""
        return sum(d.passing for d in self.days)

    @property
    def counted(self) -> int:
        """Counted device-days over the period."""
        return sum(d.counted for d in self.days)


@dataclass(frozen=True, slots=True)
class Streak:
    """One device's longest stretch of non-compliance in the period."""

    serial: str
    owners: tuple[str, ...]
    platform: str
    started: datetime
    ended: datetime | None
    """When an evaluation found it compliant again; None when still non-compliant at the end."""
    duration: timedelta
    checks: tuple[str, ...]
    """The ``fail`` checks that failed during the streak."""


@dataclass(frozen=True, slots=True)
class RemediationTime:
    """From a device's first denial in a streak to the evaluation that found it fixed."""

    serial: str
    denied_at: datetime
    fixed_at: datetime

    @property
    def duration(self) -> timedelta:
        return self.fixed_at - self.denied_at


@dataclass(frozen=True, slots=True)
class RemediationStats:
    """The distribution of remediation times after a denial, and denials not yet remediated."""

    times: tuple[RemediationTime, ...]
    unresolved: int
    """Streaks with a denial that were still open at the end of the period."""

    @property
    def median(self) -> timedelta | None:
        """The median remediation time (the mean of the middle two for an even count); None without any."""
        if not self.times:
            return None
        return timedelta(seconds=statistics.median(t.duration.total_seconds() for t in self.times))

    @property
    def buckets(self) -> tuple[tuple[str, int], ...]:
        """How many remediation times fall in each of ``REMEDIATION_BUCKETS``."""
        counts = dict.fromkeys((label for label, _ in REMEDIATION_BUCKETS), 0)
        for t in self.times:
            for label, bound in REMEDIATION_BUCKETS:
                if bound is None or t.duration < bound:
                    counts[label] += 1
                    break
        return tuple(counts.items())


@dataclass(frozen=True, slots=True)
class TierAccess:
    """Requests to one tier's services in the period, per ledger verdict."""

    tier: str
    counts: tuple[tuple[AccessVerdict, int], ...]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def count(self, verdict: AccessVerdict) -> int:
        """Requests with this verdict."""
        return dict(self.counts).get(verdict, 0)


@dataclass(frozen=True, slots=True)
class NonCompliantAccess:
    """One ledger row of requests from a non-compliant device that were let through, with the grant that covered them."""

    rollup: AccessRollup
    grant_id: str = ""
    grant_reason: str = ""
    review: str = ""
    """``reviewed``, ``unreviewed``, ``no grant found`` (break-glass); empty for grace and monitor rows."""
    reviewed_by: str = ""


@dataclass(frozen=True, slots=True)
class BreakGlassUse:
    """One user's break-glass in the period: grants asked for, given, used, still unreviewed, and requests served."""

    user: str
    requested: int
    issued: int
    used: int
    unreviewed: int
    requests: int
    """Requests the ledger counted with the verdict ``break-glass``."""


@dataclass(frozen=True, slots=True)
class StaleDevice:
    """A device not evaluated in the last ``stale_after`` of the period."""

    serial: str
    owners: tuple[str, ...]
    platform: str
    last_seen: datetime | None
    """Its last evaluation before the end of the period; None when there was none in it."""


@dataclass(frozen=True, slots=True)
class ControlResult:
    """One compliance control: the checks evidencing it and how the fleet did on them over the period."""

    control: ControlRef
    checks: tuple[str, ...]
    passing: int
    """Device-days on which every one of ``checks`` passed."""
    counted: int
    devices_failing: int
    """Devices that failed one of ``checks`` on at least one day."""

    @property
    def share(self) -> float | None:
        """passing / counted, or None when no device-day was counted."""
        return share_of(self.passing, self.counted)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the report knows about a device besides its history: platform and last report."""

    platform: str = "unknown"
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    """Everything the compliance report shows for [since, until); rendered by ``render_report``."""

    since: datetime
    until: datetime
    generated_at: datetime
    policy_version: str
    stale_after: timedelta
    devices: int
    """Devices evaluated at least once in the period."""
    fleet: Series
    per_check: tuple[Series, ...]
    per_platform: tuple[Series, ...]
    longest: tuple[Streak, ...]
    remediation: RemediationStats
    access: tuple[TierAccess, ...]
    non_compliant_access: tuple[NonCompliantAccess, ...]
    break_glass: tuple[BreakGlassUse, ...]
    stale: tuple[StaleDevice, ...]
    controls: tuple[ControlResult, ...]
    ledger_available: bool = True
    """False when the store keeps no access ledger: the access sections are then empty, not zero."""
    nudge_checks: frozenset[str] = field(default_factory=frozenset)

    @property
    def unreviewed_grants(self) -> int:
        """Break-glass grants given in the period and not yet reviewed."""
        return sum(u.unreviewed for u in self.break_glass)


def period_days(since: datetime, until: datetime) -> tuple[date, ...]:
    """The UTC days the period [since, until) touches."""
    first = since.astimezone(UTC).date()
    last = (until.astimezone(UTC) - timedelta(microseconds=1)).date()
    return tuple(first + timedelta(days=i) for i in range((last - first).days + 1))


async def build_report(
    *,
    history: HistoryStore,
    ledger: LedgerStore | None,
    policies: CompiledPolicySet,
    grants: Sequence[Grant],
    devices: Mapping[str, DeviceInfo],
    since: datetime,
    until: datetime,
    now: datetime,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> ComplianceReport:
    """Read the period's history (from a day before, for carry-over) and ledger, then compute the report off the event loop.

    ``ledger`` None means the store keeps no access ledger. ``devices`` gives platform and last report
    per serial (from the latest snapshots); devices there but not evaluated in the period are stale.

    Raises:
        ValueError: ``until`` is not after ``since``, or a time has no timezone.
        StoreError: the history or the ledger could not be read.
    """
    _check_period(since, until)
    entries = [e async for e in history.iter_history(since=since - DAY, until=until)]
    rollups = [] if ledger is None else [r async for r in ledger.iter_access(since=_hour(since), until=until)]
    return await asyncio.to_thread(
        compute_report, entries, rollups, policies=policies, grants=grants, devices=devices, since=since,
        until=until, now=now, stale_after=stale_after, ledger_available=ledger is not None,
    )


def _check_period(since: datetime, until: datetime) -> None:
    for name, value in (("since", since), ("until", until)):
        if value.tzinfo is None:
            raise ValueError(f"{name} `{value.isoformat()}` has no timezone; give a UTC time such as `2026-01-01T00:00:00Z`")
    if until <= since:
        raise ValueError(f"until `{until.isoformat()}` is not after since `{since.isoformat()}`; give a later end")


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def compute_report(
    entries: Iterable[HistoryEntry],
    rollups: Iterable[AccessRollup],
    *,
    policies: CompiledPolicySet,
    grants: Sequence[Grant],
    devices: Mapping[str, DeviceInfo],
    since: datetime,
    until: datetime,
    now: datetime,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    ledger_available: bool = True,
    longest: int = 10,
) -> ComplianceReport:
    """The report from plain values (pure; ``build_report`` feeds it from the stores).

    Raises:
        ValueError: ``until`` is not after ``since``, or a time has no timezone.
    """
    _check_period(since, until)
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    days = period_days(since, until)
    nudges = frozenset(n for n, c in policies.checks.items() if c.severity is Severity.NUDGE)
    by_device: dict[str, list[HistoryEntry]] = defaultdict(list)
    for entry in entries:
        if since - DAY <= entry.recorded_at < until:
            by_device[entry.serial].append(entry)
    for listed in by_device.values():
        listed.sort(key=lambda e: e.recorded_at)
    rows = list(rollups)
    denials: dict[str, list[datetime]] = defaultdict(list)
    for r in rows:
        if r.verdict is AccessVerdict.DENIED and r.reason == DENIAL_REASON and r.device:
            denials[r.device].append(r.first_seen)

    check_names = list(policies.checks)
    fleet_days: dict[date, list[int]] = {d: [0, 0] for d in days}
    check_days: dict[str, dict[date, list[int]]] = {}
    platform_days: dict[str, dict[date, list[int]]] = {}
    control_refs = _control_index(policies)
    control_tally: dict[tuple[str, str], list[int]] = {k: [0, 0] for k in control_refs}
    control_failing: dict[tuple[str, str], set[str]] = {k: set() for k in control_refs}
    streaks: list[Streak] = []
    remediations: list[RemediationTime] = []
    unresolved = 0
    stale: list[StaleDevice] = []
    evaluated_in_period = 0
    stale_line = until - stale_after
    # INVARIANT: a device's state repeats day after day; judge each distinct state once.
    outcomes: dict[tuple[tuple[str, bool], ...], tuple[bool, tuple[tuple[tuple[str, str], bool], ...]]] = {}

    for serial, listed in by_device.items():
        info = devices.get(serial, DeviceInfo())
        owners = listed[-1].owners
        in_period = [e for e in listed if e.recorded_at >= since]
        if in_period:
            evaluated_in_period += 1
        last = in_period[-1].recorded_at if in_period else None
        if last is None or last < stale_line:
            stale.append(StaleDevice(serial, owners, info.platform, last))
        worst: dict[date, dict[str, bool]] = {}
        final: dict[date, Mapping[str, bool]] = {}
        for e in listed:
            day = e.recorded_at.date()
            merged = worst.setdefault(day, {})
            for name, ok in e.results.items():
                merged[name] = merged.get(name, True) and bool(ok)
            final[day] = e.results
        per_platform = platform_days.get(info.platform)
        if per_platform is None:
            per_platform = platform_days[info.platform] = {d: [0, 0] for d in days}
        for day in days:
            state: Mapping[str, bool] | None = worst.get(day)
            if state is None:
                state = final.get(day - DAY)
            if state is None:
                continue
            key = tuple(state.items())
            verdict = outcomes.get(key)
            if verdict is None:
                verdict = outcomes[key] = _judge(state, nudges, control_refs)
            compliant, control_outcomes = verdict
            for tally in (fleet_days[day], per_platform[day]):
                tally[0] += compliant
                tally[1] += 1
            for name, ok in key:
                per_check = check_days.get(name)
                if per_check is None:
                    per_check = check_days[name] = {d: [0, 0] for d in days}
                tally = per_check[day]
                tally[0] += bool(ok)
                tally[1] += 1
            for control, passed in control_outcomes:
                control_tally[control][1] += 1
                if passed:
                    control_tally[control][0] += 1
                else:
                    control_failing[control].add(serial)
        device_streaks = _streaks(listed, nudges, since=since, until=until)
        if device_streaks:
            best = max(device_streaks, key=lambda s: (s[1] or until) - s[0])
            started, ended, failed = best
            streaks.append(Streak(serial, owners, info.platform, started, ended, (ended or until) - started, failed))
        for started, ended, _failed in device_streaks:
            hits = [t for t in denials.get(serial, ()) if started <= t < (ended or until)]
            if not hits:
                continue
            if ended is None:
                unresolved += 1
            else:
                remediations.append(RemediationTime(serial, min(hits), ended))

    for serial, info in devices.items():
        if serial not in by_device:
            last = info.last_seen if info.last_seen is not None and info.last_seen < until else None
            stale.append(StaleDevice(serial, (), info.platform, last))

    order = check_names + sorted(set(check_days) - set(check_names))
    streaks.sort(key=lambda s: (-s.duration, s.serial))
    stale.sort(key=lambda s: (s.last_seen is not None, s.last_seen or since, s.serial))
    return ComplianceReport(
        since=since,
        until=until,
        generated_at=now,
        policy_version=policies.version,
        stale_after=stale_after,
        devices=evaluated_in_period,
        fleet=_series("All devices", fleet_days),
        per_check=tuple(_series(n, check_days[n]) for n in order if n in check_days),
        per_platform=tuple(_series(p, platform_days[p]) for p in sorted(platform_days)),
        longest=tuple(streaks[:longest]),
        remediation=RemediationStats(tuple(sorted(remediations, key=lambda r: (r.fixed_at, r.serial))), unresolved),
        access=_tier_access(rows, policies.tier_names),
        non_compliant_access=_non_compliant_access(rows, grants, policies.tier_names),
        break_glass=_break_glass_use(rows, grants, since=since, until=until),
        stale=tuple(stale),
        controls=tuple(
            ControlResult(_ref_of(policies, key), names, control_tally[key][0], control_tally[key][1],
                          len(control_failing[key]))
            for key, names in control_refs.items()
        ),
        ledger_available=ledger_available,
        nudge_checks=nudges,
    )


def _judge(state: Mapping[str, bool], nudges: frozenset[str], control_refs: Mapping[tuple[str, str], tuple[str, ...]],
           ) -> tuple[bool, tuple[tuple[tuple[str, str], bool], ...]]:
    """Whether a day's state is compliant, and per control naming a recorded check, whether all its checks passed."""
    compliant = all(ok for name, ok in state.items() if name not in nudges)
    controls = []
    for key, names in control_refs.items():
        present = [state[n] for n in names if n in state]
        if present:
            controls.append((key, all(present)))
    return compliant, tuple(controls)


def _series(name: str, tallies: Mapping[date, list[int]]) -> Series:
    return Series(name, tuple(DayShare(d, p, c) for d, (p, c) in sorted(tallies.items())))


def _control_index(policies: CompiledPolicySet) -> dict[tuple[str, str], tuple[str, ...]]:
    found: dict[tuple[str, str], list[str]] = {}
    for check, refs in policies.controls.items():
        for ref in refs:
            found.setdefault((ref.framework, ref.id), []).append(check)
    return {key: tuple(found[key]) for key in sorted(found)}


def _ref_of(policies: CompiledPolicySet, key: tuple[str, str]) -> ControlRef:
    refs = [r for rs in policies.controls.values() for r in rs if (r.framework, r.id) == key]
    titled = [r for r in refs if r.title]
    return titled[0] if titled else refs[0]


def _streaks(
    listed: Sequence[HistoryEntry], nudges: frozenset[str], *, since: datetime, until: datetime,
) -> list[tuple[datetime, datetime | None, tuple[str, ...]]]:
    """Each stretch of non-compliance overlapping the period: (start clamped to since, end or None, failed checks)."""
    out: list[tuple[datetime, datetime | None, tuple[str, ...]]] = []
    start: datetime | None = None
    failed: dict[str, None] = {}
    for e in listed:
        bad = [n for n, ok in e.results.items() if not ok and n not in nudges]
        if bad and start is None:
            start = e.recorded_at
        if bad:
            failed.update(dict.fromkeys(bad))
        elif start is not None:
            if e.recorded_at > since:
                out.append((max(start, since), e.recorded_at, tuple(failed)))
            start, failed = None, {}
    if start is not None:
        out.append((max(start, since), None, tuple(failed)))
    return out


def _tier_access(rows: Sequence[AccessRollup], tiers: Sequence[str]) -> tuple[TierAccess, ...]:
    counts: dict[str, dict[AccessVerdict, int]] = {t: {} for t in tiers}
    for r in rows:
        per = counts.setdefault(r.tier, {})
        per[r.verdict] = per.get(r.verdict, 0) + r.count
    rank = {t: i for i, t in enumerate(tiers)}
    ordered = sorted(counts, key=lambda t: (-rank.get(t, -1), t))
    return tuple(TierAccess(t, tuple((v, counts[t].get(v, 0)) for v in AccessVerdict)) for t in ordered)


def _grant_for(r: AccessRollup, grants: Sequence[Grant]) -> Grant | None:
    user = r.user.lower()
    for g in grants:
        if g.device_serial != r.device or user not in (g.user.lower(), g.user_email.lower()):
            continue
        if g.starts_at is None or not g.scope.covers(r.route, r.tier):
            continue
        end = g.ended_at or g.expires_at
        # A rollup covers an hour: the grant must have been in force at the first request counted in it.
        if g.starts_at <= r.first_seen and (end is None or r.first_seen < end):
            return g
    return None


def _non_compliant_access(rows: Sequence[AccessRollup], grants: Sequence[Grant],
                          tiers: Sequence[str]) -> tuple[NonCompliantAccess, ...]:
    by_device: dict[str, list[Grant]] = defaultdict(list)
    for g in grants:
        by_device[g.device_serial].append(g)
    rank = {t: i for i, t in enumerate(tiers)}
    out = []
    for r in rows:
        if r.verdict not in NON_COMPLIANT_VERDICTS:
            continue
        if r.verdict is not AccessVerdict.BREAK_GLASS:
            out.append(NonCompliantAccess(r))
            continue
        grant = _grant_for(r, by_device.get(r.device, ()))
        if grant is None:
            out.append(NonCompliantAccess(r, review="no grant found"))
        else:
            out.append(NonCompliantAccess(r, grant.id, grant.reason, "reviewed" if grant.reviewed else "unreviewed",
                                          grant.reviewed_by or ""))
    out.sort(key=lambda a: (-rank.get(a.rollup.tier, -1), a.rollup.verdict is not AccessVerdict.BREAK_GLASS,
                            a.rollup.hour, a.rollup.route, a.rollup.user, a.rollup.device))
    return tuple(out)


def _break_glass_use(rows: Sequence[AccessRollup], grants: Sequence[Grant], *, since: datetime,
                     until: datetime) -> tuple[BreakGlassUse, ...]:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for g in grants:
        if not since <= g.requested_at < until:
            continue
        tally = per[(g.user_email or g.user).lower()]
        tally[0] += 1
        if g.starts_at is not None:
            tally[1] += 1
            tally[3] += not g.reviewed
        tally[2] += g.first_used_at is not None
    for r in rows:
        if r.verdict is AccessVerdict.BREAK_GLASS:
            per[r.user.lower()][4] += r.count
    ordered = sorted(per.items(), key=lambda kv: (-kv[1][3], -kv[1][4], kv[0]))
    return tuple(BreakGlassUse(user, *tally) for user, tally in ordered)
