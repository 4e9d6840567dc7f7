"""osquery's TLS remote API over real HTTP: every fixture payload shape osqueryd sends."""

from __future__ import annotations

import copy
import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from gateway.ingest import osquery
from gateway.store.base import HostDetails
from policy_engine.model import OsFamily, Version
from tests.gateway.ingest.conftest import Ingest
from tests.gateway.ingest.support import fixture

FIXTURE_NODE_KEY = "nk_3f9c2a7e5b1d4c8e9a0f6b2d7c4e1a93"


async def enroll(ingest: Ingest, name: str = "enroll_request_linux.json") -> str:
    response = await ingest.client.post("/.gatehouse/osquery/enroll", json=fixture(name))
    body = await response.json()
    assert 200 == response.status
    return str(body["node_key"])


def with_key(payload: dict[str, Any], node_key: str) -> dict[str, Any]:
    """A fixture payload carrying our node key instead of the fixture's."""
    out = copy.deepcopy(payload)
    out["node_key"] = node_key
    return out


async def post(ingest: Ingest, endpoint: str, payload: object, **kwargs: Any) -> Any:
    response = await ingest.client.post(f"/.gatehouse/osquery/{endpoint}", json=payload, **kwargs)
    assert 200 == response.status, await response.text()
    return await response.json()


class TestEnroll:
    @pytest.mark.parametrize("name,serial", [("enroll_request_linux.json", "PF3ABCDE"), ("enroll_request_macos.json", "C02XK0AAJGH6")])
    async def test_good_secret_gets_a_node_key(self, ingest: Ingest, name: str, serial: str) -> None:
        """An agent with the enroll secret and a real serial gets a fresh node key bound to its serial."""
        node_key = await enroll(ingest, name)

        enrollment = await ingest.store.enrollment_by_node_key(node_key)

        assert serial == enrollment.serial  # type: ignore[union-attr]
        assert node_key.startswith("nk_") and len(node_key) > 40
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_osquery_enrollments_total", {"outcome": "enrolled"})

    async def test_host_details_are_kept(self, ingest: Ingest) -> None:
        """OS, hostname and agent version from host_details are kept with the enrollment."""
        node_key = await enroll(ingest, "enroll_request_macos.json")

        enrollment = await ingest.store.enrollment_by_node_key(node_key)

        assert HostDetails("bobs-mbp.local", "darwin", "darwin", "macOS", "15.6.0", "24G84", "5.23.1") == enrollment.details  # type: ignore[union-attr]

    async def test_wrong_secret_is_node_invalid(self, ingest: Ingest) -> None:
        """A wrong enroll secret gets exactly the rejected-enroll answer and stores nothing."""
        payload = fixture("enroll_request_linux.json")
        payload["enroll_secret"] = "guess"

        body = await post(ingest, "enroll", payload)

        assert fixture("enroll_response_rejected.json") == body
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_osquery_enrollments_total", {"outcome": "bad-secret"})

    @pytest.mark.parametrize("serial", ["0", "To Be Filled By O.E.M.", "System Serial Number", "Default string", "", "   ", None])
    async def test_placeholder_serial_is_refused(self, ingest: Ingest, serial: str | None) -> None:
        """Empty and vendor-placeholder serials never become a device identity."""
        payload = fixture("enroll_request_linux.json")
        payload["host_details"]["system_info"]["hardware_serial"] = serial

        body = await post(ingest, "enroll", payload)

        assert {"node_invalid": True} == body
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_osquery_enrollments_total", {"outcome": "bad-serial"})

    @pytest.mark.parametrize("serial", ["PF3\x00ABCDE", "PF3ABCDE\nforged: line", "PF3\tABCDE", "C02XK0AAJG" * 1_000])
    async def test_serial_the_api_refuses_is_refused(self, ingest: Ingest, serial: str) -> None:
        """Enroll applies the JSON API's serial rule: NUL, newline and other control characters, or over 128 characters, are refused."""
        payload = fixture("enroll_request_linux.json")
        payload["host_details"]["system_info"]["hardware_serial"] = serial

        body = await post(ingest, "enroll", payload)

        assert {"node_invalid": True} == body
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_osquery_enrollments_total", {"outcome": "bad-serial"})

    async def test_second_secret_allows_rotation(self, ingest: Ingest) -> None:
        """Every configured enroll secret is accepted."""
        payload = fixture("enroll_request_linux.json")
        payload["enroll_secret"] = "old-secret"

        body = await post(ingest, "enroll", payload)

        assert "node_key" in body


class TestNodeKey:
    async def test_config_by_body_node_key(self, ingest: Ingest) -> None:
        """Older agents send the node key in the body; the config has the pack and the serial decorator."""
        node_key = await enroll(ingest)

        body = await post(ingest, "config", with_key(fixture("config_request.json"), node_key))

        assert False is body["node_invalid"]
        assert "SELECT hardware_serial FROM system_info;" in body["decorators"]["load"]
        assert {"zt_os_version", "zt_disk_encryption_linux", "zt_firewall_darwin", "zt_sip", "zt_gatekeeper"} <= set(body["schedule"])
        assert 300 == body["schedule"]["zt_firewall_darwin"]["interval"]
        assert 3600 == body["schedule"]["zt_os_version"]["interval"]

    async def test_config_by_authorization_header(self, ingest: Ingest) -> None:
        """osquery 5.23 sends `Authorization: NodeKey <key>`; the body may lack node_key."""
        node_key = await enroll(ingest)

        body = await post(ingest, "config", {}, headers={"Authorization": f"NodeKey {node_key}"})

        assert "schedule" in body

    @pytest.mark.parametrize("endpoint", ["config", "log", "distributed/read", "distributed/write"])
    async def test_unknown_node_key_is_node_invalid(self, ingest: Ingest, endpoint: str) -> None:
        """An unknown node key makes the agent re-enroll, on every endpoint."""
        body = await post(ingest, endpoint, fixture("log_status.json") if endpoint == "log" else {"node_key": FIXTURE_NODE_KEY})

        assert {"node_invalid": True} == body

    async def test_revoked_node_key_is_node_invalid(self, ingest: Ingest) -> None:
        """After its device's enrollments are revoked a node key is refused."""
        node_key = await enroll(ingest)
        await ingest.store.revoke_enrollments("PF3ABCDE", now=ingest.clock())

        body = await post(ingest, "config", {"node_key": node_key})

        assert {"node_invalid": True} == body

    @pytest.mark.parametrize("endpoint", ["config", "log", "distributed/read", "distributed/write"])
    async def test_enrollment_with_a_serial_the_rule_refuses_is_node_invalid(self, ingest: Ingest, endpoint: str) -> None:
        """A node key enrolled with a serial today's rule refuses (NUL) is refused everywhere, so the agent enrolls again and is refused."""
        await ingest.store.create_enrollment(
            node_key="nk_legacy", serial="PF3\x00ABCDE", host_identifier="lt-alice-01", details=HostDetails(hostname="lt-alice-01"), now=ingest.clock()
        )
        payload = with_key(fixture("log_result_snapshot.json"), "nk_legacy") if endpoint == "log" else {"node_key": "nk_legacy"}

        body = await post(ingest, endpoint, payload)

        assert {"node_invalid": True} == body
        assert 0 == len(ingest.cache)

    async def test_missing_node_key_is_node_invalid(self, ingest: Ingest) -> None:
        """No node key at all is the same as an unknown one."""
        assert {"node_invalid": True} == await post(ingest, "config", {})


class TestResultLogs:
    async def test_snapshot_record_fills_os_facts_and_leaves_others_unknown(self, ingest: Ingest) -> None:
        """A `snapshot` os_version result gives platform, OS and version; unreported facts stay None."""
        node_key = await enroll(ingest)

        await post(ingest, "log", with_key(fixture("log_result_snapshot.json"), node_key))
        held = ingest.cache.get("PF3ABCDE")

        assert held is not None
        assert (OsFamily.LINUX, "Ubuntu", "ubuntu", Version.parse("24.4")) == (held.platform, held.os_name, held.distribution, held.os_version)
        assert "24.04.4 LTS (Noble Numbat)" == held.os_version.text  # type: ignore[union-attr]
        assert datetime.fromtimestamp(1795356304, UTC) == held.collected_at
        assert ("osquery", "osquery", Version.parse("5.23.1")) == (held.source, held.agent_name, held.agent_version)
        assert (None, None, None, None) == (held.disk_encrypted, held.firewall_enabled, held.screen_lock_enabled, held.remote_login_enabled)
        assert held == await ingest.store.latest("PF3ABCDE")

    async def test_snapshot_event_rows_of_one_run_form_one_snapshot(self, ingest: Ingest) -> None:
        """With `--logger_snapshot_event_type` every row of a run is its own line: SSH on one row and VNC on another are both kept."""
        node_key = await enroll(ingest)

        await post(ingest, "log", with_key(fixture("log_result_snapshot_events.json"), node_key))
        held = ingest.cache.get("PF3ABCDE")

        assert (True, True) == (held.remote_login_enabled, held.custom["screen_sharing_enabled"])  # type: ignore[union-attr]
        assert {"22", "5900"} == {r["port"] for r in (await ingest.store.query_results("PF3ABCDE"))["zt_listening_ports"].rows}

    @pytest.mark.parametrize("order", [(0, 1), (1, 0)])
    async def test_snapshot_event_rows_spanning_two_requests_form_one_snapshot(self, ingest: Ingest, order: tuple[int, int]) -> None:
        """Rows of one run (same unixTime) sent in two log requests, in either order, add up to one snapshot."""
        node_key = await enroll(ingest)
        rows = fixture("log_result_snapshot_events.json")["data"]

        for index in order:
            await post(ingest, "log", {"node_key": node_key, "log_type": "result", "data": [rows[index]]})
        held = ingest.cache.get("PF3ABCDE")

        assert (True, True) == (held.remote_login_enabled, held.custom["screen_sharing_enabled"])  # type: ignore[union-attr]

    async def test_snapshot_event_rows_of_a_newer_run_replace_and_of_an_older_run_are_ignored(self, ingest: Ingest) -> None:
        """A newer run's rows replace the older run's (SSH closed), and a late row of the older run does not bring SSH back."""
        node_key = await enroll(ingest)
        ssh, vnc = fixture("log_result_snapshot_events.json")["data"]
        await post(ingest, "log", {"node_key": node_key, "log_type": "result", "data": [ssh, vnc]})
        newer_vnc = {**vnc, "unixTime": vnc["unixTime"] + 300, "calendarTime": "Sun Nov 22 14:25:00 2026 UTC"}

        await post(ingest, "log", {"node_key": node_key, "log_type": "result", "data": [newer_vnc]})
        after_newer = ingest.cache.get("PF3ABCDE")
        await post(ingest, "log", {"node_key": node_key, "log_type": "result", "data": [ssh]})
        after_late = ingest.cache.get("PF3ABCDE")

        assert (False, True) == (after_newer.remote_login_enabled, after_newer.custom["screen_sharing_enabled"])  # type: ignore[union-attr]
        assert after_newer == after_late
        assert [vnc["columns"]] == list((await ingest.store.query_results("PF3ABCDE"))["zt_listening_ports"].rows)

    async def test_event_format_applies_added_and_removed_rows(self, ingest: Ingest) -> None:
        """Event-format rows are applied as a diff: an encrypted volume replaced by a plain one is unencrypted."""
        node_key = await enroll(ingest)
        encrypted = fixture("log_result_event_differential.json")["data"][0]
        encrypted = {**encrypted, "action": "added", "unixTime": 1795356000}
        await post(ingest, "log", {"node_key": node_key, "log_type": "result", "data": [encrypted]})
        before = ingest.cache.get("PF3ABCDE")

        await post(ingest, "log", with_key(fixture("log_result_event_differential.json"), node_key))
        after = ingest.cache.get("PF3ABCDE")

        assert True is before.disk_encrypted  # type: ignore[union-attr]
        assert (False, False, True) == (after.disk_encrypted, after.remote_login_enabled, after.custom["screen_sharing_enabled"])  # type: ignore[union-attr]
        assert datetime.fromtimestamp(1795356902, UTC) == after.collected_at  # type: ignore[union-attr]

    async def test_batched_diff_results(self, ingest: Ingest) -> None:
        """`diffResults` batches (removed, then added) give the volume set after both runs."""
        node_key = await enroll(ingest)

        await post(ingest, "log", with_key(fixture("log_result_batched_differential.json"), node_key))
        rows = (await ingest.store.query_results("PF3ABCDE"))["zt_disk_encryption"].rows

        assert [("/dev/nvme0n1p3", "0"), ("/dev/sda1", "0")] == sorted((r["name"], r["encrypted"]) for r in rows)
        assert False is ingest.cache.get("PF3ABCDE").disk_encrypted  # type: ignore[union-attr]

    async def test_replayed_batch_changes_nothing(self, ingest: Ingest) -> None:
        """An agent retrying a batch already stored leaves the same rows and no new snapshot."""
        node_key = await enroll(ingest)
        payload = with_key(fixture("log_result_batched_differential.json"), node_key)
        await post(ingest, "log", payload)
        first = await ingest.store.load_latest()

        await post(ingest, "log", payload)
        second = await ingest.store.load_latest()

        assert first == second

    async def test_top_level_decorations_string_numbers_and_hostname(self, ingest: Ingest) -> None:
        """Older agents' shape (string numbers, `hostname`, top-level decorations, numeric columns) reads the same."""
        node_key = await enroll(ingest)
        payload = with_key(fixture("log_result_snapshot.json"), node_key)
        item = payload["data"][0]
        item.update(item.pop("decorations"))
        item["hostname"] = item.pop("hostIdentifier")
        item["unixTime"] = str(item["unixTime"])
        item["numerics"] = True
        item["snapshot"][0]["major"] = 24

        await post(ingest, "log", payload)
        held = ingest.cache.get("PF3ABCDE")

        assert (Version.parse("24.4"), datetime.fromtimestamp(1795356304, UTC)) == (held.os_version, held.collected_at)  # type: ignore[union-attr]

    async def test_gzip_body(self, ingest: Ingest) -> None:
        """`--logger_tls_compress` bodies (Content-Encoding: gzip) are read."""
        node_key = await enroll(ingest)
        body = gzip.compress(orjson.dumps(with_key(fixture("log_result_snapshot.json"), node_key)))

        response = await ingest.client.post(
            "/.gatehouse/osquery/log", data=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

        assert 200 == response.status
        assert "Ubuntu" == ingest.cache.get("PF3ABCDE").os_name  # type: ignore[union-attr]

    async def test_gzip_bomb_is_413_naming_the_limit(self, ingest: Ingest) -> None:
        """A compressed log that inflates past `ingest.max_body_bytes` is a 413 naming the limit; the agent keeps its lines."""
        node_key = await enroll(ingest)
        bomb = gzip.compress(orjson.dumps({"node_key": node_key, "log_type": "status", "data": [{"message": " " * (1024 * 1024)}]}))

        response = await ingest.client.post("/.gatehouse/osquery/log", data=bomb, headers={"Content-Encoding": "gzip"})

        assert 413 == response.status
        assert "`ingest.max_body_bytes`" in (await response.json())["detail"]

    async def test_status_log_is_acknowledged_and_warnings_logged(self, ingest: Ingest) -> None:
        """Status lines are acknowledged; warnings and errors are logged, info lines are not."""
        node_key = await enroll(ingest)

        with capture_logs() as logs:
            body = await post(ingest, "log", with_key(fixture("log_status.json"), node_key))

        assert {"node_invalid": False} == body
        assert ["warning", "error"] == [e["severity"] for e in logs if e["event"] == "osquery.agent_reported"]
        assert None is ingest.cache.get("PF3ABCDE")

    async def test_malformed_item_is_skipped_and_good_items_kept(self, ingest: Ingest) -> None:
        """A line in no known shape is dropped and counted; the other lines of the request are applied."""
        node_key = await enroll(ingest)
        payload = with_key(fixture("log_result_snapshot.json"), node_key)
        payload["data"].insert(0, {"name": "zt_weird", "columns": "not rows"})

        await post(ingest, "log", payload)

        assert "Ubuntu" == ingest.cache.get("PF3ABCDE").os_name  # type: ignore[union-attr]
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_snapshot_ingests_total", {"source": "osquery", "outcome": "rejected"})

    async def test_serial_comes_from_the_enrollment_not_decorations(self, ingest: Ingest) -> None:
        """Decorations cannot move results onto another device."""
        node_key = await enroll(ingest)
        payload = with_key(fixture("log_result_snapshot.json"), node_key)
        payload["data"][0]["decorations"]["hardware_serial"] = "SOMEONE-ELSE"

        with capture_logs() as logs:
            await post(ingest, "log", payload)

        assert (None, True) == (ingest.cache.get("SOMEONE-ELSE"), ingest.cache.get("PF3ABCDE") is not None)
        assert ["osquery.serial_mismatch"] == [e["event"] for e in logs if e["event"] == "osquery.serial_mismatch"]

    async def test_oversize_body_is_413(self, ingest: Ingest) -> None:
        """A log body over max_body_bytes is refused with 413."""
        node_key = await enroll(ingest)
        payload = with_key(fixture("log_result_snapshot.json"), node_key)
        payload["padding"] = "x" * (300 * 1024)

        response = await ingest.client.post("/.gatehouse/osquery/log", json=payload)

        assert 413 == response.status

    async def test_results_arriving_late_still_update_the_snapshot(self, ingest: Ingest) -> None:
        """A result older than the snapshot's time still updates its own fact, stored just after the previous one."""
        node_key = await enroll(ingest)
        await post(ingest, "log", with_key(fixture("log_result_event_differential.json"), node_key))
        previous = ingest.cache.get("PF3ABCDE")
        late = fixture("log_result_snapshot.json")
        late["data"][0].update(name="zt_firewall_linux", snapshot=[{"enabled": "1"}])

        await post(ingest, "log", with_key(late, node_key))
        held = ingest.cache.get("PF3ABCDE")

        assert (None, True, False) == (previous.firewall_enabled, held.firewall_enabled, held.disk_encrypted)  # type: ignore[union-attr]
        assert previous.collected_at + timedelta(milliseconds=1) == held.collected_at  # type: ignore[union-attr]


    async def test_result_dated_ahead_is_refused_and_later_reports_count(self, ingest: Ingest) -> None:
        """A result dated ten years ahead is refused like the JSON API's (ingest.max_future_skew_s); the device's correct reports still replace each other."""
        node_key = await enroll(ingest)
        ahead = fixture("log_result_snapshot.json")
        ahead["data"][0]["unixTime"] = int((ingest.clock() + timedelta(days=3652)).timestamp())
        ahead["data"][0]["snapshot"][0]["minor"] = "10"
        first = fixture("log_result_snapshot.json")
        later = fixture("log_result_snapshot.json")
        later["data"][0]["unixTime"] = first["data"][0]["unixTime"] + 300
        later["data"][0]["snapshot"][0]["minor"] = "10"

        with capture_logs() as logs:
            await post(ingest, "log", with_key(ahead, node_key))
        await post(ingest, "log", with_key(first, node_key))
        await post(ingest, "log", with_key(later, node_key))

        held = ingest.cache.get("PF3ABCDE")
        assert ["osquery.result_refused"] == [e["event"] for e in logs if e["event"] == "osquery.result_refused"]
        assert "in the future" in next(e["detail"] for e in logs if e["event"] == "osquery.result_refused")
        assert (Version.parse("24.10"), datetime.fromtimestamp(later["data"][0]["unixTime"], UTC)) == (held.os_version, held.collected_at)  # type: ignore[union-attr]
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_snapshot_ingests_total", {"source": "osquery", "outcome": "rejected"})


class TestDistributed:
    async def test_nothing_pending_reads_empty(self, ingest: Ingest) -> None:
        """Without a refresh request the agent gets no queries and no acceleration."""
        node_key = await enroll(ingest)

        body = await post(ingest, "distributed/read", with_key(fixture("distributed_read_request.json"), node_key))

        assert {"queries": {}, "node_invalid": False} == body

    async def test_refresh_round_trip_updates_the_snapshot(self, ingest: Ingest) -> None:
        """A "check again" queues the device's posture queries; the agent's answers update its snapshot at once."""
        node_key = await enroll(ingest)
        await post(ingest, "log", with_key(fixture("log_result_snapshot.json"), node_key))
        pack = osquery.pack_for(ingest.client.app[osquery_settings_key()])
        await ingest.store.add_pending_queries(osquery.refresh_queries("PF3ABCDE", OsFamily.LINUX, pack, now=ingest.clock()))

        read = await post(ingest, "distributed/read", with_key(fixture("distributed_read_request.json"), node_key))
        firewall_id = next(q for q in read["queries"] if q.endswith("zt_firewall_linux"))
        ingest.clock.advance(minutes=1)
        write = with_key(fixture("distributed_write_request.json"), node_key)
        write["queries"] = {firewall_id: [{"enabled": "1"}]}
        write["statuses"] = {firewall_id: 0}
        await post(ingest, "distributed/write", write)

        assert 120 == read["accelerate"]
        assert all(not q.endswith("_darwin") and not q.endswith("_windows") for q in read["queries"])
        assert (True, ingest.clock()) == (ingest.cache.get("PF3ABCDE").firewall_enabled, ingest.cache.get("PF3ABCDE").collected_at)  # type: ignore[union-attr]
        remaining = await ingest.store.pending_queries("PF3ABCDE")
        assert firewall_id not in {q.query_id for q in remaining} and len(remaining) == len(read["queries"]) - 1

    async def test_fixture_write_answers_a_queued_adhoc_query(self, ingest: Ingest) -> None:
        """The fixture's ad-hoc disk query, queued for the disk fact, is applied and then forgotten."""
        node_key = await enroll(ingest)
        read_fixture = fixture("distributed_read_response.json")
        (query_id, sql), = read_fixture["queries"].items()
        from gateway.store.base import PendingQuery

        await ingest.store.add_pending_queries([PendingQuery(query_id, "PF3ABCDE", "zt_disk_encryption", sql, ingest.clock())])
        read = await post(ingest, "distributed/read", {"node_key": node_key})
        await post(ingest, "distributed/write", with_key(fixture("distributed_write_request.json"), node_key))

        assert read_fixture["queries"] == read["queries"]
        assert True is ingest.cache.get("PF3ABCDE").disk_encrypted  # type: ignore[union-attr]
        assert () == await ingest.store.pending_queries("PF3ABCDE")

    async def test_failed_query_is_forgotten_without_changing_facts(self, ingest: Ingest) -> None:
        """A query the agent could not run (status not 0) is dropped and sets no fact."""
        node_key = await enroll(ingest)
        from gateway.store.base import PendingQuery

        await ingest.store.add_pending_queries([PendingQuery("zt-adhoc-1a2b", "PF3ABCDE", "zt_disk_encryption", "SELECT 1;", ingest.clock())])
        write = with_key(fixture("distributed_write_request.json"), node_key)
        write["statuses"]["zt-adhoc-1a2b"] = 1

        await post(ingest, "distributed/write", write)

        assert (None, ()) == (ingest.cache.get("PF3ABCDE"), await ingest.store.pending_queries("PF3ABCDE"))


def osquery_settings_key() -> Any:
    from gateway.keys import INGEST_SETTINGS

    return INGEST_SETTINGS


class TestStoreFailure:
    async def test_log_is_503_when_the_store_fails(self, ingest: Ingest) -> None:
        """If the store cannot commit, the agent gets a 5xx and keeps its buffered results to retry."""
        node_key = await enroll(ingest)
        await ingest.store.close()

        response = await ingest.client.post("/.gatehouse/osquery/log", json=with_key(fixture("log_result_snapshot.json"), node_key))

        assert 503 == response.status

    async def test_results_of_other_packs_are_not_kept(self, ingest: Ingest) -> None:
        """Only posture (zt_) queries are kept per device; the operator's other queries are acknowledged and dropped."""
        node_key = await enroll(ingest)
        payload = with_key(fixture("log_result_snapshot.json"), node_key)
        payload["data"][0]["name"] = "pack_it_processes"

        await post(ingest, "log", payload)

        assert ({}, None) == (dict(await ingest.store.query_results("PF3ABCDE")), ingest.cache.get("PF3ABCDE"))
