"""A generated fleet history with known answers, for the report's tests, its benchmark and the demo.

Owns: SyntheticFleet, Expected, generate_fleet_history.
Must not import: aiohttp, gateway.app, gateway.report.build (the known answers are worked out here
from the script itself, by interval arithmetic, never by the report's own code).

The script, for ``devices`` devices over ``days`` UTC days from ``start`` (midnight UTC):

- device ``i`` is ``GH{i:04d}``, owned by ``user{i:03d}@example.com``; platform by ``i % 10``:
  0–5 macOS, 6–8 Linux, 9 Windows. It is evaluated once a day at 09:00 UTC plus ``i % 120`` minutes,
  against every check of deploy/policy.yaml; everything passes unless the script says otherwise;
- ``i % 10 == 3``: the firewall fails for ``1 + i % 5`` days from day ``(7 i) mod (days − 10)``, then is fixed;
- ``i % 50 == 7``: the disk is unencrypted from day 20 to the end (never fixed);
  ``i % 50 == 32``: unencrypted from day 20 for ``10 + i % 3`` days, then fixed;
- ``i % 4 == 0``: automatic updates off all along (a nudge: never non-compliant);
- ``i % 100 == 99``: stops reporting after day ``days − 11`` (stale at the end);
- each failure episode of a device with ``i % 3 != 0`` is denied (reason ``checks-failed``) on
  route ``wiki`` (tier medium) ``30 + i % 90`` minutes after its first failing evaluation;
- every firewall episode also counts 4 requests allowed in grace; each ``i % 60 == 13`` device
  uses break-glass on ``wiki`` an hour after its denial (3 requests) under a grant given then,
  reviewed when ``i % 120 == 13``; every device gets 10 allowed requests on ``public`` (low) at
  each evaluation hour on Mondays.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from breakglass import Grant, GrantStatus, Scope
from gateway.store.base import AccessRollup, AccessVerdict, HistoryEntry

CHECKS = (
    "disk_encryption", "firewall", "screen_lock", "screen_lock_delay", "os_supported", "os_current",
    "os_update_available", "auto_updates", "remote_login_off", "sip", "gatekeeper", "agent_current",
)
"""The checks of deploy/policy.yaml, every one recorded in each evaluation."""
PLATFORMS = ("darwin",) * 6 + ("linux",) * 3 + ("windows",)


@dataclass(frozen=True, slots=True)
class Episode:
    """One scripted failure: which check, first failing day, first passing day (None: never fixed)."""

    serial: str
    check: str
    first_day: int
    fixed_day: int | None
    denied_at: datetime | None


@dataclass(frozen=True, slots=True)
class Expected:
    """The report's known answers for a generated fleet, worked out from the script."""

    compliant_per_day: tuple[tuple[date, int, int], ...]
    """(day, compliant devices, counted devices)."""
    firewall_passing_per_day: tuple[tuple[date, int, int], ...]
    remediation_seconds: tuple[float, ...]
    """Sorted remediation times after a denial, in seconds."""
    median_remediation_s: float | None
    unresolved: int
    stale: frozenset[str]
    longest_serial: str
    longest: timedelta
    break_glass_rows: int
    reviewed_rows: int
    grace_rows: int


@dataclass(frozen=True, slots=True)
class SyntheticFleet:
    """A generated history, its ledger rows, grants and device platforms, with the answers the report must give."""

    start: datetime
    until: datetime
    entries: tuple[HistoryEntry, ...]
    rollups: tuple[AccessRollup, ...]
    grants: tuple[Grant, ...]
    platforms: dict[str, str]
    episodes: tuple[Episode, ...]
    expected: Expected


def _episodes(i: int, days: int) -> list[tuple[str, int, int | None]]:
    found: list[tuple[str, int, int | None]] = []
    if i % 10 == 3:
        first = (7 * i) % (days - 10)
        found.append(("firewall", first, first + 1 + i % 5))
    if i % 50 == 7:
        found.append(("disk_encryption", 20, None))
    if i % 50 == 32:
        found.append(("disk_encryption", 20, 20 + 10 + i % 3))
    return found


def generate_fleet_history(start: datetime, *, days: int = 90, devices: int = 500) -> SyntheticFleet:
    """The scripted fleet over [start, start + days); ``start`` is taken to its UTC midnight.

    Raises:
        ValueError: fewer than 31 days (the script needs room for its episodes) or no devices.
    """
    if days < 31 or devices < 1:
        raise ValueError(f"`{days}` days and `{devices}` devices: the script needs at least 31 days and 1 device")
    start = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    until = start + timedelta(days=days)
    entries: list[HistoryEntry] = []
    rollups: list[AccessRollup] = []
    grants: list[Grant] = []
    episodes: list[Episode] = []
    platforms: dict[str, str] = {}
    last_day = {i: days - 11 if i % 100 == 99 else days - 1 for i in range(devices)}

    def at(i: int, day: int) -> datetime:
        return start + timedelta(days=day, hours=9, minutes=i % 120)

    def rollup(when: datetime, route: str, tier: str, user: str, serial: str, verdict: AccessVerdict,
               reason: str, count: int) -> AccessRollup:
        return AccessRollup(when.replace(minute=0, second=0, microsecond=0), route, tier, user, serial, verdict,
                            reason, count, when, when)

    for i in range(devices):
        serial, owner = f"GH{i:04d}", f"user{i:03d}@example.com"
        platforms[serial] = PLATFORMS[i % 10]
        script = _episodes(i, days)
        for day in range(last_day[i] + 1):
            results = dict.fromkeys(CHECKS, True)
            if i % 4 == 0:
                results["auto_updates"] = False
            for check, first, fixed in script:
                if first <= day and (fixed is None or day < fixed):
                    results[check] = False
            entries.append(HistoryEntry(serial, (owner,), at(i, day), results))
            if day % 7 == 0:
                rollups.append(rollup(at(i, day), "public", "low", owner, serial, AccessVerdict.ALLOWED, "", 10))
        for check, first, fixed in script:
            denied = at(i, first) + timedelta(minutes=30 + i % 90) if i % 3 else None
            episodes.append(Episode(serial, check, first, fixed, denied))
            if denied is not None:
                rollups.append(rollup(denied, "wiki", "medium", owner, serial, AccessVerdict.DENIED, "checks-failed", 1))
            if check == "firewall":
                rollups.append(rollup(at(i, first) + timedelta(minutes=5), "wiki", "medium", owner, serial,
                                      AccessVerdict.GRACE, "", 4))
            if denied is not None and i % 60 == 13:
                used = denied + timedelta(hours=1)
                reviewed = i % 120 == 13
                grants.append(Grant(
                    id=f"g-synthetic{i:04d}", user=owner, user_email=owner, device_serial=serial,
                    scope=Scope.for_tier("medium"), reason="on call: production incident needs the wiki runbook",
                    duration=timedelta(hours=4), requested_at=used - timedelta(minutes=1), status=GrantStatus.ACTIVE,
                    starts_at=used - timedelta(minutes=1), expires_at=used + timedelta(hours=4) - timedelta(minutes=1),
                    first_used_at=used, first_route_id="wiki", reviewed=reviewed,
                    reviewed_by="rita@example.com" if reviewed else None,
                    reviewed_at=used + timedelta(days=1) if reviewed else None,
                ))
                rollups.append(rollup(used, "wiki", "medium", owner, serial, AccessVerdict.BREAK_GLASS, "checks-failed", 3))
    entries.sort(key=lambda e: e.recorded_at)
    rollups.sort(key=lambda r: r.hour)
    expected = _expected(start, days, devices, episodes, last_day, grants, until)
    return SyntheticFleet(start, until, tuple(entries), tuple(rollups), tuple(grants), platforms, tuple(episodes), expected)


def _expected(start: datetime, days: int, devices: int, episodes: list[Episode], last_day: dict[int, int],
              grants: list[Grant], until: datetime) -> Expected:
    def counted(day: int) -> int:
        # A device's last evaluation carries over one day (see gateway.report.build).
        return sum(1 for i in range(devices) if day <= last_day[i] + 1)

    def failing(day: int, check: str | None = None) -> int:
        serials = {e.serial for e in episodes
                   if (check is None or e.check == check) and e.first_day <= day and (e.fixed_day is None or day < e.fixed_day)}
        return len(serials)

    day_dates = [(start + timedelta(days=d)).date() for d in range(days)]
    compliant = tuple((day_dates[d], counted(d) - failing(d), counted(d)) for d in range(days))
    firewall = tuple((day_dates[d], counted(d) - failing(d, "firewall"), counted(d)) for d in range(days))

    def evaluated(serial: str, day: int) -> datetime:
        i = int(serial[2:])
        return start + timedelta(days=day, hours=9, minutes=i % 120)

    times = sorted((evaluated(e.serial, e.fixed_day) - e.denied_at).total_seconds()
                   for e in episodes if e.denied_at is not None and e.fixed_day is not None)
    open_denied = sum(1 for e in episodes if e.denied_at is not None and e.fixed_day is None)
    never_fixed = [e for e in episodes if e.fixed_day is None]
    longest = min(never_fixed, key=lambda e: (evaluated(e.serial, e.first_day), e.serial)) if never_fixed else None
    longest_serial = longest.serial if longest else ""
    longest_span = until - evaluated(longest.serial, longest.first_day) if longest else timedelta(0)
    return Expected(
        compliant_per_day=compliant,
        firewall_passing_per_day=firewall,
        remediation_seconds=tuple(times),
        median_remediation_s=statistics.median(times) if times else None,
        unresolved=open_denied,
        stale=frozenset(f"GH{i:04d}" for i in range(devices) if last_day[i] < days - 1 - 2),
        longest_serial=longest_serial,
        longest=longest_span,
        break_glass_rows=len(grants),
        reviewed_rows=sum(1 for g in grants if g.reviewed),
        grace_rows=sum(1 for e in episodes if e.check == "firewall"),
    )
