"""The policy in force: a reload compiles the new file first and keeps the old one when it fails."""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from gateway.web.middleware import GUARDED_PREFIX
from gateway.config.policy_file import PolicyHolder
from gateway.web.gate_pages import USER_AREAS, needs_user

POLICY = Path(__file__).resolve().parents[3] / "deploy" / "policy.yaml"


def holder_on_copy(tmp_path: Path, registry: CollectorRegistry) -> tuple[PolicyHolder, Path]:
    path = tmp_path / "policy.yaml"
    shutil.copy(POLICY, path)
    return PolicyHolder.load(path, metrics=Metrics(registry)), path


class TestReload:
    def test_broken_policy_keeps_the_old_one_and_is_counted(self, tmp_path: Path) -> None:
        """A policy that fails to compile never replaces the one in force; the failure is logged and counted."""
        registry = CollectorRegistry()
        holder, path = holder_on_copy(tmp_path, registry)
        before = holder.current
        path.write_text(path.read_text().replace("fact: disk_encrypted", "fact: disk_encryptd"))

        with structlog.testing.capture_logs() as logs:
            swapped = holder.reload()

        assert (False, before) == (swapped, holder.current)
        assert ["policy.reload_failed"] == [e["event"] for e in logs]
        assert any("disk_encryptd" in p for p in logs[0]["problems"])
        assert 1.0 == registry.get_sample_value("gatehouse_config_reloads_total", {"what": "policy", "outcome": "failure"})

    def test_good_policy_replaces_the_old_one(self, tmp_path: Path) -> None:
        """A valid new policy is in force for the next decision, with a new version for memo keys."""
        registry = CollectorRegistry()
        holder, path = holder_on_copy(tmp_path, registry)
        before = holder.current.version
        path.write_text(path.read_text().replace("max_snapshot_age: 15m", "max_snapshot_age: 10m"))

        swapped = holder.reload()

        assert (True, 600.0) == (swapped, holder.current.tier("high").max_snapshot_age.total_seconds())  # type: ignore[union-attr]
        assert before != holder.current.version
        assert 1.0 == registry.get_sample_value("gatehouse_config_reloads_total", {"what": "policy", "outcome": "success"})


class TestUserAreasGuarded:
    def test_every_user_area_is_under_the_guarded_prefix(self) -> None:
        """request_context hands only GUARDED_PREFIX paths to reserved_identity, so every user area lies under it."""
        outside = [area for area in (*USER_AREAS, "/.gatehouse/") if not area.startswith(GUARDED_PREFIX)]

        assert [] == outside
        assert False is needs_user("/.gatehousex/me")
