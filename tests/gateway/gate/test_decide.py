"""The gate: policy decision per route tier, owner binding, break-glass override, monitor mode."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from breakglass import Grant
from gateway.app import create_app
from gateway.gate.decide import DEVICE_NOT_OWNED, DEVICE_UNOWNED, Verdict, decide, owner_refusal
from gateway.identity.model import DeviceId, Identity
from gateway.keys import LEDGER, STORE
from gateway.metrics import Metrics
from gateway.config.policy_file import load_policy
from gateway.store.base import AccessVerdict
from policy_engine import DeviceSnapshot, OsFamily, Reason, Version
from policy_engine.compile import compile_policy_set
from policy_engine.evaluate import CompiledPolicySet
from policy_engine.memo import DecisionMemo
from policy_engine.parse import parse_policy_document
from tests.conftest import LogLines
from tests.gateway.fullstack import catch_all_upstream, INGEST_TOKEN, Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item
from tests.gateway.ingest.support import ENROLL_SECRET, fixture

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
POLICY = Path(__file__).resolve().parents[3] / "deploy" / "policy.yaml"
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

        outcome = decide(bob, MAC, healthy_mac(), Route(require_owner=True), policies=policies, now=NOW, owners=(ALICE.email,))

        assert (Verdict.DENY, DEVICE_NOT_OWNED) == (outcome.verdict, outcome.reason)

    def test_owner_binding_accepts_the_owner(self, policies: CompiledPolicySet) -> None:
        """The listed owner passes an ownership-requiring route."""
        outcome = decide(ALICE, MAC, healthy_mac(), Route(require_owner=True), policies=policies, now=NOW, owners=(ALICE.email,))

        assert Verdict.ALLOW == outcome.verdict

    def test_owner_binding_denies_a_device_without_owners(self, policies: CompiledPolicySet) -> None:
        """A healthy device with no recorded owners (as osquery reports it) belongs to nobody on an ownership-requiring route."""
        outcome = decide(ALICE, MAC, healthy_mac(owners=()), Route(require_owner=True), policies=policies, now=NOW)

        assert (Verdict.DENY, DEVICE_UNOWNED) == (outcome.verdict, outcome.reason)

    def test_owner_binding_is_checked_whatever_the_policy_says(self, policies: CompiledPolicySet) -> None:
        """Someone else's failing device is refused as not owned, without its findings and without asking for a grant."""
        bob = dataclasses.replace(ALICE, subject="bob", email="bob@example.com")
        grants = FixedGrants(a_grant())

        outcome = decide(bob, MAC, healthy_mac(disk_encrypted=False), Route(require_owner=True), policies=policies, now=NOW, grants=grants,
                         owners=(ALICE.email,))

        assert (Verdict.DENY, DEVICE_NOT_OWNED, (), []) == (outcome.verdict, outcome.reason, outcome.decision.failing, grants.asked)

    def test_no_grant_lifts_an_unowned_device(self, policies: CompiledPolicySet) -> None:
        """Break-glass does not register a device: an unowned device stays denied with a grant at hand."""
        grants = FixedGrants(a_grant())

        outcome = decide(ALICE, MAC, healthy_mac(owners=()), Route(require_owner=True), policies=policies, now=NOW, grants=grants)

        assert (Verdict.DENY, DEVICE_UNOWNED, []) == (outcome.verdict, outcome.reason, grants.asked)

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


class TestOwnerRefusal:
    USER = Identity("user-1", "Alice@Corp.example", (), "https://idp", "bearer", NOW)

    @pytest.mark.parametrize(("owners", "expected"), [
        (["alice@corp.example"], None), (["bob@corp.example", "ALICE@corp.example"], None),
        (["bob@corp.example"], Reason.DEVICE_NOT_OWNED), (["user-1"], Reason.DEVICE_NOT_OWNED),
        ([""], Reason.DEVICE_NOT_OWNED), ([], Reason.DEVICE_UNOWNED),
    ])
    def test_owner_refusal(self, owners: list[str], expected: Reason | None) -> None:
        """The user owns a device by email (case-insensitive), never by subject; no owners matches nobody."""
        assert expected is owner_refusal(self.USER, owners)


SERIAL = "PF3ABCDE"
"""The Linux laptop of the osquery fixtures (tests/fixtures/osquery/)."""


def osquery_result(name: str, rows: list[dict[str, str]]) -> dict[str, Any]:
    """One `snapshot` result line as osqueryd 5.23 sends it, for query ``name``."""
    line = copy.deepcopy(fixture("log_result_snapshot.json")["data"][0])
    line.update({"name": name, "snapshot": rows})
    return line


class Recorded:
    """A real upstream that counts what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(f"{request.method} {request.path}")
        return web.json_response({"user": request.headers.get("X-Gatehouse-Email")})


OwnedStack = tuple[TestClient, Recorded, Keys, MovableClock, CollectorRegistry]


@pytest.fixture
async def owned_stack(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[OwnedStack]:
    """A full Gatehouse on its own listener, a new connection per request."""
    upstream = Recorded()
    server_url = await catch_all_upstream(aiohttp_server, upstream.handle)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    registry = CollectorRegistry()
    settings = gatehouse_settings(
        keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=server_url,
        ingest={"api_tokens": [{"value": INGEST_TOKEN}], "osquery_enroll_secrets": [{"value": ENROLL_SECRET}]},
    )
    client = await aiohttp_client(create_app(settings, clock=clock, metrics=Metrics(registry)),
                                  connector=aiohttp.TCPConnector(force_close=True))
    yield client, upstream, keys, clock, registry


async def enroll_healthy_osquery_laptop(client: TestClient) -> None:
    """The fixtures' Linux laptop enrolls and reports a healthy posture, as osqueryd does: no owner anywhere."""
    enrolled = await client.post("/.gatehouse/osquery/enroll", json=fixture("enroll_request_linux.json"))
    node_key = (await enrolled.json())["node_key"]
    lines = [
        fixture("log_result_snapshot.json")["data"][0],
        osquery_result("zt_disk_encryption_linux", [{"enabled": "1"}]),
        osquery_result("zt_screen_lock_linux", [{"enabled": "1"}]),
    ]
    logged = await client.post("/.gatehouse/osquery/log", json={"node_key": node_key, "log_type": "result", "data": lines})
    assert (200, 200) == (enrolled.status, logged.status), await logged.text()


async def ingest_owned(client: TestClient, clock: MovableClock, owner: str) -> None:
    response = await client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": [mac_item(SERIAL, at=clock(), owner=owner)]},
                                 headers=ingest_headers())
    assert 200 == response.status, await response.text()
    bound = await client.put(f"/.gatehouse/api/v1/devices/{SERIAL}/owners", json={"owners": [owner]}, headers=ingest_headers())
    assert 200 == bound.status, await bound.text()


def gate_path_count(registry: CollectorRegistry, path: str) -> float:
    """Requests the gate decided from memory (``memory``) or on its awaited path (``awaited``)."""
    return registry.get_sample_value("gatehouse_gate_paths_total", {"path": path}) or 0.0


class TestOwnerBindingThroughTheListener:
    async def test_osquery_enrolled_device_is_unowned(self, owned_stack: OwnedStack) -> None:
        """A healthy osquery-enrolled device has no owner: refused on an ownership route (GET and POST), with how to register it."""
        client, upstream, keys, clock, _ = owned_stack
        await enroll_healthy_osquery_laptop(client)
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', device=SERIAL, now=clock())}"}

        public = await client.get("/public/", headers=headers)
        got = await client.get("/owned/", headers={**headers, "Accept": "application/json"})
        posted = await client.post("/owned/", headers={**headers, "Accept": "application/json"}, data=b"x=1")
        page = await client.get("/owned/", headers={**headers, "Accept": "text/html"})
        problem = await got.json()
        html = await page.text()

        assert 200 == public.status
        assert [(403, DEVICE_UNOWNED)] * 3 == [(r.status, r.headers["X-Gatehouse-Denied-Reason"]) for r in (got, posted, page)]
        assert ["GET /public/"] == upstream.paths
        assert (None, "This device is not registered to anyone") == (problem["break_glass"], problem["title"])
        assert "gatehouse devices assign" in html and "gatehouse devices import" in html and "owner inventory" in html
        assert "How a device is registered to you" in html and SERIAL in html

    async def test_device_of_another_user_is_refused(self, owned_stack: OwnedStack) -> None:
        """A device registered to bob is refused to alice on an ownership route, GET and POST alike."""
        client, upstream, keys, clock, _ = owned_stack
        await ingest_owned(client, clock, "bob@example.com")
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', device=SERIAL, now=clock())}", "Accept": "application/json"}

        got = await client.get("/owned/", headers=headers)
        posted = await client.post("/owned/", headers=headers, data=b"x=1")

        assert [(403, DEVICE_NOT_OWNED)] * 2 == [(r.status, r.headers["X-Gatehouse-Denied-Reason"]) for r in (got, posted)]
        assert [] == upstream.paths

    async def test_device_of_the_user_is_allowed_to_get_and_post(self, owned_stack: OwnedStack) -> None:
        """The registered owner (email in any case) gets through, a GET (its token verified first) and a POST (decided from memory)."""
        client, upstream, keys, clock, registry = owned_stack
        await ingest_owned(client, clock, "Alice@Example.com")
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', device=SERIAL, now=clock())}"}
        fast_before = gate_path_count(registry, "memory")

        got = await client.get("/owned/", headers=headers)
        posted = await client.post("/owned/", headers=headers, data=b"x=1")

        assert (200, 200) == (got.status, posted.status)
        assert ["GET /owned/", "POST /owned/"] == upstream.paths
        assert 1.0 == gate_path_count(registry, "memory") - fast_before


def policy_with_lobby(path: Path) -> Path:
    """deploy/policy.yaml with a `lobby` tier in front: the `low` tier's checks, `device: optional`."""
    raw = yaml.safe_load(POLICY.read_text())
    raw["tiers"] = {"lobby": {**raw["tiers"]["low"], "device": "optional"}, **raw["tiers"]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class TestIdentityOnly:
    def test_no_device_at_an_optional_tier_is_allowed_as_identity_only(self, tmp_path: Path) -> None:
        """A request naming no device is let through on identity alone, with reason identity-only and no grant looked up."""
        lobby = load_policy(policy_with_lobby(tmp_path / "policy.yaml"))
        grants = FixedGrants(a_grant())

        outcome = decide(ALICE, None, None, Route(tier="lobby"), policies=lobby, now=NOW, grants=grants)

        assert (Verdict.ALLOW, "identity-only", Reason.IDENTITY_ONLY, []) == (
            outcome.verdict, outcome.reason, outcome.decision.reason, grants.asked,
        )

    def test_an_owner_route_needs_a_device_even_at_an_optional_tier(self, tmp_path: Path) -> None:
        """With `require_owner` there is no owner to check without a device: device-unknown, not identity-only."""
        lobby = load_policy(policy_with_lobby(tmp_path / "policy.yaml"))

        outcome = decide(ALICE, None, None, Route(tier="lobby", require_owner=True), policies=lobby, now=NOW)

        assert (Verdict.DENY, "device-unknown") == (outcome.verdict, outcome.reason)

    def test_a_named_device_is_evaluated_at_an_optional_tier(self, tmp_path: Path) -> None:
        """A verified device is decided on its health: failing denied, without a snapshot device-unknown, healthy ok."""
        lobby = load_policy(policy_with_lobby(tmp_path / "policy.yaml"))
        route = Route(tier="lobby")

        failing = decide(ALICE, MAC, healthy_mac(disk_encrypted=False), route, policies=lobby, now=NOW)
        unknown = decide(ALICE, MAC, None, route, policies=lobby, now=NOW)
        healthy = decide(ALICE, MAC, healthy_mac(), route, policies=lobby, now=NOW)

        assert [(Verdict.DENY, "checks-failed"), (Verdict.DENY, "device-unknown"), (Verdict.ALLOW, "ok")] == [
            (o.verdict, o.reason) for o in (failing, unknown, healthy)
        ]


LobbyStack = tuple[TestClient, Recorded, Keys, MovableClock, CollectorRegistry]


@pytest.fixture
async def lobby_stack(log_lines: LogLines, aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[LobbyStack]:
    """A full Gatehouse on its own listener with route `lobby` on a `device: optional` tier; a new connection per request."""
    upstream = Recorded()
    server_url = await catch_all_upstream(aiohttp_server, upstream.handle)
    base = server_url
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    registry = CollectorRegistry()
    settings = gatehouse_settings(
        keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=base, policy=str(policy_with_lobby(tmp_path / "policy.yaml")),
        extra_routes=[{"id": "lobby", "path_prefix": "/lobby", "upstream": base, "tier": "lobby"}],
    )
    client = await aiohttp_client(create_app(settings, clock=clock, metrics=Metrics(registry)),
                                  connector=aiohttp.TCPConnector(force_close=True))
    yield client, upstream, keys, clock, registry


async def completed_lines(log_lines: LogLines, count: int) -> list[dict[str, Any]]:
    """The first ``count`` request.completed lines, once written."""
    async with asyncio.timeout(10):
        while len(lines := log_lines.events("request.completed")) < count:
            await asyncio.sleep(0.01)  # polls for an event; no timeout is waited out
    return lines


class TestIdentityOnlyThroughTheListener:
    async def test_no_device_is_allowed_logged_and_counted_as_identity_only(self, lobby_stack: LobbyStack, log_lines: LogLines) -> None:
        """No device at a `device: optional` tier: a GET and a POST reach the
        upstream, and the log line, the decisions metric and the access ledger say identity-only."""
        client, upstream, keys, clock, registry = lobby_stack
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', now=clock())}"}
        fast_before = gate_path_count(registry, "memory")

        got = await client.get("/lobby/", headers=headers)
        posted = await client.post("/lobby/", headers=headers, data=b"x=1")
        lines = await completed_lines(log_lines, 2)
        app = client.server.app
        assert app is not None
        await app[LEDGER].flush(app[STORE])
        rows = [r async for r in app[STORE].iter_access(since=clock() - timedelta(days=1))]

        assert (200, 200) == (got.status, posted.status)
        assert ["GET /lobby/", "POST /lobby/"] == upstream.paths
        assert 1.0 == gate_path_count(registry, "memory") - fast_before
        assert [("GET", "allow", "identity-only", None, "alice@example.com"), ("POST", "allow", "identity-only", None, "alice@example.com")] == [
            (line["method"], line["decision"], line["reason"], line.get("device"), line["user"]) for line in lines
        ]
        assert 2.0 == registry.get_sample_value("gatehouse_decisions_total", {"tier": "lobby", "outcome": "allow", "reason": "identity-only"})
        assert [("lobby", "alice@example.com", "", AccessVerdict.ALLOWED, "identity-only", 2)] == [
            (r.route, r.user, r.device, r.verdict, r.reason, r.count) for r in rows
        ]

    async def test_a_failing_device_is_denied_at_the_optional_tier(self, lobby_stack: LobbyStack) -> None:
        """A request that names a failing device is denied on its health, GET and POST alike; nothing reaches the upstream."""
        client, upstream, keys, clock, _ = lobby_stack
        response = await client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": [mac_item("C02FAIL01", at=clock(), disk_encrypted=False)]},
                                     headers=ingest_headers())
        assert 200 == response.status, await response.text()
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', device='C02FAIL01', now=clock())}", "Accept": "application/json"}

        got = await client.get("/lobby/", headers=headers)
        posted = await client.post("/lobby/", headers=headers, data=b"x=1")

        assert [(403, "checks-failed")] * 2 == [(r.status, r.headers["X-Gatehouse-Denied-Reason"]) for r in (got, posted)]
        assert [] == upstream.paths

    async def test_a_device_required_tier_still_denies_a_request_without_a_device(self, lobby_stack: LobbyStack) -> None:
        """The tiers that do not say `device: optional` deny a request naming no device as device-unknown, GET and POST."""
        client, upstream, keys, clock, registry = lobby_stack
        headers = {"Authorization": f"Bearer {keys.token('alice@example.com', now=clock())}", "Accept": "application/json"}

        got = await client.get("/public/", headers=headers)
        posted = await client.post("/public/", headers=headers, data=b"x=1")

        assert [(403, "device-unknown")] * 2 == [(r.status, r.headers["X-Gatehouse-Denied-Reason"]) for r in (got, posted)]
        assert [] == upstream.paths
        assert 2.0 == registry.get_sample_value("gatehouse_decisions_total", {"tier": "low", "outcome": "deny", "reason": "device-unknown"})
