"""The Jamf Pro connector against its contract server: OAuth client credentials, inventory pages, facts."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from gateway.ingest.connectors import ConnectorError
from gateway.store.sqlite import SqliteStore
from policy_engine.model import Version
from tests.gateway.ingest.connectors.conftest import FakeSleep, MakeRunner
from tests.gateway.ingest.connectors.contract import Failure, VendorState
from tests.gateway.ingest.support import FakeClock

INVENTORY = "/api/v1/computers-inventory"


class TestPass:
    async def test_inventory_pages_become_snapshots(self, make_runner: MakeRunner, store: SqliteStore) -> None:
        """Serial, OS, FileVault of the boot partition, firewall, SIP, Gatekeeper and the report date are read."""
        runner = await make_runner("jamf")

        outcome = await runner.sync_once()

        mac = await store.latest("C02JAMF00001")
        assert "success" == outcome
        assert ("jamf:macs", Version.parse("14.6.1"), "23G93", True, True, True, True, "2026-11-22T11:05:00.123000+00:00") == (
            mac.source, mac.os_version, mac.os_build, mac.disk_encrypted, mac.firewall_enabled, mac.sip_enabled,  # type: ignore[union-attr]
            mac.gatekeeper_enabled, mac.collected_at.isoformat())  # type: ignore[union-attr]

    async def test_encrypting_and_not_collected_are_not_passes(self, make_runner: MakeRunner, store: SqliteStore) -> None:
        """A boot disk still encrypting is not encrypted; SIP not collected is not measured."""
        runner = await make_runner("jamf")

        await runner.sync_once()

        mac = await store.latest("C02JAMF00002")
        assert (False, None, False, False) == (mac.disk_encrypted, mac.sip_enabled, mac.gatekeeper_enabled, mac.firewall_enabled)  # type: ignore[union-attr]

    async def test_the_inventory_asks_for_the_sections_gatehouse_reads(self, make_runner: MakeRunner, vendor: VendorState) -> None:
        """Every inventory request names the six sections, pages by number and sorts by id."""
        runner = await make_runner("jamf")

        await runner.sync_once()

        queries = [q for _, p, q in vendor.requests if p == INVENTORY]
        assert ["page=0", "page=1"] == [next(part for part in q.split("&") if part.startswith("page=")) for q in queries]
        assert all("section=DISK_ENCRYPTION" in q and "section=USER_AND_LOCATION" in q and "sort=id:asc" in q for q in queries)

    async def test_the_assigned_user_becomes_the_owner(self, make_runner: MakeRunner, store: SqliteStore) -> None:
        """User and location's email is an inventory entry set by the connector."""
        runner = await make_runner("jamf")

        await runner.sync_once()

        assert ("ana@corp.example",) == (await store.owners("C02JAMF00001")).owners  # type: ignore[union-attr]

    async def test_a_computer_without_a_serial_is_logged(self, make_runner: MakeRunner) -> None:
        """The computer with an empty serial is rejected naming hardware.serialNumber."""
        runner = await make_runner("jamf")

        with capture_logs() as logs:
            await runner.sync_once()

        assert [("3", "hardware.serialNumber")] == [(e["ref"], e["field"]) for e in logs if e["event"] == "connector.record_rejected"]


class TestToken:
    async def test_the_token_is_renewed_before_it_expires(self, make_runner: MakeRunner, vendor: VendorState, clock: FakeClock) -> None:
        """A token with 299 s of life is reused within it and replaced once under a minute is left."""
        runner = await make_runner("jamf")
        await runner.sync_once()
        first = vendor.tokens_issued
        clock.advance(seconds=250)

        await runner.connector.fetch_page("", now=clock())

        assert (1, 2) == (first, vendor.tokens_issued)

    async def test_an_expired_token_is_renewed_and_the_request_retried(self, make_runner: MakeRunner, vendor: VendorState) -> None:
        """A 401 on the inventory gets a new token and the same page again, without failing the pass."""
        runner = await make_runner("jamf")
        vendor.fail(INVENTORY, Failure(401))

        outcome = await runner.sync_once()

        assert ("success", 2) == (outcome, vendor.tokens_issued)

    async def test_wrong_client_credentials_end_the_pass(self, make_runner: MakeRunner) -> None:
        """Credentials Jamf Pro refuses give an error naming them."""
        runner = await make_runner("jamf", client_secret={"value": "wrong"})

        with pytest.raises(ConnectorError, match="refused the credentials"):
            await runner.sync_once()


class TestFailures:
    async def test_429_and_5xx_are_waited_out(self, make_runner: MakeRunner, vendor: VendorState, sleep: FakeSleep) -> None:
        """A 429 waits its Retry-After, a 503 backs off, then the page is read."""
        vendor.fail(INVENTORY, Failure(429, retry_after="3"), Failure(503))
        runner = await make_runner("jamf")

        outcome = await runner.sync_once()

        assert ("success", [3.0, 2.0]) == (outcome, sleep.waits)

    async def test_a_vendor_down_on_every_try_keeps_the_last_good_snapshots(
        self, make_runner: MakeRunner, vendor: VendorState, store: SqliteStore
    ) -> None:
        """After a good pass, a pass meeting only 500s fails and the stored snapshots stay."""
        runner = await make_runner("jamf", attempts=2)
        await runner.sync_once()
        vendor.fail(INVENTORY, Failure(500), Failure(500))

        with pytest.raises(ConnectorError, match="500 server error"):
            await runner.sync_once()

        assert "jamf:macs" == (await store.latest("C02JAMF00001")).source  # type: ignore[union-attr]


class TestCheckAgain:
    async def test_refresh_reads_the_one_computer(self, make_runner: MakeRunner, vendor: VendorState, store: SqliteStore) -> None:
        """"Check again" asks the inventory for one serial and stores it."""
        runner = await make_runner("jamf")

        snapshot = await runner.refresh_device("C02JAMF00002")

        assert 'filter=hardware.serialNumber%3D%3D"C02JAMF00002"' in vendor.requests[-1][2]
        assert snapshot == await store.latest("C02JAMF00002")
