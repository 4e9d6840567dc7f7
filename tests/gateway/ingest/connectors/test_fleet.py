"""The Fleet connector against its contract server: pages, parsing, failures, owners, the lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from gateway.ingest.connectors import ConnectorError, parse_os_version
from gateway.store.base import OwnerSource, PutOutcome
from gateway.store.sqlite import SqliteStore
from policy_engine.model import OsFamily, Version
from tests.gateway.ingest.connectors.conftest import FakeSleep, MakeRunner
from tests.gateway.ingest.connectors.contract import Failure, VendorState
from tests.gateway.ingest.support import FakeClock
from tests.gateway.store.snapshots import make_snapshot


class TestOsVersion:
    @pytest.mark.parametrize(
        ("text", "platform", "expected"),
        [
            ("macOS 14.6.1", OsFamily.DARWIN, ("macOS", "14.6.1", "")),
            ("Ubuntu 24.04.1 LTS", OsFamily.LINUX, ("Ubuntu", "24.04.1", "")),
            ("Microsoft Windows 11 Enterprise 23H2 10.0.22631.3593", OsFamily.WINDOWS, ("Windows 11 Enterprise", "10.0.22631.3593", "22631")),
            ("CentOS Linux 8.3.2011", OsFamily.LINUX, ("CentOS Linux", "8.3.2011", "")),
        ],
    )
    def test_fleet_os_strings_parse_per_platform(self, text: str, platform: OsFamily, expected: tuple[str, str, str]) -> None:
        """Fleet's os_version text gives the OS name, the dotted version and (Windows) the build."""
        name, version, build = parse_os_version(text, platform)

        assert expected == (name, str(version), build)

    def test_text_without_a_version_has_none(self) -> None:
        """An os_version naming no number leaves the version not measured."""
        assert ("Arch Linux", None, "") == parse_os_version("Arch Linux", OsFamily.LINUX)


class TestPass:
    async def test_every_page_is_stored_with_the_source_and_mapped_facts(self, make_runner: MakeRunner, store: SqliteStore) -> None:
        """A pass walks every page by host id and stores each usable host as a `fleet:<name>` snapshot."""
        runner = await make_runner("fleet")

        outcome = await runner.sync_once()

        mac = await store.latest("C02FLEET0001")
        assert "success" == outcome
        assert ("fleet:corp", Version.parse("14.6.1"), True, True, False) == (
            mac.source, mac.os_version, mac.disk_encrypted, mac.firewall_enabled, mac.custom["screen_lock_5min"])  # type: ignore[union-attr]
        assert {"C02FLEET0001", "PF3UBUNTU002", "5CG0WIN00003", "VMCENTOS0004"} == {s.serial for s in (await store.load_latest()).snapshots}

    async def test_pages_are_asked_for_after_the_last_host_id(self, make_runner: MakeRunner, vendor: VendorState) -> None:
        """Pagination is keyset on the host id: each page asks for hosts after the last one stored."""
        runner = await make_runner("fleet")

        await runner.sync_once()

        afters = [dict(part.split("=") for part in q.split("&")).get("after") for _, p, q in vendor.requests if p == "/api/v1/fleet/hosts"]
        assert [None, "2", "4", "6"] == afters

    async def test_a_policy_not_run_yet_is_not_measured(self, make_runner: MakeRunner, store: SqliteStore) -> None:
        """An empty policy response leaves the mapped fact unknown, and the host field stays what Fleet said."""
        runner = await make_runner("fleet")

        await runner.sync_once()

        ubuntu = await store.latest("PF3UBUNTU002")
        assert (None, False, "ubuntu") == (ubuntu.firewall_enabled, ubuntu.disk_encrypted, ubuntu.distribution)  # type: ignore[union-attr]

    async def test_rejected_hosts_are_logged_with_serial_and_field(self, make_runner: MakeRunner) -> None:
        """A host without a serial and an iPad are not stored; each is logged naming the serial and the field."""
        runner = await make_runner("fleet")

        with capture_logs() as logs:
            await runner.sync_once()

        rejected = {(e["serial"], e["field"]) for e in logs if e["event"] == "connector.record_rejected"}
        assert {("", "hardware_serial"), ("DMPIPAD00006", "platform")} == rejected

    async def test_owners_set_by_admins_enter_the_inventory_and_chrome_profiles_do_not(self, make_runner: MakeRunner, store: SqliteStore) -> None:
        """A custom device mapping becomes an inventory entry; a Chrome profile email stays on the snapshot only."""
        runner = await make_runner("fleet")

        await runner.sync_once()

        mac, ubuntu = await store.owners("C02FLEET0001"), await store.owners("PF3UBUNTU002")
        assert (("ana@corp.example",), OwnerSource.CONNECTOR, "connector:corp") == (mac.owners, mac.source, mac.set_by)  # type: ignore[union-attr]
        assert (None, ("bo@corp.example",)) == (ubuntu, (await store.latest("PF3UBUNTU002")).owners)  # type: ignore[union-attr]

    async def test_an_operators_own_entry_wins_over_the_connector(self, make_runner: MakeRunner, store: SqliteStore, clock: FakeClock) -> None:
        """A serial the operator assigned keeps the operator's owners."""
        from gateway.store.base import OwnerEdit, OwnerEditMode

        await store.edit_owners([OwnerEdit("C02FLEET0001", ("boss@corp.example",), OwnerEditMode.REPLACE, "cli:ops", clock(), OwnerSource.CLI)])
        runner = await make_runner("fleet")

        await runner.sync_once()

        assert ("boss@corp.example",) == (await store.owners("C02FLEET0001")).owners  # type: ignore[union-attr]


class TestFailures:
    async def test_429_waits_retry_after_then_continues(self, make_runner: MakeRunner, vendor: VendorState, sleep: FakeSleep, store: SqliteStore) -> None:
        """A 429 with Retry-After is waited out (through the injected sleep) and the page asked again."""
        vendor.fail("/api/v1/fleet/hosts", Failure(429, retry_after="7"))
        runner = await make_runner("fleet")

        outcome = await runner.sync_once()

        assert ("success", [7.0]) == (outcome, sleep.waits)

    async def test_5xx_and_timeouts_back_off_then_succeed(self, make_runner: MakeRunner, vendor: VendorState, sleep: FakeSleep) -> None:
        """A 502 and a timeout are retried after 1 s then 2 s."""
        vendor.fail("/api/v1/fleet/hosts", Failure(502), Failure(0, hang=True))
        runner = await make_runner("fleet")

        outcome = await runner.sync_once()

        assert ("success", [1.0, 2.0]) == (outcome, sleep.waits)

    async def test_a_pass_that_fails_keeps_what_it_stored_and_resumes_from_the_cursor(
        self, make_runner: MakeRunner, store: SqliteStore
    ) -> None:
        """When the second page fails after its retries, page 1 stays stored and the saved cursor is after host 2."""
        runner = await make_runner("fleet")
        original = runner.connector.fetch_page
        calls = 0

        async def fail_second(cursor: str, *, now):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 2:
                raise ConnectorError("Fleet failed `GET /api/v1/fleet/hosts` 2 times, last: 503 server error")
            return await original(cursor, now=now)

        runner.connector.fetch_page = fail_second  # type: ignore[method-assign]
        with pytest.raises(ConnectorError):
            await runner.sync_once()
        claim = await store.claim_connector("corp", "replica-a", now=runner._clock(), lease_s=60)  # type: ignore[attr-defined]

        assert ("2", "fleet:corp") == (claim.state.cursor, (await store.latest("PF3UBUNTU002")).source)  # type: ignore[union-attr]

    async def test_a_revoked_token_ends_the_pass_with_a_message(self, make_runner: MakeRunner) -> None:
        """Fleet's API token cannot be renewed: a 401 after the retry names the token to check."""
        runner = await make_runner("fleet", api_token={"value": "revoked"})

        with pytest.raises(ConnectorError, match="refused the credentials"):
            await runner.sync_once()


class TestReplicas:
    async def test_a_second_replica_waits_while_the_first_holds_the_lease(self, make_runner: MakeRunner, vendor: VendorState) -> None:
        """Two replicas polling the same connector: only the lease holder asks Fleet."""
        first = await make_runner("fleet", holder="replica-a")
        second = await make_runner("fleet", holder="replica-b", url=first.connector._http.base_url)  # type: ignore[attr-defined]
        await first.sync_once()
        asked = len(vendor.requests)

        outcome = await second.sync_once()

        assert ("lease-held-elsewhere", asked) == (outcome, len(vendor.requests))

    async def test_a_replica_taking_over_continues_from_the_stored_cursor(
        self, make_runner: MakeRunner, vendor: VendorState, store: SqliteStore, clock: FakeClock
    ) -> None:
        """When the holder stops after page 1, the next replica (after the lease lapses) asks for hosts after 2."""
        first = await make_runner("fleet", holder="replica-a")
        await store.claim_connector("corp", "replica-a", now=clock(), lease_s=600)
        await store.save_connector_state("corp", "replica-a", cursor="2", last_success_at=None, now=clock(), lease_s=600)
        second = await make_runner("fleet", holder="replica-b", url=first.connector._http.base_url)  # type: ignore[attr-defined]
        clock.advance(seconds=601)

        await second.sync_once()

        assert "after=2" in next(q for _, p, q in vendor.requests if p == "/api/v1/fleet/hosts")


class TestSources:
    async def test_osquery_and_fleet_both_report_and_the_newest_collection_counts(self, make_runner: MakeRunner, store: SqliteStore) -> None:
        """A device also reporting through osquery keeps whichever snapshot was collected last, whatever its source."""
        fleet_time = datetime(2026, 11, 22, 13, 5, tzinfo=UTC)  # the fixture's detail_updated_at
        await store.put_snapshots([make_snapshot("C02FLEET0001", collected_at=fleet_time + timedelta(minutes=30), source="osquery")])
        runner = await make_runner("fleet")

        await runner.sync_once()
        after_fleet = (await store.latest("C02FLEET0001")).source  # type: ignore[union-attr]
        later = await store.put_snapshots([make_snapshot("C02FLEET0001", collected_at=fleet_time + timedelta(hours=1), source="osquery")])

        assert ("osquery", PutOutcome.STORED) == (after_fleet, later[0])


class TestCheckAgain:
    async def test_refresh_refetches_the_host_and_stores_it(self, make_runner: MakeRunner, vendor: VendorState, store: SqliteStore) -> None:
        """"Check again" finds the host by serial, asks Fleet to refetch it, and stores what Fleet has."""
        runner = await make_runner("fleet")

        snapshot = await runner.refresh_device("5CG0WIN00003")

        assert ("POST", "/api/v1/fleet/hosts/3/refetch") in [(m, p) for m, p, _ in vendor.requests]
        assert snapshot == await store.latest("5CG0WIN00003")

    async def test_refresh_of_an_unknown_serial_stores_nothing(self, make_runner: MakeRunner) -> None:
        """A serial Fleet does not know gives None."""
        runner = await make_runner("fleet")

        assert None is await runner.refresh_device("NOT-IN-FLEET")
