"""Fleet simulation and per-device explanation."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine import DeviceSnapshot, Outcome, Version, explain, outcome_of, simulate

from tests.policy_engine.factories import DEPLOY_POLICY, NOW, deploy_policies, load_yaml, make_snapshot, policies_from
from tests.policy_engine.strategies import RELAXED, snapshots

CURRENT = deploy_policies()
_raw = DEPLOY_POLICY.read_text().replace('darwin: "14.4"', 'darwin: "15.0"').replace("max_snapshot_age: 15m", "max_snapshot_age: 2h")
CANDIDATE = policies_from(_raw)


class TestSimulate:
    @settings(RELAXED, max_examples=50)
    @given(st.lists(snapshots(), max_size=25, unique_by=lambda s: s.serial))
    def test_counts_match_per_device_decisions(self, fleet: list[DeviceSnapshot]) -> None:
        """Per tier, the counts equal the outcomes of evaluating each device on its own."""
        expected = {
            tier: Counter(outcome_of(CANDIDATE.evaluate(s, tier, now=NOW)) for s in fleet) for tier in CANDIDATE.tier_names
        }

        report = simulate(CANDIDATE, CURRENT, fleet, now=NOW)

        assert len(fleet) == report.devices
        for t in report.tiers:
            assert (expected[t.tier][Outcome.ALLOWED], expected[t.tier][Outcome.NUDGED],
                    expected[t.tier][Outcome.IN_GRACE], expected[t.tier][Outcome.DENIED]) == (
                t.allowed, t.nudged, t.in_grace, t.denied)

    @settings(RELAXED, max_examples=50)
    @given(st.lists(snapshots(), max_size=25, unique_by=lambda s: s.serial))
    def test_diff_matches_per_device_decisions(self, fleet: list[DeviceSnapshot]) -> None:
        """Lost and gained access list exactly the devices whose verdict flips."""
        expected_lost = {
            t: sorted(s.serial for s in fleet
                      if CURRENT.evaluate(s, t, now=NOW).allowed and not CANDIDATE.evaluate(s, t, now=NOW).allowed)
            for t in CANDIDATE.tier_names
        }

        report = simulate(CANDIDATE, CURRENT, fleet, now=NOW)

        assert expected_lost == {t.tier: [d.serial for d in t.lost_access] for t in report.tiers}

    def test_report_names_owners_checks_and_diff(self) -> None:
        """A stricter macOS floor takes medium away from Sonoma users; a longer max age gives high back."""
        sonoma = make_snapshot(serial="A", owners=("alice@example.com",), os_version=Version.parse("14.6"))
        stale = make_snapshot(serial="B", owners=("bob@example.com",), age=timedelta(minutes=30))
        fleet = [sonoma, stale]

        report = simulate(CANDIDATE, CURRENT, fleet, now=NOW, failing_since_by_serial={"A": {"os_current": NOW - timedelta(days=30)}})

        medium = report.tier("medium")
        high = report.tier("high")
        assert medium is not None and high is not None
        assert (["A"], [], ("alice@example.com",)) == (
            [d.serial for d in medium.lost_access], [d.serial for d in medium.gained_access], medium.owners_in(Outcome.DENIED))
        assert (("os_current", 1),) == medium.top_failing_checks
        assert ["B"] == [d.serial for d in high.gained_access]

    def test_report_prints_and_dumps(self) -> None:
        """The report renders as text and as JSON-serialisable data."""
        history = {"C02XK1JHJG5J": {"os_current": NOW - timedelta(days=8)}}
        report = simulate(CANDIDATE, CURRENT, [make_snapshot(os_version=Version.parse("14.6"))], now=NOW,
                          failing_since_by_serial=history)

        text = report.to_text()
        data = json.loads(json.dumps(report.to_dict()))

        assert "medium" in text and "loses access (1)" in text
        assert ["low", "medium", "high"] == [t["tier"] for t in data["tiers"]]

    def test_new_and_removed_tiers_are_flagged(self) -> None:
        """A tier only the candidate has is new; one only the current has is removed."""
        raw = load_yaml(DEPLOY_POLICY.read_text())
        raw["tiers"]["critical"] = raw["tiers"].pop("high")
        candidate = policies_from(json.dumps(raw))

        report = simulate(candidate, CURRENT, [make_snapshot()], now=NOW)

        assert (("high",), True) == (report.removed_tiers, report.tier("critical").new_tier)  # type: ignore[union-attr]


class TestExplain:
    def test_explain_gives_every_tier(self) -> None:
        """One decision per tier, least sensitive first, with a readable text form."""
        snapshot = make_snapshot(sip_enabled=False)

        explanation = explain(snapshot, CURRENT, now=NOW)

        assert [("low", True), ("medium", True), ("high", False)] == [(d.tier, d.allowed) for d in explanation.decisions]
        assert "fails: sip: off, requires on" in explanation.to_text()
        assert explanation.to_dict()["serial"] == snapshot.serial

    def test_explain_unknown_device(self) -> None:
        """Without a snapshot every tier says device-unknown."""
        explanation = explain(None, CURRENT, now=NOW, serial="ZZZ")

        assert ["device-unknown"] * 3 == [d.reason.value for d in explanation.decisions]
        assert "ZZZ" == explanation.serial
