"""osquery results to facts, without HTTP: every platform's posture queries, custom facts, odd input."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ingest import osquery
from gateway.ingest.snapshot_parse import ItemError, parse_snapshot_item
from gateway.store.base import Enrollment, HostDetails, QueryResult
from policy_engine.model import OsFamily, Version
from tests.gateway.ingest.support import ingest_settings

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
MAC = Enrollment("h", "C02XK0AAJGH6", "bobs-mbp", NOW, HostDetails(hostname="bobs-mbp", platform="darwin", os_name="macOS", os_version="15.6", agent_version="5.23.1"))
WIN = Enrollment("h", "5CG1234XYZ", "DESKTOP-1", NOW, HostDetails(hostname="DESKTOP-1", platform="windows", os_name="Microsoft Windows 11 Pro", os_version="10.0.22631"))


def results(**rows: list[dict[str, str]]) -> dict[str, QueryResult]:
    return {name: QueryResult(tuple(r), NOW - timedelta(minutes=i)) for i, (name, r) in enumerate(rows.items())}


class TestFactName:
    @pytest.mark.parametrize(
        "query,fact",
        [("zt_firewall_linux", "firewall"), ("pack_gatehouse_zt_sip", "sip"), ("zt_custom_thing", "custom_thing"), ("processes", None), ("zt_", None)],
    )
    def test_names_map_to_facts(self, query: str, fact: str | None) -> None:
        """The name from `zt_` on, without a platform suffix, names the fact."""
        assert fact == osquery.fact_name(query)


class TestAssembleSnapshot:
    def test_macos_pack_results(self) -> None:
        """The macOS posture queries fill every macOS fact."""
        snapshot = osquery.assemble_snapshot(
            MAC,
            results(
                zt_os_version=[{"name": "macOS", "version": "15.6", "major": "15", "minor": "6", "patch": "0", "build": "24G84", "platform": "darwin"}],
                zt_firewall_darwin=[{"enabled": "1"}],
                zt_disk_encryption_darwin=[{"enabled": "1"}],
                zt_screen_lock_darwin=[{"enabled": "1", "delay_s": "305"}],
                zt_remote_login_darwin=[{"enabled": "0"}],
                zt_auto_updates_darwin=[{"enabled": "1"}],
                zt_sip=[{"config_flag": "sip", "enabled": "1"}],
                zt_gatekeeper=[{"enabled": "0"}],
            ),
            received_at=NOW,
            owners=("bob@example.com",),
        )

        assert snapshot is not None
        assert (OsFamily.DARWIN, "macOS", Version.parse("15.6"), "24G84", "", NOW) == (
            snapshot.platform, snapshot.os_name, snapshot.os_version, snapshot.os_build, snapshot.distribution, snapshot.collected_at)
        assert (True, True, True, 305, False, True, True, False) == (
            snapshot.firewall_enabled, snapshot.disk_encrypted, snapshot.screen_lock_enabled, snapshot.screen_lock_delay_s,
            snapshot.remote_login_enabled, snapshot.auto_updates_enabled, snapshot.sip_enabled, snapshot.gatekeeper_enabled)
        assert (("bob@example.com",), Version.parse("5.23.1")) == (snapshot.owners, snapshot.agent_version)

    def test_windows_version_includes_the_build(self) -> None:
        """Windows' os_version gives 10.0.<build>, so builds compare."""
        snapshot = osquery.assemble_snapshot(
            WIN,
            results(zt_os_version=[{"name": "Microsoft Windows 11 Pro", "version": "10.0.22631", "major": "10", "minor": "0", "patch": "", "build": "22631", "platform": "windows"}],
                    zt_firewall_windows=[{"enabled": "0"}]),
            received_at=NOW,
        )

        assert (OsFamily.WINDOWS, Version.parse("10.0.22631"), False) == (snapshot.platform, snapshot.os_version, snapshot.firewall_enabled)  # type: ignore[union-attr]

    def test_only_host_details_before_the_os_query(self) -> None:
        """Before zt_os_version reports, platform and version come from the enroll host details."""
        snapshot = osquery.assemble_snapshot(MAC, results(zt_firewall_darwin=[{"enabled": "1"}]), received_at=NOW)

        assert (OsFamily.DARWIN, "macOS", Version.parse("15.6"), None) == (snapshot.platform, snapshot.os_name, snapshot.os_version, snapshot.disk_encrypted)  # type: ignore[union-attr]

    def test_no_results_no_snapshot(self) -> None:
        """A device that reported nothing has no snapshot yet."""
        assert None is osquery.assemble_snapshot(MAC, results(other_query=[{"x": "1"}]), received_at=NOW)

    def test_empty_or_unreadable_rows_leave_facts_unknown(self) -> None:
        """No rows, or a value that is not a truth value, is None rather than a guess."""
        snapshot = osquery.assemble_snapshot(MAC, results(zt_firewall_darwin=[], zt_gatekeeper=[{"enabled": "maybe"}]), received_at=NOW)

        assert (None, None) == (snapshot.firewall_enabled, snapshot.gatekeeper_enabled)  # type: ignore[union-attr]

    def test_unknown_queries_become_typed_custom_facts(self) -> None:
        """A new zt_ query needs no code: one column names the fact, several are fact.column, values typed."""
        snapshot = osquery.assemble_snapshot(
            MAC,
            results(zt_edr_running=[{"running": "1"}], zt_edr=[{"version": "7.1.2", "sensors": "3", "ratio": "0.5", "ok": "true"}]),
            received_at=NOW,
        )

        assert {"edr_running": 1, "edr.version": "7.1.2", "edr.sensors": 3, "edr.ratio": 0.5, "edr.ok": True} == dict(snapshot.custom)  # type: ignore[union-attr]

    def test_raw_disk_encryption_rows_need_every_volume_encrypted(self) -> None:
        """Raw disk_encryption rows (as in the fixtures) count as encrypted only when all are."""
        snapshot = osquery.assemble_snapshot(MAC, results(zt_disk_encryption=[{"encrypted": "1"}, {"encrypted": "0"}]), received_at=NOW)

        assert False is snapshot.disk_encrypted  # type: ignore[union-attr]


class TestSequenceAfter:
    def test_same_facts_are_not_stored_again(self) -> None:
        """Re-assembling the same facts yields nothing to store."""
        snapshot = osquery.assemble_snapshot(MAC, results(zt_firewall_darwin=[{"enabled": "1"}]), received_at=NOW)
        assert snapshot is not None

        assert None is osquery.sequence_after(snapshot, snapshot)


class TestConfig:
    def test_intervals_come_from_settings(self) -> None:
        """Posture and OS-version intervals, logger period and distributed interval are configurable."""
        import orjson

        from gateway.config.ingest import OsqueryIntervals

        settings = ingest_settings(osquery_intervals=OsqueryIntervals(posture_s=120, os_version_s=7200, logger_period_s=5, distributed_interval_s=30))

        document = orjson.loads(osquery.config_document(settings))

        assert (120, 7200, 5, 30) == (
            document["schedule"]["zt_sip"]["interval"], document["schedule"]["zt_os_version"]["interval"],
            document["options"]["logger_tls_period"], document["options"]["distributed_interval"])
        assert all(q["snapshot"] for q in document["schedule"].values())

    def test_every_fact_has_a_query_per_platform(self) -> None:
        """The shipped pack covers each typed fact on each platform where osquery can report it."""
        pack = osquery.pack_for(ingest_settings())
        by_fact: dict[str, set[str]] = {}
        for query in pack:
            by_fact.setdefault(str(osquery.fact_name(query.name)), set()).add(query.platform)

        assert {"posix", "windows"} == by_fact["os_version"]
        for fact in ("firewall", "disk_encryption", "screen_lock", "remote_login", "auto_updates"):
            assert {"darwin", "linux", "windows"} == by_fact[fact], fact
        assert ({"darwin"}, {"darwin"}) == (by_fact["sip"], by_fact["gatekeeper"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
KEYS = st.sampled_from(["serial", "collected_at", "platform", "os_version", "owners", "custom", "disk_encrypted", "screen_lock_delay_s",
                        "name", "columns", "action", "diffResults", "snapshot", "unixTime", "decorations"])


class TestHostileInput:
    @pytest.mark.parametrize("collected_at", ["²", "١٢٣", "1e5", "-5", "9" * 40, float("nan"), float("inf"), True,
                                              "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00"])
    def test_odd_times_are_named_problems(self, collected_at: object) -> None:
        """Unicode digits, exponents, negatives, huge numbers, NaN, booleans and times with no UTC equivalent are not times."""
        with pytest.raises(ItemError, match="collected_at"):
            parse_snapshot_item({"serial": "S1", "platform": "linux", "collected_at": collected_at}, where="item", received_at=NOW, max_future_skew=timedelta(minutes=5))

    def test_api_items_name_facts_they_cannot_measure(self) -> None:
        """`unmeasurable` names facts that must be absent or null; a value beside it or an unknown name is a named problem."""
        base = {"serial": "S1", "platform": "linux", "collected_at": "2026-11-22T14:00:00Z"}
        parse = functools.partial(parse_snapshot_item, where="item", received_at=NOW, max_future_skew=timedelta(minutes=5))

        snapshot = parse({**base, "unmeasurable": ["screen_lock_delay_s", "custom.edr"]})
        with pytest.raises(ItemError) as caught:
            parse({**base, "screen_lock_delay_s": 300, "unmeasurable": ["screen_lock_delay_s", "colour"]})

        assert frozenset({"screen_lock_delay_s", "custom.edr"}) == snapshot.unmeasurable
        assert ["item.screen_lock_delay_s", "item.unmeasurable"] == sorted(p.field for p in caught.value.problems)

    @given(st.dictionaries(KEYS, JSON, max_size=8) | JSON)
    def test_api_items_either_parse_or_name_their_problems(self, raw: object) -> None:
        """Any JSON value gives a snapshot or an ItemError with at least one named field, never another exception."""
        try:
            parse_snapshot_item(raw, where="item", received_at=NOW, max_future_skew=timedelta(minutes=5))
        except ItemError as exc:
            assert exc.problems and all(p.field.startswith("item") for p in exc.problems)

    @given(st.dictionaries(KEYS, JSON, max_size=8) | JSON)
    def test_result_lines_either_normalize_or_raise_request_error(self, raw: object) -> None:
        """Any JSON value is a result item or an OsqueryRequestError, never another exception."""
        try:
            osquery.normalize_result(raw, now=NOW, max_future_skew=timedelta(minutes=5))
        except osquery.OsqueryRequestError:
            pass


# The columns of the osquery tables the shipped pack reads (osquery 5.x schema, the columns used only).
OSQUERY_TABLES = {
    "os_version": "name, version, major, minor, patch, build, revision, platform, platform_like",
    "osquery_info": "version",
    "disk_encryption": "name, uuid, encrypted, type, user_uuid, filevault_status",
    "mounts": "device, device_alias, path, type",
    "bitlocker_info": "drive_letter, protection_status",
    "alf": "global_state",
    "iptables": "filter_name, chain, policy, target",
    "systemd_units": "id, active_state",
    "windows_security_center": "firewall, autoupdate",
    "managed_policies": "domain, uuid, name, value, username, manual",
    "registry": "key, path, name, type, data",
    "sharing_preferences": "remote_login",
    "listening_ports": "pid, port, protocol, address",
    "plist": "path, key, value",
    "file": "path",
    "sip_config": "config_flag, enabled",
    "gatekeeper": "assessments_enabled",
}


class TestShippedPackSql:
    def test_every_query_runs_on_the_tables_it_names(self) -> None:
        """Each shipped query is valid SQLite over osquery's columns, and each fact query answers one row with `enabled`."""
        import sqlite3

        conn = sqlite3.connect(":memory:")
        for table, columns in OSQUERY_TABLES.items():
            conn.execute(f"CREATE TABLE {table} ({columns})")
        for name, value in (("askForPassword", "1"), ("idleTime", "300"), ("askForPasswordDelay", "5")):
            conn.execute("INSERT INTO managed_policies VALUES ('com.apple.screensaver', '', ?, ?, '', 0)", (name, value))
        conn.execute("INSERT INTO sharing_preferences VALUES (0)")
        conn.execute("INSERT INTO sip_config VALUES ('sip', 1)")
        conn.execute("INSERT INTO gatekeeper VALUES (1)")
        conn.execute("INSERT INTO alf VALUES (1)")
        conn.execute("INSERT INTO windows_security_center VALUES ('Good', 'Poor')")

        answers = {}
        for query in osquery.pack_for(ingest_settings()):
            cursor = conn.execute(query.sql)
            answers[query.name] = [dict(zip([d[0] for d in cursor.description], row)) for row in cursor.fetchall()]

        for name, rows in answers.items():
            if osquery.fact_name(name) not in ("os_version", "osquery_info"):
                assert 1 == len(rows) and "enabled" in rows[0], name
        assert {"enabled": 1, "delay_s": 305, "unmeasurable": ""} == answers["zt_screen_lock_darwin"][0]
        assert {"enabled": "", "delay_s": "", "unmeasurable": "enabled,delay_s"} == answers["zt_screen_lock_windows"][0]
        assert (1, 0) == (answers["zt_firewall_windows"][0]["enabled"], answers["zt_auto_updates_windows"][0]["enabled"])
