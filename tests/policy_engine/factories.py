"""Builders for policy_engine tests: a healthy snapshot, policies from YAML text."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from policy_engine import (
    CompiledPolicySet,
    DeviceSnapshot,
    OsFamily,
    Version,
    compile_policy_set,
    parse_policy_document,
)

NOW = datetime(2026, 11, 22, 15, 0, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
DEPLOY_POLICY = ROOT / "deploy" / "policy.yaml"
STETHOSCOPE_POLICY = ROOT / "tests" / "fixtures" / "stethoscope" / "policy.yaml"


def make_snapshot(**overrides: Any) -> DeviceSnapshot:
    """A healthy, fresh macOS snapshot that passes every tier of deploy/policy.yaml."""
    base = DeviceSnapshot(
        serial="C02XK1JHJG5J",
        platform=OsFamily.DARWIN,
        os_name="macOS",
        os_version=Version.parse("15.1"),
        collected_at=NOW - timedelta(minutes=5),
        received_at=NOW - timedelta(minutes=5),
        source="osquery",
        hostname="alice-mbp",
        owners=("alice@example.com",),
        agent_name="osquery",
        agent_version=Version.parse("5.12.1"),
        firewall_enabled=True,
        disk_encrypted=True,
        screen_lock_enabled=True,
        screen_lock_delay_s=300,
        remote_login_enabled=False,
        auto_updates_enabled=True,
        sip_enabled=True,
        gatekeeper_enabled=True,
    )
    if "age" in overrides:
        age = overrides.pop("age")
        overrides.setdefault("collected_at", NOW - age)
        overrides.setdefault("received_at", NOW - age)
    return dataclasses.replace(base, **overrides)


def load_yaml(text: str) -> dict[str, Any]:
    """YAML text as the gateway would load it."""
    return yaml.safe_load(text)


def policies_from(text: str) -> CompiledPolicySet:
    """Parse and compile a policy written as YAML text."""
    return compile_policy_set(parse_policy_document(load_yaml(text), source="test.yaml"))


def deploy_policies() -> CompiledPolicySet:
    """The example three-tier policy shipped in deploy/policy.yaml."""
    return compile_policy_set(
        parse_policy_document(yaml.safe_load(DEPLOY_POLICY.read_text()), source=str(DEPLOY_POLICY))
    )
