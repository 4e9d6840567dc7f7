"""JSON ingest API items to DeviceSnapshot, with every problem of an item named.

Owns: parse_snapshot_item, ItemError, FieldProblem, the item format, the serial rule and the time-skew rule
of every ingest path (serial_problem, future_problem), placeholder serials, typing of fact values.
Must not import: aiohttp, gateway.store backends.

An item (``POST /.gatehouse/api/v1/snapshots`` body ``{"snapshots": [item, ...]}``)::

    {"serial": "C02XK0AAJGH6", "collected_at": "2026-11-22T14:05:00Z",
     "platform": "darwin", "os_name": "macOS", "os_version": "15.6", "os_build": "24G84",
     "hostname": "bobs-mbp", "owners": ["bob@example.com"], "distribution": "",
     "agent_name": "kolide", "agent_version": "1.5.3",
     "firewall_enabled": true, "disk_encrypted": true, "screen_lock_enabled": true,
     "screen_lock_delay_s": 300, "remote_login_enabled": false, "auto_updates_enabled": true,
     "sip_enabled": true, "gatekeeper_enabled": true, "custom": {"crowdstrike_running": true}}

Required: serial, collected_at (RFC 3339 with offset, or epoch seconds), platform. Every health fact
is optional; absent or null means "not reported".
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from policy_engine.model import DeviceSnapshot, Fact, OsFamily, Version

PLACEHOLDER_SERIALS = frozenset(
    s.casefold()
    for s in (
        "",
        "0",
        "none",
        "null",
        "n/a",
        "to be filled by o.e.m.",
        "system serial number",
        "default string",
        "not applicable",
        "not specified",
        "0123456789",
        "chassis serial number",
        "serial number",
    )
)
_EPOCH_TEXT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_MAX_SERIAL = 128
_MAX_TEXT = 256
_MAX_CUSTOM = 200
_BOOL_FIELDS = (
    "firewall_enabled",
    "disk_encrypted",
    "screen_lock_enabled",
    "remote_login_enabled",
    "auto_updates_enabled",
    "sip_enabled",
    "gatekeeper_enabled",
)
_TEXT_FIELDS = ("os_name", "os_build", "hostname", "distribution", "agent_name")
_KNOWN = frozenset(
    ("serial", "collected_at", "platform", "os_version", "agent_version", "owners", "custom", "screen_lock_delay_s",
     "unmeasurable")
    + _BOOL_FIELDS
    + _TEXT_FIELDS
)
_PLATFORMS = {
    "darwin": OsFamily.DARWIN,
    "macos": OsFamily.DARWIN,
    "linux": OsFamily.LINUX,
    "windows": OsFamily.WINDOWS,
    "win32": OsFamily.WINDOWS,
}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field of one item that is wrong, and what was expected there."""

    field: str
    expected: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "expected": self.expected}


class ItemError(ValueError):
    """An ingest item was refused; ``problems`` names every bad field."""

    def __init__(self, problems: tuple[FieldProblem, ...]) -> None:
        super().__init__("; ".join(f"{p.field}: expected {p.expected}" for p in problems))
        self.problems = problems


def is_placeholder_serial(serial: str) -> bool:
    """True for the empty and vendor-placeholder serials that never identify a device."""
    text = serial.strip().casefold()
    return text in PLACEHOLDER_SERIALS or set(text) <= {"0", " ", "-", "x"}


def serial_problem(raw: object) -> str | None:
    """What a usable hardware serial would be, when ``raw`` is not one; None when it is.

    The one serial rule of every ingest path (JSON API, Stethoscope, osquery enroll, file import):
    a string, after trimming 1 to 128 printable characters (no NUL, newline or other control
    character), and not an empty or vendor-placeholder value.
    """
    if not isinstance(raw, str):
        return "the device's hardware serial number as a string"
    serial = raw.strip()
    if is_placeholder_serial(serial) or len(serial) > _MAX_SERIAL or not serial.isprintable():
        shown = raw[:40].encode("unicode_escape").decode("ascii")
        return (
            f"a real hardware serial number of at most {_MAX_SERIAL} printable characters, not `{shown}`"
            " (empty, a vendor placeholder, too long, or with control characters)"
        )
    return None


def clean_serial(raw: object, field: str, problems: list[FieldProblem]) -> str:
    """The serial, trimmed, or an empty string after recording a problem (``serial_problem``)."""
    problem = serial_problem(raw)
    if problem is not None:
        problems.append(FieldProblem(field, problem))
        return ""
    return str(raw).strip()


def future_problem(moment: datetime, *, received_at: datetime, max_future_skew: timedelta) -> str | None:
    """What an acceptable time would be, when ``moment`` is further in the future than the skew allows; else None.

    The one time-skew rule of every ingest path (``ingest.max_future_skew_s``): a report dated
    ahead would pin the device's time in the future, and its later correct reports would then
    look older than the latest.
    """
    latest = received_at + max_future_skew
    if moment <= latest:
        return None
    return f"a time not after {latest.isoformat()} (`{moment.isoformat()}` is in the future; check the device clock)"


def parse_time(raw: object) -> datetime | None:
    """A timezone-aware UTC datetime from RFC 3339 text with an offset, or epoch seconds (number or digits); None for anything else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and _EPOCH_TEXT.fullmatch(raw.strip()):
        raw = float(raw)
    if isinstance(raw, (int, float)):
        if not 0 <= raw < 253402300800:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=raw)
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
            # A time at the edge of the calendar (0001-01-01T00:00:00+01:00) has no UTC equivalent.
            return None if moment.tzinfo is None else moment.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    return None


def parse_platform(raw: str) -> OsFamily:
    """The OS family of a platform word (osquery's platform, Stethoscope's, or ours)."""
    word = raw.strip().lower()
    if word in _PLATFORMS:
        return _PLATFORMS[word]
    if word in ("ubuntu", "debian", "rhel", "centos", "fedora", "arch", "suse", "opensuse", "gentoo", "amzn", "nixos", "pop", "linuxmint", "manjaro", "rocky", "almalinux"):
        return OsFamily.LINUX
    return OsFamily.UNKNOWN


def typed_fact(raw: str) -> Fact:
    """An osquery column value typed: integers, decimals and true/false become numbers and bools."""
    text = raw.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return raw
    return value if value == value and value not in (float("inf"), float("-inf")) else raw


def parse_snapshot_item(
    item: object, *, where: str, received_at: datetime, max_future_skew: timedelta, source: str = "api"
) -> DeviceSnapshot:
    """One API item as a snapshot.

    Raises:
        ItemError: every problem with the item, each naming its field (prefixed by ``where``) and what was expected.
    """
    problems: list[FieldProblem] = []
    if not isinstance(item, dict):
        raise ItemError((FieldProblem(where, "an object with serial, collected_at, platform and facts"),))
    for key in item:
        if key not in _KNOWN:
            problems.append(FieldProblem(f"{where}.{key}", f"one of the known fields ({', '.join(sorted(_KNOWN))}); put other facts under `custom`"))
    serial = clean_serial(item.get("serial"), f"{where}.serial", problems)
    collected_at = parse_time(item.get("collected_at"))
    if collected_at is None:
        problems.append(FieldProblem(f"{where}.collected_at", "a time with offset such as `2026-11-22T14:05:00Z`, or epoch seconds"))
    elif (ahead := future_problem(collected_at, received_at=received_at, max_future_skew=max_future_skew)) is not None:
        problems.append(FieldProblem(f"{where}.collected_at", ahead))
    raw_platform = item.get("platform")
    platform = OsFamily.UNKNOWN
    if not isinstance(raw_platform, str) or parse_platform(raw_platform) is OsFamily.UNKNOWN:
        problems.append(FieldProblem(f"{where}.platform", "one of `darwin`, `linux`, `windows`"))
    else:
        platform = parse_platform(raw_platform)
    texts: dict[str, str] = {}
    for name in _TEXT_FIELDS:
        value = item.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            problems.append(FieldProblem(f"{where}.{name}", f"a string of at most {_MAX_TEXT} characters"))
            continue
        texts[name] = value.strip()
    versions: dict[str, Version | None] = {}
    for name in ("os_version", "agent_version"):
        value = item.get(name)
        if value is None:
            versions[name] = None
            continue
        try:
            if not isinstance(value, str) or len(value) > _MAX_TEXT:
                raise ValueError
            versions[name] = Version.parse(value)
        except ValueError:
            problems.append(FieldProblem(f"{where}.{name}", "a dotted version string such as `14.4.1`"))
    bools: dict[str, bool | None] = {}
    for name in _BOOL_FIELDS:
        value = item.get(name)
        if value is not None and not isinstance(value, bool):
            problems.append(FieldProblem(f"{where}.{name}", "true, false or null"))
            continue
        bools[name] = value
    delay = item.get("screen_lock_delay_s")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int) or delay < 0):
        problems.append(FieldProblem(f"{where}.screen_lock_delay_s", "a whole number of seconds (0 or more) or null"))
        delay = None
    owners_raw = item.get("owners", [])
    owners: tuple[str, ...] = ()
    if not isinstance(owners_raw, list) or not all(isinstance(o, str) and "@" in o and len(o) <= _MAX_TEXT for o in owners_raw):
        problems.append(FieldProblem(f"{where}.owners", "a list of email addresses"))
    else:
        owners = tuple(dict.fromkeys(o.strip().lower() for o in owners_raw))  # unique per device: not interned
    custom = _custom(item.get("custom", {}), f"{where}.custom", problems)
    unmeasurable = _unmeasurable(item, where, problems)
    if problems:
        raise ItemError(tuple(problems))
    intern = sys.intern
    return DeviceSnapshot(
        serial=serial,
        platform=platform,
        os_name=intern(texts["os_name"]),
        os_version=versions["os_version"],
        collected_at=collected_at,  # type: ignore[arg-type]  # INVARIANT: None was reported as a problem
        received_at=received_at,
        source=intern(source),
        hostname=texts["hostname"],
        owners=owners,
        distribution=intern(texts["distribution"].lower()),
        os_build=intern(texts["os_build"]),
        agent_name=intern(texts["agent_name"]),
        agent_version=versions["agent_version"],
        screen_lock_delay_s=delay,
        custom=custom,
        unmeasurable=unmeasurable,
        **bools,
    )


_MEASURED_FIELDS = frozenset((*_BOOL_FIELDS, "screen_lock_delay_s"))


def _unmeasurable(item: Mapping[str, object], where: str, problems: list[FieldProblem]) -> frozenset[str]:
    """``unmeasurable``: the facts the sender cannot measure on the device; each must be absent or null."""
    raw = item.get("unmeasurable", [])
    path = f"{where}.unmeasurable"
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        problems.append(FieldProblem(path, "a list of fact names such as `[\"screen_lock_delay_s\"]`"))
        return frozenset()
    found: set[str] = set()
    reported = item.get("custom")
    custom = reported if isinstance(reported, dict) else {}
    for name in raw:
        if name.startswith("custom.") and 7 < len(name) <= 71:
            value = custom.get(name[7:])
        elif name in _MEASURED_FIELDS:
            value = item.get(name)
        else:
            problems.append(FieldProblem(path, f"health fact names ({', '.join(sorted(_MEASURED_FIELDS))}) or `custom.<name>`, not `{name[:80]}`"))
            continue
        if value is not None:
            problems.append(FieldProblem(f"{where}.{name}", f"null or absent, since `unmeasurable` names `{name}`"))
            continue
        found.add(sys.intern(name))
    return frozenset(found)


def _custom(raw: object, where: str, problems: list[FieldProblem]) -> dict[str, Fact]:
    if not isinstance(raw, dict) or len(raw) > _MAX_CUSTOM:
        problems.append(FieldProblem(where, f"an object of at most {_MAX_CUSTOM} facts"))
        return {}
    out: dict[str, Fact] = {}
    for key, value in raw.items():
        if not key or len(key) > 64:
            problems.append(FieldProblem(f"{where}.{key}", "a fact name of 1 to 64 characters"))
        elif isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= _MAX_TEXT):
            out[sys.intern(key)] = value
        else:
            problems.append(FieldProblem(f"{where}.{key}", "a string, number or boolean"))
    return out

