"""The compliance report's numbers: exact against a generated 90-day, 500-device history, and the day rules on small cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from breakglass import Grant, GrantStatus, Scope
from gateway.report import DeviceInfo, build_report, compute_report
from gateway.report.build import ComplianceReport
from gateway.report.synthetic import SyntheticFleet, generate_fleet_history
from gateway.store.base import AccessRollup, AccessVerdict, HistoryEntry
from policy_engine import CompiledPolicySet, compile_policy_set, parse_policy_document
from gateway.store.sqlite import SqliteStore
from tests.policy_engine.factories import DEPLOY_POLICY

START = datetime(2026, 1, 5, tzinfo=UTC)
ALL_PASS = {"disk_encryption": True, "firewall": True, "auto_updates": True}


@pytest.fixture(scope="module")
def policies() -> CompiledPolicySet:
    return compile_policy_set(parse_policy_document(yaml.safe_load(DEPLOY_POLICY.read_text()), source="policy.yaml"))


@pytest.fixture(scope="module")
def fleet() -> SyntheticFleet:
    return generate_fleet_history(START, days=90, devices=500)


@pytest.fixture(scope="module")
def report(fleet: SyntheticFleet, policies: CompiledPolicySet) -> ComplianceReport:
    return compute_report(fleet.entries, fleet.rollups, policies=policies, grants=fleet.grants,
                          devices={s: DeviceInfo(p) for s, p in fleet.platforms.items()},
                          since=fleet.start, until=fleet.until, now=fleet.until)


class TestGeneratedFleet:
    def test_compliant_share_per_day_matches_the_script(self, fleet: SyntheticFleet, report: ComplianceReport) -> None:
        """Every day's compliant and counted devices equal the scripted answer."""
        assert list(fleet.expected.compliant_per_day) == [(d.day, d.passing, d.counted) for d in report.fleet.days]

    def test_per_check_share_matches_the_script(self, fleet: SyntheticFleet, report: ComplianceReport) -> None:
        """The firewall's passing devices per day equal the scripted answer; the nudge fails a quarter of the fleet but no day."""
        firewall = next(s for s in report.per_check if s.name == "firewall")
        updates = next(s for s in report.per_check if s.name == "auto_updates")

        assert list(fleet.expected.firewall_passing_per_day) == [(d.day, d.passing, d.counted) for d in firewall.days]
        assert 375 == updates.days[0].passing
        assert "auto_updates" in report.nudge_checks

    def test_per_platform_counts_add_up_to_the_fleet(self, report: ComplianceReport) -> None:
        """macOS, Linux and Windows series split every day's fleet numbers exactly (300/150/50 devices)."""
        names = [s.name for s in report.per_platform]
        first = {s.name: s.days[0].counted for s in report.per_platform}

        assert ["darwin", "linux", "windows"] == names
        assert {"darwin": 300, "linux": 150, "windows": 50} == first
        for i, day in enumerate(report.fleet.days):
            assert day.passing == sum(s.days[i].passing for s in report.per_platform)

    def test_remediation_times_and_median_match_the_script(self, fleet: SyntheticFleet, report: ComplianceReport) -> None:
        """Every remediation after a denial, its median and the still-open denials are exactly the scripted ones."""
        assert list(fleet.expected.remediation_seconds) == sorted(t.duration.total_seconds() for t in report.remediation.times)
        assert fleet.expected.median_remediation_s == report.remediation.median.total_seconds()  # type: ignore[union-attr]
        assert fleet.expected.unresolved == report.remediation.unresolved
        assert len(report.remediation.times) == sum(n for _, n in report.remediation.buckets)

    def test_longest_non_compliance_is_the_earliest_unfixed_disk(self, fleet: SyntheticFleet, report: ComplianceReport) -> None:
        """The longest streak is the never-fixed disk that failed first, open until the period's end."""
        top = report.longest[0]

        assert (fleet.expected.longest_serial, fleet.expected.longest, None) == (top.serial, top.duration, top.ended)
        assert ("disk_encryption",) == top.checks

    def test_stale_devices_are_those_that_stopped_reporting(self, fleet: SyntheticFleet, report: ComplianceReport) -> None:
        """Exactly the devices that stopped reporting ten days before the end are stale."""
        assert fleet.expected.stale == {s.serial for s in report.stale}

    def test_access_from_non_compliant_devices_names_grants_and_reviews(self, fleet: SyntheticFleet,
                                                                         report: ComplianceReport) -> None:
        """Each break-glass row is matched to its grant with reason and review status; grace rows are listed too."""
        rows = report.non_compliant_access
        glass = [a for a in rows if a.rollup.verdict is AccessVerdict.BREAK_GLASS]
        grace = [a for a in rows if a.rollup.verdict is AccessVerdict.GRACE]

        assert fleet.expected.break_glass_rows == len(glass)
        assert fleet.expected.reviewed_rows == sum(1 for a in glass if a.review == "reviewed")
        assert all(a.grant_id == f"g-synthetic{a.rollup.device[2:]}" for a in glass)
        assert fleet.expected.grace_rows == len(grace)

    def test_break_glass_per_user_counts_unreviewed(self, fleet: SyntheticFleet, report: ComplianceReport) -> None:
        """Unreviewed grants add up to the grants given minus those reviewed."""
        assert len(fleet.grants) - fleet.expected.reviewed_rows == report.unreviewed_grants
        assert 3 * len(fleet.grants) == sum(u.requests for u in report.break_glass)

    def test_access_per_tier_sums_the_ledger(self, fleet: SyntheticFleet, report: ComplianceReport) -> None:
        """Requests per tier and verdict add up to every ledger count."""
        assert sum(r.count for r in fleet.rollups) == sum(a.total for a in report.access)
        assert ["high", "medium", "low"] == [a.tier for a in report.access]

    def test_controls_group_checks(self, report: ComplianceReport) -> None:
        """HIPAA encryption is evidenced by the disk check and failed by the ten unencrypted disks."""
        control = next(c for c in report.controls if (c.control.framework, c.control.id) == ("HIPAA", "164.312(a)(2)(iv)"))

        assert ("disk_encryption",) == control.checks
        assert 20 == control.devices_failing


class TestDayRules:
    def test_worst_evaluation_of_the_day_counts(self, policies: CompiledPolicySet) -> None:
        """A device failing in the morning and fixed in the evening is non-compliant that day, compliant the next."""
        entries = [
            HistoryEntry("D1", ("a@example.com",), START + timedelta(hours=8), {**ALL_PASS, "firewall": False}),
            HistoryEntry("D1", ("a@example.com",), START + timedelta(hours=20), ALL_PASS),
        ]

        report = compute_report(entries, (), policies=policies, grants=(), devices={}, since=START,
                                until=START + timedelta(days=2), now=START + timedelta(days=2))

        assert [(0, 1), (1, 1)] == [(d.passing, d.counted) for d in report.fleet.days]
        assert (timedelta(hours=12), START + timedelta(hours=20)) == (report.longest[0].duration, report.longest[0].ended)

    def test_last_state_carries_over_one_day_only(self, policies: CompiledPolicySet) -> None:
        """The day before's last state counts on a day without evaluation; two days later the device is not counted."""
        entries = [HistoryEntry("D1", (), START - timedelta(hours=1), {**ALL_PASS, "disk_encryption": False})]

        report = compute_report(entries, (), policies=policies, grants=(), devices={}, since=START,
                                until=START + timedelta(days=2), now=START + timedelta(days=2))

        assert [(0, 1), (0, 0)] == [(d.passing, d.counted) for d in report.fleet.days]

    def test_break_glass_without_a_grant_is_flagged(self, policies: CompiledPolicySet) -> None:
        """A break-glass ledger row no grant covers is listed as `no grant found`; an expired grant does not cover it."""
        at = START + timedelta(hours=10)
        row = AccessRollup(at.replace(minute=0), "admin", "high", "a@example.com", "D1", AccessVerdict.BREAK_GLASS,
                           "checks-failed", 2, at, at)
        grant = Grant(id="g-1", user="a", user_email="a@example.com", device_serial="D1", scope=Scope.for_tier("high"),
                      reason="incident", duration=timedelta(hours=1), requested_at=at - timedelta(hours=3),
                      status=GrantStatus.EXPIRED, starts_at=at - timedelta(hours=3), expires_at=at - timedelta(hours=2))

        report = compute_report((), (row,), policies=policies, grants=(grant,), devices={}, since=START,
                                until=START + timedelta(days=1), now=START + timedelta(days=1))

        assert [("no grant found", "")] == [(a.review, a.grant_id) for a in report.non_compliant_access]

    def test_a_device_known_but_never_evaluated_is_stale(self, policies: CompiledPolicySet) -> None:
        """A device with a snapshot but no evaluation in the period is listed stale with no last evaluation."""
        report = compute_report((), (), policies=policies, grants=(), devices={"OLD1": DeviceInfo("windows")},
                                since=START, until=START + timedelta(days=1), now=START + timedelta(days=1))

        assert [("OLD1", None)] == [(s.serial, s.last_seen) for s in report.stale]

    def test_a_period_that_ends_before_it_starts_is_refused(self, policies: CompiledPolicySet) -> None:
        """until before since is a ValueError that names both."""
        with pytest.raises(ValueError, match="is not after since"):
            compute_report((), (), policies=policies, grants=(), devices={}, since=START, until=START, now=START)


async def test_build_report_reads_the_stores(policies: CompiledPolicySet, tmp_path: Path) -> None:
    """Reading the history and the ledger back from a real SQLite store gives the same report as the plain values."""
    small = generate_fleet_history(START, days=31, devices=12)
    store = await SqliteStore.open(tmp_path / "g.db")
    try:
        for entry in small.entries:
            await store.record_compliance(entry)
        await store.add_access_rollups(small.rollups)
        devices = {s: DeviceInfo(p) for s, p in small.platforms.items()}

        built = await build_report(history=store, ledger=store, policies=policies, grants=small.grants, devices=devices,
                                   since=small.start, until=small.until, now=small.until)
    finally:
        await store.close()

    assert compute_report(small.entries, small.rollups, policies=policies, grants=small.grants, devices=devices,
                          since=small.start, until=small.until, now=small.until) == built
