"""The shipped osquery pack, the example policy and the fix texts agree, per platform.

Recorded result rows (tests/fixtures/osquery/pack-results/<platform>/, shaped as osqueryd logs
the shipped pack's snapshot queries, see the README there) go through the same mapping the
logger endpoint uses (normalize_result, apply_results, assemble_snapshot) into the real policy
evaluation of deploy/policy.yaml. A pack query or policy check without fixture rows fails here.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from gateway.ingest import osquery
from gateway.store.base import Enrollment, HostDetails
from policy_engine import Decision, DeviceSnapshot, OsFamily, compile_policy_set, parse_policy_document
from policy_engine.document import IfUnmeasurable, Severity

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "osquery" / "pack-results"
POLICY_DOC = parse_policy_document(yaml.safe_load((ROOT / "deploy" / "policy.yaml").read_text()), source="policy.yaml")
POLICIES = compile_policy_set(POLICY_DOC)
PACK = osquery.load_pack(osquery.SHIPPED_PACK)
PLATFORMS = [OsFamily.DARWIN, OsFamily.LINUX, OsFamily.WINDOWS]
LONG_AFTER = timedelta(days=30)
"""Every check is taken to have been failing this long: past every grace period."""


def _body(platform: OsFamily) -> dict[str, object]:
    return orjson.loads((FIXTURES / platform.value / "healthy.json").read_bytes())  # type: ignore[no-any-return]


def _variants(platform: OsFamily) -> dict[str, dict[str, object]]:
    return orjson.loads((FIXTURES / platform.value / "variants.json").read_bytes())  # type: ignore[no-any-return]


def _snapshot(platform: OsFamily, replaced: dict[str, object] | None = None) -> DeviceSnapshot:
    """The snapshot the logger endpoint would store for the healthy rows with some queries' rows replaced."""
    items = []
    for raw in _body(platform)["data"]:  # type: ignore[union-attr]
        if replaced and raw["name"] in replaced:
            raw = {**raw, "snapshot": replaced[raw["name"]]}
        items.append(raw)
    first = items[0]
    received = datetime.fromtimestamp(first["unixTime"], UTC)
    normalized = [osquery.normalize_result(i, now=received, max_future_skew=timedelta(minutes=5)) for i in items]
    enrollment = Enrollment("hash", normalized[0].serial, first["hostIdentifier"], received, HostDetails())
    snapshot = osquery.assemble_snapshot(enrollment, osquery.apply_results({}, normalized), received_at=received)
    assert snapshot is not None
    return snapshot


def _decide(snapshot: DeviceSnapshot, tier: str) -> Decision:
    now = snapshot.received_at + timedelta(minutes=1)
    since = {name: now - LONG_AFTER for name in POLICIES.checks}
    return POLICIES.evaluate(snapshot, tier, now=now, failing_since=since)


def _applies(check: str, platform: OsFamily) -> bool:
    spec = next(c for c in POLICY_DOC.checks if c.name == check)
    return not spec.platforms or platform in spec.platforms


def _findings(decision: Decision) -> dict[str, object]:
    return {f.check: f for f in (*decision.failing, *decision.in_grace, *decision.nudges)}


@pytest.mark.parametrize("platform", PLATFORMS, ids=str)
class TestPackPolicyAndFixTexts:
    def test_fixture_rows_cover_every_pack_query_and_policy_check(self, platform: OsFamily) -> None:
        """Each pack query for the platform has recorded rows, and each applicable policy check has failing rows or is declared unmeasurable."""
        recorded = {item["name"] for item in _body(platform)["data"]}  # type: ignore[union-attr]
        checks = set(_variants(platform)["checks"])

        assert {q.name for q in PACK if q.runs_on(platform)} == recorded
        assert {c.name for c in POLICY_DOC.checks if _applies(c.name, platform)} == checks

    def test_healthy_laptop_passes_every_tier_long_after_every_grace(self, platform: OsFamily) -> None:
        """The healthy rows (and each healthy variant) pass every tier with every grace period long over."""
        snapshots = {"healthy": _snapshot(platform)}
        for name, rows in _variants(platform)["also_healthy"].items():
            snapshots[name] = _snapshot(platform, rows)  # type: ignore[arg-type]

        denied = {(name, tier): [f.check for f in d.failing] or d.reason.value
                  for name, snapshot in snapshots.items() for tier in POLICIES.tier_names
                  if not (d := _decide(snapshot, tier)).allowed}

        assert {} == denied
        assert all(s.platform is platform for s in snapshots.values())

    def test_rows_failing_a_check_produce_that_failure(self, platform: OsFamily) -> None:
        """For each check, the rows of a laptop failing it make that check fail (block or nudge) at the most sensitive tier."""
        top = POLICIES.tier_names[-1]
        healthy = _snapshot(platform)
        wrong = {}
        for check, variant in _variants(platform)["checks"].items():
            compiled = POLICIES.checks[check]
            if "unmeasurable" in variant:
                finding = _findings(_decide(healthy, top)).get(check)
                expected_blind = compiled.if_unmeasurable is not IfUnmeasurable.PASS
                if compiled.fact not in healthy.unmeasurable or (finding is not None) != expected_blind:
                    wrong[check] = "declared unmeasurable but the rows do not say so"
                elif finding is not None and not finding.unmeasurable:  # type: ignore[attr-defined]
                    wrong[check] = "not shown as unmeasurable"
                continue
            decision = _decide(_snapshot(platform, variant["rows"]), top)  # type: ignore[arg-type]
            found = _findings(decision)
            blocking = compiled.severity is Severity.FAIL
            listed = decision.failing if blocking else decision.nudges
            others = {c for c, f in found.items()
                      if c != check and POLICIES.checks[c].fact != compiled.fact and not f.unmeasurable}  # type: ignore[attr-defined]
            if check not in {f.check for f in listed} or others:
                wrong[check] = sorted(found)

        assert {} == wrong

    def test_each_fix_text_names_the_setting_the_query_measures(self, platform: OsFamily) -> None:
        """The fix steps shown for a failing check name the setting the pack's query reads (in its SQL or description)."""
        missing = {}
        for check, variant in _variants(platform)["checks"].items():
            setting = variant.get("setting")
            if "unmeasurable" in variant or setting is None:  # versions: the fix is always "update"
                continue
            fact = osquery.fact_name(next(iter(variant["rows"])))  # type: ignore[arg-type]
            query = next(q for q in PACK if q.runs_on(platform) and osquery.fact_name(q.name) == fact)
            steps = POLICIES.remediation_for(POLICIES.checks[check].remediation).steps_for(platform)
            text = str(setting).lower()
            if text not in steps.lower() or text not in (query.sql + query.description).lower():
                missing[check] = setting

        assert {} == missing


def test_unmeasurable_facts_survive_the_store_codec() -> None:
    """A snapshot naming unmeasurable facts round-trips through the store encoding; an old row without them decodes with none."""
    from gateway.store.codec import decode_snapshot, encode_snapshot

    snapshot = _snapshot(OsFamily.LINUX)
    old_row = orjson.loads(encode_snapshot(snapshot))
    del old_row["unmeasurable"]

    assert frozenset({"screen_lock_enabled", "screen_lock_delay_s"}) == snapshot.unmeasurable
    assert snapshot == decode_snapshot(encode_snapshot(snapshot))
    assert frozenset() == decode_snapshot(orjson.dumps(old_row)).unmeasurable
    assert dataclasses.replace(snapshot, unmeasurable=frozenset()) == decode_snapshot(orjson.dumps(old_row))
