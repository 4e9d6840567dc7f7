"""The gate: policy decision per route tier, owner binding, break-glass override, monitor mode."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from breakglass import Grant
from gateway.gate import DEVICE_NOT_OWNED, Verdict, decide
from gateway.identity.model import DeviceId, Identity
from policy_engine import DeviceSnapshot, OsFamily, Version
from policy_engine.compile import compile_policy_set
from policy_engine.evaluate import CompiledPolicySet
from policy_engine.memo import DecisionMemo
from policy_engine.parse import parse_policy_document

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policy.yaml"
ALICE = Identity(subject="alice", email="alice@example.com", groups=(), issuer="idp", source="bearer", expires_at=NOW + timedelta(hours=1))
MAC = DeviceId(serial="C02OK", source="mtls")


@dataclasses.dataclass(frozen=True)
class Route:
    id: str = "wiki"
    tier: str = "medium"
    mode: str = "enforce"
    require_owner: bool = False


@pytest.fixture(scope="module")
def policies() -> CompiledPolicySet:
    return compile_policy_set(parse_policy_document(yaml.safe_load(POLICY.read_text()), source=str(POLICY)))


def healthy_mac(**changes: object) -> DeviceSnapshot:
    snapshot = DeviceSnapshot(
        serial="C02OK", platform=OsFamily.DARWIN, os_name="macOS", os_version=Version.parse("15.1"),
        collected_at=NOW - timedelta(minutes=2), received_at=NOW - timedelta(minutes=2), source="api",
        owners=("alice@example.com",), agent_version=Version.parse("5.23"), firewall_enabled=True, disk_encrypted=True,
        screen_lock_enabled=True, screen_lock_delay_s=300, remote_login_enabled=False, auto_updates_enabled=True,
        sip_enabled=True, gatekeeper_enabled=True,
    )
    return dataclasses.replace(snapshot, **changes)  # type: ignore[arg-type]


class FixedGrants:
    def __init__(self, grant: Grant | None) -> None:
        self.grant = grant
        self.asked: list[tuple[str, str, str, str]] = []

    def active_for(self, user: str, device_serial: str, route_id: str, tier: str, *, now: datetime) -> Grant | None:
        self.asked.append((user, device_serial, route_id, tier))
        return self.grant


def a_grant() -> Grant:
    from breakglass.model import GrantStatus, Scope

    return Grant(
        id="g-1", user="alice", user_email="alice@example.com", device_serial="C02OK", scope=Scope(tier="medium"),
        reason="prod incident 123, laptop update pending", duration=timedelta(hours=1), requested_at=NOW,
        status=GrantStatus.ACTIVE, starts_at=NOW, expires_at=NOW + timedelta(hours=1),
    )


class TestDecide:
    def test_healthy_device_is_allowed(self, policies: CompiledPolicySet) -> None:
        """A healthy, fresh snapshot passes the medium tier."""
        outcome = decide(ALICE, MAC, healthy_mac(), Route(), policies=policies, now=NOW)

        assert (Verdict.ALLOW, "ok") == (outcome.verdict, outcome.reason)
        assert outcome.proxied

    def test_unknown_device_is_denied(self, policies: CompiledPolicySet) -> None:
        """No verified serial means the decision is made as for an unknown device."""
        outcome = decide(ALICE, None, None, Route(), policies=policies, now=NOW)

        assert (Verdict.DENY, "device-unknown") == (outcome.verdict, outcome.reason)

    def test_outdated_os_is_denied_with_actual_and_required(self, policies: CompiledPolicySet) -> None:
        """An OS below the tier's minimum fails with what was seen and what is needed."""
        outcome = decide(ALICE, MAC, healthy_mac(os_version=Version.parse("12.6")), Route(), policies=policies, now=NOW)

        assert (Verdict.DENY, "checks-failed") == (outcome.verdict, outcome.reason)
        assert ("12.6", ">= 13.0") in {(f.actual, f.required) for f in outcome.decision.failing}

    def test_owner_binding_denies_a_borrowed_device(self, policies: CompiledPolicySet) -> None:
        """A route requiring ownership refuses a user who is not among the device's owners."""
        bob = dataclasses.replace(ALICE, subject="bob", email="bob@example.com")

        outcome = decide(bob, MAC, healthy_mac(), Route(require_owner=True), policies=policies, now=NOW)

        assert (Verdict.DENY, DEVICE_NOT_OWNED) == (outcome.verdict, outcome.reason)

    def test_owner_binding_accepts_the_owner(self, policies: CompiledPolicySet) -> None:
        """The listed owner passes an ownership-requiring route."""
        outcome = decide(ALICE, MAC, healthy_mac(), Route(require_owner=True), policies=policies, now=NOW)

        assert Verdict.ALLOW == outcome.verdict

    def test_active_grant_lets_a_denied_request_through(self, policies: CompiledPolicySet) -> None:
        """A break-glass grant for this user, device and route turns a deny into break-glass."""
        grants = FixedGrants(a_grant())

        outcome = decide(ALICE, MAC, healthy_mac(disk_encrypted=False), Route(), policies=policies, now=NOW, grants=grants)

        assert (Verdict.BREAK_GLASS, "checks-failed") == (outcome.verdict, outcome.reason)
        assert [("alice", "C02OK", "wiki", "medium")] == grants.asked

    def test_grants_are_not_consulted_for_allowed_requests(self, policies: CompiledPolicySet) -> None:
        """An allowed request never reads or uses a grant."""
        grants = FixedGrants(a_grant())

        outcome = decide(ALICE, MAC, healthy_mac(), Route(), policies=policies, now=NOW, grants=grants)

        assert (Verdict.ALLOW, None, []) == (outcome.verdict, outcome.grant, grants.asked)

    def test_no_grant_without_an_identified_device(self, policies: CompiledPolicySet) -> None:
        """Break-glass needs an identified device; an unknown one stays denied."""
        grants = FixedGrants(a_grant())

        outcome = decide(ALICE, None, None, Route(), policies=policies, now=NOW, grants=grants)

        assert (Verdict.DENY, []) == (outcome.verdict, grants.asked)

    def test_monitor_mode_lets_a_denial_through_as_would_deny(self, policies: CompiledPolicySet) -> None:
        """A monitor-mode route proxies a denied request and says it would have been denied."""
        outcome = decide(ALICE, MAC, healthy_mac(disk_encrypted=False), Route(mode="monitor"), policies=policies, now=NOW)

        assert (Verdict.MONITOR, "checks-failed") == (outcome.verdict, outcome.reason)
        assert outcome.proxied

    def test_unknown_tier_denies(self, policies: CompiledPolicySet) -> None:
        """A route naming a tier the policy lacks denies rather than guessing."""
        outcome = decide(ALICE, MAC, healthy_mac(), Route(tier="secret"), policies=policies, now=NOW)

        assert (Verdict.DENY, "tier-unknown") == (outcome.verdict, outcome.reason)

    def test_memoised_decision_expires_with_staleness(self, policies: CompiledPolicySet) -> None:
        """A memoised allow is not reused once the snapshot has become stale for the tier."""
        memo = DecisionMemo()
        snapshot = healthy_mac()
        first = decide(ALICE, MAC, snapshot, Route(), policies=policies, now=NOW, memo=memo)

        later = decide(ALICE, MAC, snapshot, Route(), policies=policies, now=NOW + timedelta(hours=2), memo=memo)

        assert (Verdict.ALLOW, Verdict.DENY, "snapshot-stale") == (first.verdict, later.verdict, later.reason)

    def test_memoised_decision_is_reused_while_valid(self, policies: CompiledPolicySet) -> None:
        """Within its validity the same decision object is returned from the memo."""
        memo = DecisionMemo()
        snapshot = healthy_mac()
        first = decide(ALICE, MAC, snapshot, Route(), policies=policies, now=NOW, memo=memo)

        second = decide(ALICE, MAC, snapshot, Route(), policies=policies, now=NOW + timedelta(seconds=5), memo=memo)

        assert first.decision is second.decision
