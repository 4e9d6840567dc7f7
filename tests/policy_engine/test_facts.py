"""Fact names and kinds."""

from __future__ import annotations

from policy_engine import DeviceSnapshot
from policy_engine.facts import BUILTIN_FACTS, FactKind, fact_kind


class TestFactKind:
    def test_builtin_custom_and_unknown_facts(self) -> None:
        """Snapshot fields have their kind, ``custom.x`` is custom, anything else is unknown."""
        names = ["disk_encrypted", "os_version", "screen_lock_delay_s", "custom.mdm_enrolled", "fire_wall", "custom."]

        kinds = [fact_kind(n) for n in names]

        assert [FactKind.BOOL, FactKind.VERSION, FactKind.INT, FactKind.CUSTOM, None, None] == kinds

    def test_every_builtin_fact_is_a_snapshot_field(self) -> None:
        """Each built-in fact names a real DeviceSnapshot field."""
        fields = set(DeviceSnapshot.__dataclass_fields__)

        missing = [name for name in BUILTIN_FACTS if name not in fields]

        assert [] == missing
