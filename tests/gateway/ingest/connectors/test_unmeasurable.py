"""What a vendor's record cannot carry is "not measurable by the vendor", never "the device did not report".

Fleet's host record and Jamf Pro's computer inventory have no field for some facts (FLEET_UNMEASURABLE,
JAMF_UNMEASURABLE); a Fleet site's ``policy_map`` can supply some of them. The parsers are read on the
recorded vendor shapes (tests/fixtures/fleet, tests/fixtures/jamf); the denial is read through the
production listener of a Gatehouse polling the Fleet contract server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.ingest.connectors.base import ConnectorRecord
from gateway.ingest.connectors.fleet import FLEET_UNMEASURABLE, parse_fleet_host
from gateway.ingest.connectors.jamf import JAMF_UNMEASURABLE, parse_jamf_computer
from gateway.keys import CONNECTORS
from tests.gateway.fullstack import Keys, MovableClock
from tests.gateway.ingest.connectors.conftest import Serve
from tests.gateway.ingest.connectors.contract import VendorState, fleet_app, load
from tests.gateway.ingest.connectors.freshness import FLEET_SERIAL, connector_gatehouse, failing_fleet_host, fix_fleet_host
from tests.gateway.ingest.support import UNUSED_UPSTREAM

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
"""After every recorded host's and computer's collection time."""
SKEW = timedelta(minutes=5)

# A Fleet site's policy: FileVault (a Fleet host field) and the screen lock delay (no Fleet field).
LOCK_POLICY = """
format: 1
checks:
  disk_encryption: {fact: disk_encrypted, equals: true}
  screen_lock_delay: {fact: screen_lock_delay_s, at_most: 600}
tiers:
  low: {checks: [disk_encryption, screen_lock_delay], max_snapshot_age: 48h, break_glass: never}
  medium: {extends: low, checks: [], max_snapshot_age: 48h, break_glass: never}
  high: {extends: medium, checks: [], max_snapshot_age: 48h, break_glass: never}
"""


def _fleet(host: object, policy_map: dict[str, str]) -> ConnectorRecord:
    record = parse_fleet_host(host, source="fleet:corp", policy_map=policy_map, received_at=NOW, max_future_skew=SKEW)
    assert isinstance(record, ConnectorRecord), record
    return record


class TestFleet:
    def test_facts_without_a_fleet_field_are_unmeasurable_and_none(self) -> None:
        """With no policy map, every fact Fleet has no host field for is named unmeasurable and left None."""
        host = load("fleet/hosts-page-1.json")["hosts"][0]

        snapshot = _fleet(host, {}).snapshot

        assert frozenset({"firewall_enabled", "screen_lock_enabled", "screen_lock_delay_s", "remote_login_enabled",
                          "auto_updates_enabled", "sip_enabled", "gatekeeper_enabled"}) == snapshot.unmeasurable == FLEET_UNMEASURABLE
        assert {None} == {getattr(snapshot, fact) for fact in FLEET_UNMEASURABLE}
        assert (True, "5.12.1") == (snapshot.disk_encrypted, str(snapshot.agent_version))

    def test_a_mapped_policy_makes_its_fact_measurable(self) -> None:
        """A fact the policy map supplies leaves the unmeasurable set and carries the policy's answer; custom facts change nothing."""
        host = load("fleet/hosts-page-1.json")["hosts"][0]

        snapshot = _fleet(host, {"Firewall enabled (macOS)": "firewall_enabled",
                                 "Screen lock within 5 minutes": "custom.screen_lock_5min"}).snapshot

        assert FLEET_UNMEASURABLE - {"firewall_enabled"} == snapshot.unmeasurable
        assert (True, False) == (snapshot.firewall_enabled, snapshot.custom["screen_lock_5min"])

    def test_a_mapped_policy_not_run_yet_is_not_reported_rather_than_unmeasurable(self) -> None:
        """A mapped fact whose policy has no result on the host is None but measurable: Fleet can carry it."""
        host = {**load("fleet/hosts-page-1.json")["hosts"][0],
                "policies": [{"id": 1, "name": "Firewall enabled (macOS)", "response": ""}]}

        snapshot = _fleet(host, {"Firewall enabled (macOS)": "firewall_enabled"}).snapshot

        assert (None, False) == (snapshot.firewall_enabled, "firewall_enabled" in snapshot.unmeasurable)

    def test_a_host_without_a_field_fleet_has_is_not_reported(self) -> None:
        """A host lacking `disk_encryption_enabled` (a field Fleet has) leaves disk_encrypted None and measurable."""
        host = {k: v for k, v in load("fleet/hosts-page-1.json")["hosts"][0].items() if k != "disk_encryption_enabled"}

        snapshot = _fleet(host, {}).snapshot

        assert (None, False) == (snapshot.disk_encrypted, "disk_encrypted" in snapshot.unmeasurable)


class TestJamf:
    def test_facts_without_an_inventory_field_are_unmeasurable_and_none(self) -> None:
        """Screen lock, its delay, automatic updates, remote login and the agent version are unmeasurable on every computer."""
        computer = load("jamf/computers-inventory-page-0.json")["results"][0]

        record = parse_jamf_computer(computer, source="jamf:macs", received_at=NOW, max_future_skew=SKEW)

        assert isinstance(record, ConnectorRecord), record
        assert frozenset({"screen_lock_enabled", "screen_lock_delay_s", "auto_updates_enabled", "remote_login_enabled",
                          "agent_version"}) == record.snapshot.unmeasurable == JAMF_UNMEASURABLE
        assert {None} == {getattr(record.snapshot, fact) for fact in JAMF_UNMEASURABLE}


class TestDenial:
    async def test_a_fleet_fed_mac_is_told_fleet_does_not_report_its_screen_lock_delay(
        self, aiohttp_client: Any, serve: Serve, vendor: VendorState, tmp_path: Path
    ) -> None:
        """problem+json and the page say the screen lock delay was not checked because Fleet does not report it."""
        clock = MovableClock()
        keys = Keys(tmp_path / "keys")
        host = failing_fleet_host(clock())
        fix_fleet_host(host, clock())
        url = await serve(fleet_app(vendor, [host]))
        settings = connector_gatehouse(keys, tmp_path, kind="fleet", url=url, upstream=UNUSED_UPSTREAM, policy_text=LOCK_POLICY)
        client = await aiohttp_client(create_app(settings, clock=clock))
        for runner in client.app[CONNECTORS].values():
            assert "success" == await runner.sync_once()
        token = keys.token("ana@corp.example", device=FLEET_SERIAL, now=clock())

        response = await client.get("/public/", headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        body = await response.json()
        page = await (await client.get("/public/", headers={"Authorization": f"Bearer {token}", "Accept": "text/html"})).text()

        assert (403, "check-unmeasurable") == (response.status, body["code"])
        assert [("screen_lock_delay", True)] == [(f["check"], f["unmeasurable"]) for f in body["failing"]]
        assert "Fleet does not report it" in body["failing"][0]["message"]
        assert "Not checked: lock the screen sooner when idle" in page
        assert "Fleet does not report this setting" in page
        assert [] == [text for text in (str(body), page) if "did not report" in text]
