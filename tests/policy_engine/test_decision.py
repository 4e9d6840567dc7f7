"""Decisions, findings and reason codes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from policy_engine import Decision, Reason
from policy_engine.decision import DecisionTwin

from tests.policy_engine.factories import NOW


class TestReason:
    def test_reason_codes_are_kebab_case(self) -> None:
        """Reason values are short lowercase kebab-case codes."""
        values = [r.value for r in Reason]

        assert [] == [v for v in values if v != v.lower() or " " in v or "_" in v]


class TestDecision:
    def test_is_valid_at_respects_both_ends(self) -> None:
        """A decision holds from evaluated_at up to, not including, valid_until."""
        decision = Decision(True, "low", Reason.OK, evaluated_at=NOW, valid_until=NOW + timedelta(hours=1))

        results = [decision.is_valid_at(NOW - timedelta(seconds=1)), decision.is_valid_at(NOW),
                   decision.is_valid_at(NOW + timedelta(hours=1))]

        assert [False, True, False] == results

    def test_twin_has_the_same_layout(self) -> None:
        """The fast-construction twin has exactly Decision's slots, in order."""
        names = tuple(f.name for f in dataclasses.fields(Decision))

        slots = DecisionTwin.__slots__

        assert names == slots

    def test_reasons_is_the_reason_as_a_set(self) -> None:
        """``decision.reasons`` holds exactly the decision's reason."""
        decision = Decision(False, "high", Reason.SNAPSHOT_STALE)

        reasons = decision.reasons

        assert frozenset({Reason.SNAPSHOT_STALE}) == reasons
