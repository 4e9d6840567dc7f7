"""Pure device-health policy evaluation: data in, decision out; standard library only."""

from __future__ import annotations

from policy_engine.model import EMPTY_FACTS, DeviceSnapshot, Fact, OsFamily, Version

__all__ = ["EMPTY_FACTS", "DeviceSnapshot", "Fact", "OsFamily", "Version"]
