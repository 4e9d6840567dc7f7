"""The typed document is plain frozen data."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from policy_engine import BreakGlassMode, BreakGlassSpec, TierSpec


class TestTierSpec:
    def test_tier_specs_are_frozen(self) -> None:
        """A tier spec cannot be changed after it is built."""
        tier = TierSpec("low", ("disk",), timedelta(hours=24), BreakGlassSpec(BreakGlassMode.NEVER))

        with pytest.raises(dataclasses.FrozenInstanceError):
            tier.name = "high"  # type: ignore[misc]

        assert "low" == tier.name
