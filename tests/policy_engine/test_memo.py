"""The decision memo: reused only while valid, one generation per device, bounded by what it holds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from policy_engine import CompiledPolicySet, DecisionMemo, Reason

from tests.policy_engine.factories import NOW, deploy_policies, make_snapshot

TICK = timedelta(microseconds=1)
TIERS = ("low", "medium", "high")


@pytest.fixture(scope="module")
def policies() -> CompiledPolicySet:
    """The example three-tier policy."""
    return deploy_policies()


class TestDecisionMemo:
    def test_hit_returns_the_same_decision_until_valid_until(self, policies: CompiledPolicySet) -> None:
        """A memoised decision is returned up to just before valid_until, then dropped."""
        memo = DecisionMemo()
        snapshot = make_snapshot(age=timedelta(0))
        generation = (1, policies.version)
        first = memo.decide(policies, snapshot, "high", now=NOW, device=snapshot.serial, generation=generation)

        hit = memo.get(snapshot.serial, generation, "high", now=NOW + timedelta(minutes=15))
        miss = memo.get(snapshot.serial, generation, "high", now=NOW + timedelta(minutes=15) + TICK)

        assert (first, None, 0) == (hit, miss, len(memo))

    def test_decide_recomputes_after_expiry(self, policies: CompiledPolicySet) -> None:
        """After valid_until, decide evaluates again and sees the stale snapshot."""
        memo = DecisionMemo()
        snapshot = make_snapshot(age=timedelta(0))
        memo.decide(policies, snapshot, "high", now=NOW, device="s", generation=1)

        later = memo.decide(policies, snapshot, "high", now=NOW + timedelta(hours=1), device="s", generation=1)

        assert (Reason.SNAPSHOT_STALE, 0, 2) == (later.reason, memo.hits, memo.misses)

    def test_decision_is_not_reused_before_it_was_made(self, policies: CompiledPolicySet) -> None:
        """A clock that steps back does not get a decision evaluated later."""
        memo = DecisionMemo()
        memo.put("s", 1, "low", policies.evaluate(make_snapshot(), "low", now=NOW))

        found = memo.get("s", 1, "low", now=NOW - TICK)

        assert None is found

    def test_another_generation_is_a_miss(self, policies: CompiledPolicySet) -> None:
        """A decision made for one snapshot or policy version is never given for another."""
        memo = DecisionMemo()
        memo.put("s", (NOW, "v1"), "low", policies.evaluate(make_snapshot(), "low", now=NOW))

        found = memo.get("s", (NOW, "v2"), "low", now=NOW)

        assert None is found

    def test_a_new_generation_drops_the_replaced_snapshots_decisions(self, policies: CompiledPolicySet) -> None:
        """Deciding a device's new snapshot removes every decision kept for its old one."""
        memo = DecisionMemo()
        old, new = make_snapshot(), make_snapshot(age=timedelta(0))
        for tier in TIERS:
            memo.decide(policies, old, tier, now=NOW, device=old.serial, generation=(old.collected_at, policies.version))

        memo.decide(policies, new, "low", now=NOW, device=new.serial, generation=(new.collected_at, policies.version))

        assert (1, 1) == (len(memo), memo.devices())
        assert all(memo.get(old.serial, (old.collected_at, policies.version), t, now=NOW) is None for t in TIERS)

    def test_forget_drops_a_device(self, policies: CompiledPolicySet) -> None:
        """forget(device) removes the device's decisions at once, and only those."""
        memo = DecisionMemo()
        decision = policies.evaluate(make_snapshot(), "low", now=NOW)
        for tier in TIERS:
            memo.put("replaced", 1, tier, decision)
        memo.put("other", 1, "low", decision)

        memo.forget("replaced")

        assert (1, 1, decision) == (len(memo), memo.devices(), memo.get("other", 1, "low", now=NOW))

    def test_size_stays_bounded_by_live_devices_under_churn(self, policies: CompiledPolicySet) -> None:
        """However many snapshots a fleet goes through, the memo holds one generation per device."""
        memo = DecisionMemo()
        devices = [f"C02CHURN{i:04d}" for i in range(50)]

        for generation in range(40):
            for device in devices:
                for tier in TIERS:
                    memo.decide(policies, make_snapshot(serial=device), tier, now=NOW, device=device, generation=generation)

        assert (len(devices) * len(TIERS), len(devices)) == (len(memo), memo.devices())

    def test_memo_is_bounded(self, policies: CompiledPolicySet) -> None:
        """The memo never holds more than maxsize entries, and keeps the newest."""
        memo = DecisionMemo(maxsize=16)
        decision = policies.evaluate(make_snapshot(), "low", now=NOW)

        for i in range(100):
            memo.put(i, 1, "low", decision)
            assert len(memo) <= 16

        assert decision is memo.get(99, 1, "low", now=NOW)

    def test_memo_size_must_be_positive(self) -> None:
        """A zero-size memo is a usage error."""
        with pytest.raises(ValueError) as caught:
            DecisionMemo(maxsize=0)

        assert "`0` is not a memo size" in str(caught.value)
