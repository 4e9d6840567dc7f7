"""Back-fill from files: osquery filesystem-logger result files and JSON arrays of snapshots.

Owns: import_files, ImportReport.
Must not import: aiohttp, gateway.app (``gatehouse import FILE...`` in cli.py is a thin layer over import_files).

Accepted files, detected by content:
- JSON lines (osquery's ``osqueryd.results.log`` from ``--logger_plugin=filesystem``, or one
  snapshot item per line);
- a JSON array of items, or an object ``{"snapshots": [...]}``.
Each item is an osquery result line (any shape the TLS logger sends; the device is the
``hardware_serial`` decoration, so the agent's config needs that decorator, as the shipped pack
has), an ingest API item, or a Stethoscope result. osquery results are applied per device in
file order, then each device's re-assembled snapshot is stored once (source ``osquery``). API
and Stethoscope items are stored as given, with source ``import`` for API items.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from gateway.ingest.osquery import OsqueryRequestError, ResultItem, normalize_result
from gateway.ingest.pipeline import ComplianceRecorder, HistoryThrottle, Ingestor
from gateway.ingest.snapshot_parse import ItemError, parse_snapshot_item, serial_problem
from gateway.ingest.stethoscope import is_stethoscope_item, parse_stethoscope_item
from gateway.metrics import Metrics
from gateway.store.snapshots import SnapshotCache
from gateway.store.base import Enrollment, HostDetails, PutOutcome, Store
from policy_engine.model import DeviceSnapshot

_BATCH = 500
_MAX_PROBLEMS = 100


@dataclass(slots=True)
class ImportReport:
    """What an import did: counts per outcome and the first problems, each with file and line."""

    files: int = 0
    items: int = 0
    stored: int = 0
    duplicate: int = 0
    older: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        self.rejected += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(f"{where}: {message}")

    def count(self, outcome: PutOutcome) -> None:
        if outcome is PutOutcome.STORED:
            self.stored += 1
        elif outcome is PutOutcome.DUPLICATE:
            self.duplicate += 1
        else:
            self.older += 1


def _items(path: Path) -> Iterator[tuple[str, object]]:
    """(location, parsed item) for every item of a file; unparsable lines come as (location, OSError/ValueError text)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    stripped = raw.lstrip()
    if stripped[:1] == b"[" or (stripped[:1] == b"{" and b"\n" not in stripped.strip()):
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("snapshots"), list):
            document = document["snapshots"]
        if isinstance(document, list):
            for index, item in enumerate(document):
                yield f"{path}[{index}]", item
            return
        if isinstance(document, dict):
            yield f"{path}", document
            return
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield f"{path}:{number}", ValueError(f"not JSON ({exc}); each line must be one JSON object")


def _is_osquery(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("name"), str) and any(
        key in item for key in ("columns", "diffResults", "snapshot")
    )


async def import_files(
    paths: Sequence[Path | str],
    store: Store,
    *,
    clock: Callable[[], datetime],
    cache: SnapshotCache | None = None,
    metrics: Metrics | None = None,
    recorder: ComplianceRecorder | None = None,
    max_future_skew: timedelta = timedelta(minutes=5),
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Store every snapshot found in the files; bad items are reported, never fatal.

    Raises:
        StoreError: the store failed; what was stored before stays stored (imports are idempotent, run again).
    """
    ingestor = Ingestor(store=store, cache=cache, metrics=metrics, recorder=recorder, throttle=HistoryThrottle())
    report = ImportReport()
    osquery_items: dict[str, list[ResultItem]] = {}
    hosts: dict[str, HostDetails] = {}
    pending: list[DeviceSnapshot] = []
    now = clock()

    async def flush() -> None:
        if pending:
            for outcome in await ingestor.ingest(pending):
                report.count(outcome)
            pending.clear()
            if progress is not None:
                progress(report)

    for path in map(Path, paths):
        report.files += 1
        try:
            items: Iterable[tuple[str, object]] = list(_items(path))
        except (OSError, EOFError, ValueError) as exc:
            report.problem(str(path), f"cannot read the file: {exc}")
            continue
        for where, item in items:
            report.items += 1
            if isinstance(item, ValueError):
                report.problem(where, str(item))
                continue
            if _is_osquery(item):
                _collect_osquery(item, where, now, max_future_skew, osquery_items, hosts, report)
                continue
            try:
                if is_stethoscope_item(item):
                    reading = parse_stethoscope_item(item, where="item", received_at=now, max_future_skew=max_future_skew)  # type: ignore[arg-type]
                    ingestor.disagreed(reading.snapshot.serial, reading.disagreements)
                    snapshot = reading.snapshot
                else:
                    snapshot = parse_snapshot_item(item, where="item", received_at=now, max_future_skew=max_future_skew, source="import")
            except ItemError as exc:
                report.problem(where, str(exc))
                ingestor.rejected("import")
                continue
            pending.append(snapshot)
            if len(pending) >= _BATCH:
                await flush()
    await flush()
    for serial, results in osquery_items.items():
        enrollment = Enrollment("", serial, hosts[serial].hostname, now, hosts[serial])
        outcome = await ingestor.ingest_osquery(enrollment, sorted(results, key=lambda r: r.collected_at), now=now)
        if outcome is not None:
            report.count(outcome)
        else:
            report.duplicate += 1
    if progress is not None:
        progress(report)
    return report


def _collect_osquery(
    item: object,
    where: str,
    now: datetime,
    max_future_skew: timedelta,
    by_serial: dict[str, list[ResultItem]],
    hosts: dict[str, HostDetails],
    report: ImportReport,
) -> None:
    try:
        result = normalize_result(item, now=now, max_future_skew=max_future_skew)
    except OsqueryRequestError as exc:
        report.problem(where, str(exc))
        return
    problem = serial_problem(result.serial) if result.serial else "a `hardware_serial` decoration"
    if problem is not None:
        report.problem(
            where, f"`hardware_serial`: expected {problem}; the agent's decorators need `SELECT hardware_serial FROM system_info;`"
        )
        return
    by_serial.setdefault(result.serial, []).append(result)
    if result.serial not in hosts:
        decorations = item.get("decorations") if isinstance(item, dict) and isinstance(item.get("decorations"), dict) else item
        hostname = ""
        if isinstance(decorations, dict):
            hostname = str(decorations.get("hostname") or "")
        if not hostname and isinstance(item, dict):
            hostname = str(item.get("hostIdentifier") or item.get("hostname") or "")
        hosts[result.serial] = HostDetails(hostname=hostname[:256])
