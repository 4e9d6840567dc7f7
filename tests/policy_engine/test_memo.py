"""The decision memo: reused only while valid, bounded, keyed by the caller."""

from __future__ import annotations

from datetime import timedelta

import pytest

from policy_engine import CompiledPolicySet, DecisionMemo, Reason

from tests.policy_engine.factories import NOW, deploy_policies, make_snapshot

TICK = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def policies() -> CompiledPolicySet:
    """The example three-tier policy."""
    return deploy_policies()


class TestDecisionMemo:
    def test_hit_returns_the_same_decision_until_valid_until(self, policies: CompiledPolicySet) -> None:
        """A memoised decision is returned up to just before valid_until, then dropped."""
        memo = DecisionMemo()
        snapshot = make_snapshot(age=timedelta(0))
        key = (snapshot.serial, 1, policies.version, "high")
        first = memo.decide(policies, snapshot, "high", now=NOW, key=key)

        hit = memo.get(key, now=NOW + timedelta(minutes=15))
        miss = memo.get(key, now=NOW + timedelta(minutes=15) + TICK)

        assert (first, None, 0) == (hit, miss, len(memo))

    def test_decide_recomputes_after_expiry(self, policies: CompiledPolicySet) -> None:
        """After valid_until, decide evaluates again and sees the stale snapshot."""
        memo = DecisionMemo()
        snapshot = make_snapshot(age=timedelta(0))
        key = ("s", 1, policies.version, "high")
        memo.decide(policies, snapshot, "high", now=NOW, key=key)

        later = memo.decide(policies, snapshot, "high", now=NOW + timedelta(hours=1), key=key)

        assert (Reason.SNAPSHOT_STALE, 0, 2) == (later.reason, memo.hits, memo.misses)

    def test_decision_is_not_reused_before_it_was_made(self, policies: CompiledPolicySet) -> None:
        """A clock that steps back does not get a decision evaluated later."""
        memo = DecisionMemo()
        key = ("s", 1, "v", "low")
        memo.put(key, policies.evaluate(make_snapshot(), "low", now=NOW))

        found = memo.get(key, now=NOW - TICK)

        assert None is found

    def test_memo_is_bounded(self, policies: CompiledPolicySet) -> None:
        """The memo never holds more than maxsize entries."""
        memo = DecisionMemo(maxsize=16)
        decision = policies.evaluate(make_snapshot(), "low", now=NOW)

        for i in range(100):
            memo.put(i, decision)

        assert True is (len(memo) <= 16)
        assert decision is memo.get(99, now=NOW)

    def test_memo_size_must_be_positive(self) -> None:
        """A zero-size memo is a usage error."""
        with pytest.raises(ValueError) as caught:
            DecisionMemo(maxsize=0)

        assert "`0` is not a memo size" in str(caught.value)
