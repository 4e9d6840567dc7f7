"""osquery's TLS remote API without the HTTP: enroll, config, logs, distributed queries, facts.

Owns: the posture pack loading and the config document, enroll request checks, result-log
normalisation (every shape osqueryd sends), applying results to per-query row state, the mapping
of posture query results to DeviceSnapshot facts, and queuing an on-demand refresh.
Must not import: aiohttp, gateway.app.

Query names map to facts: the part of a scheduled query's name from ``zt_`` on, without a
trailing ``_darwin``/``_linux``/``_windows``, names the fact (``zt_firewall_linux`` → firewall).
Known names fill the snapshot's typed fields; any other ``zt_<name>`` query fills the custom fact
``<name>`` (one column) or ``<name>.<column>`` (several), from its first row, typed. So a new
query in the pack needs no code change. A fact whose query has not reported yet stays None.

A query says what it cannot see with an ``unmeasurable`` column: the comma-separated names of
its own columns (``enabled``, ``delay_s``) that the daemon cannot measure on this device (a
per-user desktop setting osqueryd, running as root, cannot read). Those facts stay None and are
named in ``DeviceSnapshot.unmeasurable``, so the policy's ``if_unmeasurable`` decides, not
``if_unknown``.
"""

from __future__ import annotations

import functools
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import orjson

from gateway.config.ingest import IngestSettings
from gateway.ingest.snapshot_parse import future_problem, parse_platform, parse_time, serial_problem, typed_fact
from gateway.store.base import Enrollment, HostDetails, PendingQuery, QueryResult
from policy_engine.model import DeviceSnapshot, Fact, OsFamily, Version

SHIPPED_PACK = Path(__file__).with_name("posture-pack.json")
"""The pack in deploy/osquery/, reached through a link inside the package so installed wheels carry it."""
_PLATFORM_SUFFIXES = ("_darwin", "_linux", "_windows")
_TRUE = frozenset(("1", "true", "yes", "on", "enabled", "good"))
_FALSE = frozenset(("0", "false", "no", "off", "disabled", "", "poor", "not monitored", "snoozed"))
_REMOTE_LOGIN_PORTS = frozenset((22, 3389))
_SCREEN_SHARING_PORTS = frozenset((5900,))
_OS_PLATFORM_NAMES = {OsFamily.DARWIN: "darwin", OsFamily.LINUX: "linux", OsFamily.WINDOWS: "windows"}

Row = Mapping[str, str]


class OsqueryRequestError(ValueError):
    """An osquery request body is not what osqueryd sends."""


# -- the posture pack and the config document ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackQuery:
    name: str
    sql: str
    platform: str
    """osquery's platform filter: ``darwin``, ``linux``, ``windows``, ``posix`` or ``all``."""
    interval: int | None
    snapshot: bool
    description: str = ""

    def runs_on(self, family: OsFamily) -> bool:
        wanted = {p.strip() for p in self.platform.split(",")}
        if "all" in wanted or "any" in wanted:
            return True
        name = _OS_PLATFORM_NAMES.get(family)
        return name in wanted or ("posix" in wanted and family in (OsFamily.DARWIN, OsFamily.LINUX))


@functools.lru_cache(maxsize=8)
def load_pack(path: Path) -> tuple[PackQuery, ...]:
    """The queries of an osquery pack file (JSON).

    Raises:
        OsqueryRequestError: the file cannot be read or is not a pack.
    """
    try:
        raw = orjson.loads(path.read_bytes())
        queries = raw["queries"]
        return tuple(
            PackQuery(
                name=name,
                sql=entry["query"],
                platform=entry.get("platform", raw.get("platform", "all")),
                interval=entry.get("interval"),
                snapshot=bool(entry.get("snapshot", False)),
                description=entry.get("description", ""),
            )
            for name, entry in queries.items()
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise OsqueryRequestError(f"cannot load the osquery pack `{path}`: {exc}; check `ingest.osquery_pack`") from None


def pack_for(settings: IngestSettings) -> tuple[PackQuery, ...]:
    """The posture pack in force: ``settings.osquery_pack`` or the one shipped in deploy/osquery/."""
    return load_pack(settings.osquery_pack or SHIPPED_PACK)


@functools.lru_cache(maxsize=8)
def config_document(settings: IngestSettings) -> bytes:
    """The JSON config served to every agent (schedule from the pack, serial decorators, intervals)."""
    intervals = settings.osquery_intervals
    schedule: dict[str, object] = {}
    for query in pack_for(settings):
        default = intervals.os_version_s if fact_name(query.name) == "os_version" else intervals.posture_s
        schedule[query.name] = {
            "query": query.sql,
            "interval": query.interval or default,
            "platform": query.platform,
            "snapshot": query.snapshot,
            **({"description": query.description} if query.description else {}),
        }
    document = {
        "options": {
            "host_identifier": "hostname",
            "schedule_splay_percent": 10,
            "logger_tls_period": intervals.logger_period_s,
            "distributed_interval": intervals.distributed_interval_s,
            "config_refresh": intervals.config_refresh_s,
        },
        "decorators": {
            "load": [
                "SELECT hardware_serial FROM system_info;",
                "SELECT hostname FROM system_info;",
                "SELECT uuid AS host_uuid FROM system_info;",
            ]
        },
        "schedule": schedule,
        "node_invalid": False,
    }
    return orjson.dumps(document)


# -- enroll -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    enroll_secret: str
    serial: str
    host_identifier: str
    details: HostDetails


def _object_at(parent: dict[str, object], key: str) -> dict[str, object]:
    """The JSON object under ``key``, or an empty one when it is missing or not an object."""
    child = parent.get(key)
    return child if isinstance(child, dict) else {}


def parse_enroll(body: object) -> EnrollRequest:
    """The parts of an enroll request Gatehouse uses.

    Raises:
        OsqueryRequestError: no enroll secret, or the hardware serial fails ``serial_problem`` (the API's rule).
    """
    if not isinstance(body, dict) or not isinstance(body.get("enroll_secret"), str):
        raise OsqueryRequestError("the enroll request has no `enroll_secret`")
    host = _object_at(body, "host_details")
    system = _object_at(host, "system_info")
    os_version = _object_at(host, "os_version")
    osquery_info = _object_at(host, "osquery_info")
    serial = system.get("hardware_serial")
    problem = serial_problem(serial)
    if problem is not None or not isinstance(serial, str):
        raise OsqueryRequestError(
            f"`host_details.system_info.hardware_serial`: expected {problem}; a device needs its real hardware serial to enroll"
        )

    def text(source: Mapping[str, object], key: str) -> str:
        value = source.get(key, "")
        return sys.intern(str(value)[:256]) if isinstance(value, (str, int, float)) else ""

    details = HostDetails(
        hostname=text(system, "hostname") or text(body, "host_identifier"),
        platform=text(os_version, "platform"),
        platform_like=text(os_version, "platform_like"),
        os_name=text(os_version, "name"),
        os_version=_os_version_text(os_version),
        os_build=text(os_version, "build"),
        agent_version=text(osquery_info, "version"),
    )
    host_identifier = body.get("host_identifier")
    return EnrollRequest(
        enroll_secret=body["enroll_secret"],
        serial=serial.strip(),
        host_identifier=host_identifier[:256] if isinstance(host_identifier, str) else "",
        details=details,
    )


def new_node_key() -> str:
    """A fresh random node key (256 bits)."""
    return "nk_" + secrets.token_urlsafe(32)


def _os_version_text(row: Mapping[str, object]) -> str:
    """A dotted version from osquery's os_version columns: ``major.minor.patch`` when given, else ``version``."""
    major = str(row.get("major", "") or "")
    if major.isdigit():
        parts = [major]
        for key in ("minor", "patch"):
            value = str(row.get(key, "") or "")
            if not value.isdigit():
                break
            parts.append(value)
        # Windows reports the build number as the third part (10.0.22631).
        build = str(row.get("build", "") or "")
        if len(parts) == 2 and build.isdigit() and str(row.get("platform", "")) == "windows":
            parts.append(build)
            # The update build revision (UBR) is the monthly patch level: 10.0.22631.4460.
            revision = str(row.get("revision", "") or "")
            if revision.isdigit():
                parts.append(revision)
        return ".".join(parts)
    version = row.get("version", "")
    return str(version)[:256] if isinstance(version, (str, int, float)) else ""


# -- result logs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultItem:
    """One result-log item in a single shape, whatever shape osqueryd sent."""

    name: str
    collected_at: datetime
    kind: str
    """``snapshot`` (rows replace the query's rows), ``snapshot-row`` (one row of a snapshot run that
    osquery logged as events, ``--logger_snapshot_event_type``) or ``diff`` (removed, then added)."""
    added: tuple[Row, ...] = ()
    removed: tuple[Row, ...] = ()
    serial: str = ""
    """``hardware_serial`` from the decorations, nested or top level; empty when absent."""


def _rows(raw: object) -> tuple[Row, ...]:
    if not isinstance(raw, list):
        raise OsqueryRequestError("rows must be a list of objects")
    out = []
    for row in raw:
        if not isinstance(row, dict):
            raise OsqueryRequestError("rows must be a list of objects")
        # numerics=true sends numbers; keep every value as osquery's text so rows compare equal.
        out.append({str(k): _text(v) for k, v in row.items()})
    return tuple(out)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _item_time(item: Mapping[str, object], fallback: datetime) -> datetime:
    moment = parse_time(item.get("unixTime"))
    if moment is None and isinstance(item.get("calendarTime"), str):
        try:
            moment = datetime.strptime(str(item["calendarTime"]), "%a %b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
        except ValueError:
            moment = None
    return fallback if moment is None or moment.year < 2000 else moment


def normalize_result(item: object, *, now: datetime, max_future_skew: timedelta) -> ResultItem:
    """One ``log_type: result`` item in the form the rest of the code uses.

    Raises:
        OsqueryRequestError: the item is not any shape osqueryd sends, or is dated further ahead of
            ``now`` than ``max_future_skew`` (``future_problem``, the API's rule).
    """
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise OsqueryRequestError("a result item needs a query `name`")
    decorations = _object_at(item, "decorations") if isinstance(item.get("decorations"), dict) else item
    serial = decorations.get("hardware_serial", "")
    collected_at = _item_time(item, now)
    ahead = future_problem(collected_at, received_at=now, max_future_skew=max_future_skew)
    if ahead is not None:
        raise OsqueryRequestError(f"result item for `{str(item['name'])[:80]}`: `unixTime`: expected {ahead}")
    common = {
        "name": item["name"],
        "collected_at": collected_at,
        "serial": serial.strip() if isinstance(serial, str) else "",
    }
    if "snapshot" in item:
        return ResultItem(kind="snapshot", added=_rows(item["snapshot"]), **common)
    if isinstance(item.get("diffResults"), dict):
        diff = item["diffResults"]
        return ResultItem(kind="diff", added=_rows(diff.get("added", [])), removed=_rows(diff.get("removed", [])), **common)
    if isinstance(item.get("columns"), dict):
        action = item.get("action")
        (row,) = _rows([item["columns"]])
        if action == "added":
            return ResultItem(kind="diff", added=(row,), **common)
        if action == "removed":
            return ResultItem(kind="diff", removed=(row,), **common)
        if action == "snapshot":
            return ResultItem(kind="snapshot-row", added=(row,), **common)
    raise OsqueryRequestError(f"result item for `{str(item['name'])[:80]}` has no `snapshot`, `diffResults` or `columns` with an action")


def _row_key(row: Row) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def apply_results(state: Mapping[str, QueryResult], items: Iterable[ResultItem]) -> dict[str, QueryResult]:
    """The query results after applying items in order; only the queries they touched are returned.

    Rows are a set: adding a row already present or removing one that is absent changes nothing,
    so an agent retrying a batch the server half-applied ends in the same state.

    With ``--logger_snapshot_event_type`` osquery logs each row of a snapshot run as its own item
    (``snapshot-row``). A run is known by its time: osquery gives every row of a run the same
    ``unixTime`` (a snapshot query's ``counter`` stays 0 and ``epoch`` is the agent's setting, so
    they tell runs no further apart). Rows of the query's stored run are added to it, in whatever
    order and in however many requests they arrive; a row of a newer run starts that run and
    replaces the older rows; a row of an older run than the stored one is stale and ignored.
    """
    touched: dict[str, dict[bytes, Row]] = {}
    times: dict[str, datetime] = {}
    for item in items:
        if item.name not in touched:
            previous = state.get(item.name)
            touched[item.name] = {} if previous is None else {_row_key(r): r for r in previous.rows}
            times[item.name] = previous.collected_at if previous is not None else item.collected_at
        rows = touched[item.name]
        if item.kind == "snapshot-row":
            if item.collected_at < times[item.name]:
                continue
            if item.collected_at > times[item.name]:
                rows.clear()
        elif item.kind == "snapshot":
            rows.clear()
        for row in item.removed:
            rows.pop(_row_key(row), None)
        for row in item.added:
            rows[_row_key(row)] = row
        times[item.name] = max(times[item.name], item.collected_at)
    return {name: QueryResult(tuple(rows.values()), times[name]) for name, rows in touched.items()}


# -- facts --------------------------------------------------------------------------------------


def fact_name(query_name: str) -> str | None:
    """The fact a scheduled query reports (``pack_x_zt_firewall_linux`` → ``firewall``), or None when not ours."""
    start = query_name.find("zt_")
    if start < 0:
        return None
    base = query_name[start + 3 :]
    for suffix in _PLATFORM_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base or None


def _truth(value: str | None) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    try:
        return float(text) > 0
    except ValueError:
        return None


def _all_true(rows: Sequence[Row], column: str) -> bool | None:
    values = [_truth(r.get(column)) for r in rows if column in r]
    if not values or None in values:
        return None
    return all(values)


def _flag(rows: Sequence[Row], *columns: str) -> bool | None:
    for column in columns:
        value = _all_true(rows, column)
        if value is not None:
            return value
    return None


def _int(value: str | None) -> int | None:
    try:
        number = int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is None or number >= 0 else None


def _ports(rows: Sequence[Row]) -> set[int]:
    return {p for p in (_int(r.get("port")) for r in rows) if p is not None}


def assemble_snapshot(
    enrollment: Enrollment,
    results: Mapping[str, QueryResult],
    *,
    received_at: datetime,
    owners: tuple[str, ...] = (),
) -> DeviceSnapshot | None:
    """The device's snapshot from the latest rows of each posture query; None before any result.

    Facts whose query has not reported (or returned no rows) stay None. ``collected_at`` is the time
    of the newest result. Owners are carried over (osquery does not know them).
    """
    by_fact: dict[str, list[tuple[datetime, Sequence[Row]]]] = {}
    for name, result in results.items():
        fact = fact_name(name)
        if fact is not None:
            by_fact.setdefault(fact, []).append((result.collected_at, result.rows))
    if not by_fact:
        return None
    # When a fact has several queries (one per platform), the newest answer wins.
    rows_of: dict[str, Sequence[Row]] = {f: max(v, key=lambda t: t[0])[1] for f, v in by_fact.items()}
    collected_at = max(t for v in by_fact.values() for t, _ in v)
    details = enrollment.details
    intern = sys.intern

    os_rows = rows_of.pop("os_version", ())
    os_row: Row = os_rows[0] if os_rows else {}
    platform_word = os_row.get("platform") or details.platform
    platform = parse_platform(platform_word) if platform_word else OsFamily.UNKNOWN
    if platform is OsFamily.UNKNOWN and (os_row.get("platform_like") or details.platform_like):
        platform = parse_platform(os_row.get("platform_like") or details.platform_like)
    version_text = _os_version_text(os_row) if os_row else details.os_version
    windows = platform is OsFamily.WINDOWS
    os_version = _version(version_text, display=version_text if windows else (os_row.get("version") or version_text))
    info_rows = rows_of.pop("osquery_info", ())
    agent_version = _version(info_rows[0].get("version", "") if info_rows else details.agent_version)

    facts: dict[str, object] = {}
    custom: dict[str, Fact] = {}
    blind: set[str] = set()
    for fact, rows in rows_of.items():
        columns = _blind_columns(rows)
        for column in columns:
            field_name = _FIELD_OF_COLUMN.get((fact, column))
            if field_name is None:
                value_columns = [c for c in (rows[0] if rows else {}) if c != "unmeasurable"]
                field_name = f"custom.{fact}" if len(value_columns) == 1 else f"custom.{fact}.{column}"
            blind.add(intern(field_name))
    if "disk_encryption" in rows_of:
        facts["disk_encrypted"] = _flag(rows_of.pop("disk_encryption"), "enabled", "encrypted")
    for fact, field_name in (
        ("firewall", "firewall_enabled"),
        ("auto_updates", "auto_updates_enabled"),
        ("remote_login", "remote_login_enabled"),
    ):
        if fact in rows_of:
            facts[field_name] = _flag(rows_of.pop(fact), "enabled")
    if "sip" in rows_of:
        rows = rows_of.pop("sip")
        sip_rows = [r for r in rows if r.get("config_flag", "sip") == "sip"]
        facts["sip_enabled"] = _flag(sip_rows, "enabled")
    if "gatekeeper" in rows_of:
        facts["gatekeeper_enabled"] = _flag(rows_of.pop("gatekeeper"), "enabled", "assessments_enabled")
    for key in ("screen_lock", "screenlock"):
        if key in rows_of:
            rows = rows_of.pop(key)
            facts["screen_lock_enabled"] = _flag(rows, "enabled")
            delays = [_int(r.get("delay_s", r.get("grace_period"))) for r in rows]
            known = [d for d in delays if d is not None]
            facts["screen_lock_delay_s"] = max(known) if known and len(known) == len(delays) else None
    if "listening_ports" in rows_of:
        ports = _ports(rows_of.pop("listening_ports"))
        if facts.get("remote_login_enabled") is None:
            facts["remote_login_enabled"] = bool(ports & _REMOTE_LOGIN_PORTS)
        custom["screen_sharing_enabled"] = bool(ports & _SCREEN_SHARING_PORTS)
    for fact, rows in sorted(rows_of.items()):
        if not rows:
            continue
        first = {k: v for k, v in min(rows, key=_row_key).items() if k != "unmeasurable"}
        if len(first) == 1:
            (value,) = first.values()
            custom[intern(fact)] = typed_fact(value)
        else:
            for column, value in first.items():
                custom[intern(f"{fact}.{column}")] = typed_fact(value)
    for name in blind:
        if name.startswith("custom."):
            custom.pop(name[7:], None)
        else:
            facts[name] = None

    return DeviceSnapshot(
        serial=enrollment.serial,
        platform=platform,
        os_name=intern(os_row.get("name") or details.os_name),
        os_version=os_version,
        collected_at=collected_at,
        received_at=received_at,
        source="osquery",
        hostname=details.hostname,
        owners=owners,
        distribution=_distribution(os_row, details) if platform is OsFamily.LINUX else "",
        os_build=intern(os_row.get("build") or details.os_build),
        agent_name="osquery",
        agent_version=agent_version,
        custom=custom,
        unmeasurable=frozenset(blind),
        **facts,  # type: ignore[arg-type]
    )


_FIELD_OF_COLUMN = {
    ("disk_encryption", "enabled"): "disk_encrypted",
    ("firewall", "enabled"): "firewall_enabled",
    ("auto_updates", "enabled"): "auto_updates_enabled",
    ("remote_login", "enabled"): "remote_login_enabled",
    ("sip", "enabled"): "sip_enabled",
    ("gatekeeper", "enabled"): "gatekeeper_enabled",
    ("screen_lock", "enabled"): "screen_lock_enabled",
    ("screen_lock", "delay_s"): "screen_lock_delay_s",
}
"""Which snapshot field a posture query's column fills, for naming what a query cannot measure."""

_RED_HAT_FAMILY = (("fedora", "fedora"), ("red hat", "rhel"), ("rocky", "rocky"), ("alma", "almalinux"), ("centos", "centos"))


def _blind_columns(rows: Sequence[Row]) -> set[str]:
    """The columns a query's rows say the daemon cannot measure (its ``unmeasurable`` column)."""
    found: set[str] = set()
    for row in rows:
        for name in (row.get("unmeasurable") or "").split(","):
            if name.strip():
                found.add(name.strip())
    return found


def _distribution(os_row: Row, details: HostDetails) -> str:
    """The Linux distribution id. osquery reports platform ``rhel`` on every system with
    /etc/redhat-release (Fedora, RHEL, Rocky, Alma: osquery/tables/system/linux/os_version.cpp),
    so there the OS name tells them apart."""
    word = (os_row.get("platform") or details.platform).lower()
    if word == "rhel":
        name = (os_row.get("name") or details.os_name).lower()
        for needle, distribution in _RED_HAT_FAMILY:
            if needle in name:
                return sys.intern(distribution)
    return sys.intern(word)


def _version(text: str, *, display: str | None = None) -> Version | None:
    try:
        version = Version.parse(text)
    except ValueError:
        return None
    return Version(parts=version.parts, text=sys.intern((display or text).strip()[:256]))


def _same_facts(a: DeviceSnapshot, b: DeviceSnapshot) -> bool:
    texts = (str(a.os_version), str(a.agent_version)) == (str(b.os_version), str(b.agent_version))
    return texts and replace(a, received_at=b.received_at, collected_at=b.collected_at) == b


def sequence_after(snapshot: DeviceSnapshot, previous: DeviceSnapshot | None) -> DeviceSnapshot | None:
    """The snapshot to store given the device's previous one, or None when nothing changed.

    Results can arrive out of order (the agent buffers and retries), so an assembled snapshot may
    carry a ``collected_at`` no newer than the stored one although it holds newer facts for one
    query. Such a snapshot is stored 1 ms after the previous one so it is not mistaken for a
    duplicate or an older report.
    """
    if previous is None or previous.source != "osquery" or snapshot.collected_at > previous.collected_at:
        return snapshot
    if _same_facts(snapshot, previous):
        return None
    return replace(snapshot, collected_at=previous.collected_at + timedelta(milliseconds=1))


# -- on-demand refresh (distributed queries) ----------------------------------------------------


def refresh_queries(serial: str, platform: OsFamily, pack: Sequence[PackQuery], *, now: datetime) -> tuple[PendingQuery, ...]:
    """Distributed queries that re-run every posture query for the device's platform at once."""
    nonce = secrets.token_hex(4)
    return tuple(
        PendingQuery(query_id=f"zt-refresh-{nonce}-{q.name}", serial=serial, query_name=q.name, sql=q.sql, created_at=now)
        for q in pack
        if platform is OsFamily.UNKNOWN or q.runs_on(platform)
    )


def distributed_results(
    pending: Sequence[PendingQuery], body: Mapping[str, object], *, now: datetime
) -> tuple[list[ResultItem], list[str]]:
    """Result items for the answered pending queries, and every query id the agent answered.

    Raises:
        OsqueryRequestError: ``queries`` is not an object of row lists.
    """
    queries = body.get("queries", {})
    statuses = body.get("statuses", {})
    if not isinstance(queries, dict) or not isinstance(statuses, dict):
        raise OsqueryRequestError("`queries` and `statuses` must be objects keyed by query id")
    by_id = {q.query_id: q for q in pending}
    items: list[ResultItem] = []
    for query_id, rows in queries.items():
        query = by_id.get(query_id)
        status = statuses.get(query_id, 0)
        if query is None or str(status) != "0":
            continue
        items.append(ResultItem(name=query.query_name, collected_at=now, kind="snapshot", added=_rows(rows)))
    answered = [qid for qid in {*queries, *statuses} if isinstance(qid, str)]
    return items, answered


def reserved_answer(query: PendingQuery, body: Mapping[str, object]) -> Sequence[Row] | None | Literal[False]:
    """The rows the agent answered to one reserved query: False when it did not answer it, None when it reported failure.

    Raises:
        OsqueryRequestError: the rows are not a list of objects.
    """
    queries = body.get("queries", {})
    statuses = body.get("statuses", {})
    if not isinstance(queries, dict) or not isinstance(statuses, dict):
        raise OsqueryRequestError("`queries` and `statuses` must be objects keyed by query id")
    if query.query_id not in queries and query.query_id not in statuses:
        return False
    if str(statuses.get(query.query_id, 0)) != "0":
        return None
    return _rows(queries.get(query.query_id, []))
