"""DeviceSnapshot to and from compact JSON bytes, for every backend.

Owns: encode_snapshot, decode_snapshot, to_micros, from_micros.
Must not import: aiohttp, sqlite3, asyncpg.

Decoding interns the strings that repeat across a fleet (platform, OS name and build, agent,
source, fact names) so 100,000 resident snapshots share them.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import orjson

from policy_engine.model import DeviceSnapshot, Fact, OsFamily, Version

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BOOL_FIELDS = (
    "firewall_enabled",
    "disk_encrypted",
    "screen_lock_enabled",
    "remote_login_enabled",
    "auto_updates_enabled",
    "sip_enabled",
    "gatekeeper_enabled",
)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    """The UTC datetime of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def _version(value: Version | None) -> list[object] | None:
    return None if value is None else [list(value.parts), value.text]


def _unversion(raw: object) -> Version | None:
    if raw is None:
        return None
    parts, text = raw  # type: ignore[misc]
    return Version(parts=tuple(parts), text=sys.intern(text))


def encode_snapshot(snapshot: DeviceSnapshot) -> bytes:
    """Compact JSON of a snapshot; None facts are left out."""
    out: dict[str, object] = {
        "serial": snapshot.serial,
        "platform": snapshot.platform.value,
        "os_name": snapshot.os_name,
        "os_version": _version(snapshot.os_version),
        "collected_at": to_micros(snapshot.collected_at),
        "received_at": to_micros(snapshot.received_at),
        "source": snapshot.source,
    }
    for name in ("hostname", "distribution", "os_build", "agent_name"):
        value = getattr(snapshot, name)
        if value:
            out[name] = value
    if snapshot.owners:
        out["owners"] = list(snapshot.owners)
    if snapshot.agent_version is not None:
        out["agent_version"] = _version(snapshot.agent_version)
    for name in _BOOL_FIELDS:
        value = getattr(snapshot, name)
        if value is not None:
            out[name] = value
    if snapshot.screen_lock_delay_s is not None:
        out["screen_lock_delay_s"] = snapshot.screen_lock_delay_s
    if snapshot.custom:
        out["custom"] = dict(snapshot.custom)
    return orjson.dumps(out)


def decode_snapshot(raw: bytes | str) -> DeviceSnapshot:
    """The snapshot ``encode_snapshot`` wrote, with repeated strings interned."""
    data = orjson.loads(raw)
    intern = sys.intern
    custom: dict[str, Fact] = {intern(k): v for k, v in data.get("custom", {}).items()}
    return DeviceSnapshot(
        serial=data["serial"],
        platform=OsFamily(data["platform"]),
        os_name=intern(data["os_name"]),
        os_version=_unversion(data.get("os_version")),
        collected_at=from_micros(data["collected_at"]),
        received_at=from_micros(data["received_at"]),
        source=intern(data["source"]),
        hostname=data.get("hostname", ""),
        owners=tuple(intern(o) for o in data.get("owners", ())),
        distribution=intern(data.get("distribution", "")),
        os_build=intern(data.get("os_build", "")),
        agent_name=intern(data.get("agent_name", "")),
        agent_version=_unversion(data.get("agent_version")),
        screen_lock_delay_s=data.get("screen_lock_delay_s"),
        custom=custom,
        **{name: data.get(name) for name in _BOOL_FIELDS},
    )
