"""Back-fill from files: osquery filesystem-logger JSON lines, JSON arrays, bad lines reported."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson

from gateway.ingest.importer import import_files
from gateway.metrics import Metrics
from gateway.store.snapshots import SnapshotCache
from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.support import FakeClock, fixture


def result_lines() -> list[dict[str, object]]:
    """Every result item of the osquery fixtures, as the filesystem logger writes them (one per line)."""
    return [
        *fixture("log_result_snapshot.json")["data"],
        *fixture("log_result_batched_differential.json")["data"],
        *fixture("log_result_event_differential.json")["data"],
    ]


def api_item(serial: str, minute: int = 0) -> dict[str, object]:
    return {"serial": serial, "collected_at": f"2026-11-22T14:{minute:02d}:00Z", "platform": "linux", "os_name": "Debian", "os_version": "12.8", "disk_encrypted": True}


class TestImportFiles:
    async def test_osquery_results_log_becomes_a_snapshot(self, tmp_path: Path, store: SqliteStore, clock: FakeClock) -> None:
        """A filesystem-logger results file gives the device's snapshot, keyed by the hardware_serial decoration."""
        path = tmp_path / "osqueryd.results.log"
        path.write_bytes(b"\n".join(orjson.dumps(line) for line in result_lines()) + b"\n")

        report = await import_files([path], store, clock=clock)
        snapshot = await store.latest("PF3ABCDE")

        assert (1, 6, 1, 0) == (report.files, report.items, report.stored, report.rejected)
        assert ("Ubuntu", False, False, "osquery", "lt-alice-01") == (
            snapshot.os_name, snapshot.disk_encrypted, snapshot.remote_login_enabled, snapshot.source, snapshot.hostname)  # type: ignore[union-attr]

    async def test_json_array_of_api_items_and_cache_update(self, tmp_path: Path, store: SqliteStore, clock: FakeClock, metrics: Metrics) -> None:
        """A JSON array of ingest API items is stored with source `import` and shown to the given cache."""
        path = tmp_path / "export.json"
        path.write_bytes(orjson.dumps([api_item("DEB1"), api_item("DEB2")]))
        cache = SnapshotCache(store)

        report = await import_files([path], store, clock=clock, cache=cache, metrics=metrics)

        assert (2, 0) == (report.stored, report.rejected)
        assert "import" == cache.get("DEB1").source  # type: ignore[union-attr]
        assert 2.0 == metrics.registry.get_sample_value("gatehouse_snapshot_ingests_total", {"source": "import", "outcome": "stored"})

    async def test_a_stored_snapshot_marks_its_source_fresh(self, tmp_path: Path, store: SqliteStore, clock: FakeClock,
                                                             metrics: Metrics) -> None:
        """Storing a snapshot sets its source's last-stored time (wall clock, as Prometheus reads it); a duplicate does not."""
        path = tmp_path / "export.json"
        path.write_bytes(orjson.dumps([api_item("DEB1")]))
        gauge = ("gatehouse_ingest_last_stored_timestamp_seconds", {"source": "import"})
        before = time.time()
        await import_files([path], store, clock=clock, metrics=metrics)
        after = time.time()
        stored = metrics.registry.get_sample_value(*gauge)
        metrics.ingest_last_stored.labels(source="import").set(0)

        await import_files([path], store, clock=clock, metrics=metrics)

        assert stored is not None and before <= stored <= after
        assert 0.0 == metrics.registry.get_sample_value(*gauge)

    async def test_importing_twice_is_idempotent(self, tmp_path: Path, store: SqliteStore, clock: FakeClock) -> None:
        """Running the same import again stores nothing new."""
        path = tmp_path / "export.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(i) for i in [api_item("DEB1"), *result_lines()]))
        await import_files([path], store, clock=clock)

        again = await import_files([path], store, clock=clock)

        assert (0, 2) == (again.stored, again.duplicate)

    async def test_bad_lines_are_reported_with_file_and_line(self, tmp_path: Path, store: SqliteStore, clock: FakeClock) -> None:
        """Unparsable lines, bad items and undecorated results are reported; the good lines are stored."""
        undecorated = dict(result_lines()[0])
        del undecorated["decorations"]
        path = tmp_path / "mixed.jsonl"
        path.write_bytes(b"\n".join([
            orjson.dumps(api_item("GOOD1")), b"{broken", orjson.dumps({"serial": "0", "platform": "linux"}), orjson.dumps(undecorated),
        ]))

        report = await import_files([path, tmp_path / "missing.json"], store, clock=clock)

        assert (1, 4) == (report.stored, report.rejected)
        assert [f"{path}:2", f"{path}:3", f"{path}:4", str(tmp_path / "missing.json")] == [p.split(": ")[0] for p in report.problems]
        assert "hardware_serial" in report.problems[2]

    async def test_gzip_file_and_snapshots_object(self, tmp_path: Path, store: SqliteStore, clock: FakeClock) -> None:
        """A gzipped {"snapshots": [...]} file is read too."""
        path = tmp_path / "batch.json.gz"
        path.write_bytes(gzip.compress(orjson.dumps({"snapshots": [api_item("Z1"), api_item("Z2", 1)]})))
        seen: list[int] = []

        report = await import_files([path], store, clock=clock, progress=lambda r: seen.append(r.stored))

        assert 2 == report.stored
        assert 2 == seen[-1]

    async def test_serial_and_skew_rules_are_the_apis(self, tmp_path: Path, store: SqliteStore, clock: FakeClock) -> None:
        """Results decorated with a serial the API refuses (NUL, newline, 10,000 characters), or dated beyond the skew, are reported, not stored."""
        lines = []
        for serial in ("PF3\x00ABCDE", "PF3ABCDE\nX", "C02XK0AAJG" * 1_000):
            line = dict(result_lines()[0])
            line["decorations"] = {**line["decorations"], "hardware_serial": serial}  # type: ignore[dict-item]
            lines.append(line)
        ahead = dict(result_lines()[0])
        ahead["unixTime"] = int(clock().timestamp()) + 3652 * 86400
        path = tmp_path / "hostile.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(line) for line in [*lines, ahead]))

        report = await import_files([path], store, clock=clock)

        assert (0, 4) == (report.stored, report.rejected)
        assert all("`hardware_serial`: expected a real hardware serial" in p for p in report.problems[:3])
        assert "in the future" in report.problems[3]
        assert None is await store.latest("PF3ABCDE")
