"""DeviceSnapshot to and from compact JSON bytes, for every backend.

Owns: encode_snapshot, SnapshotDecoder, decode_snapshot, to_micros, from_micros.
Must not import: aiohttp, sqlite3, asyncpg.

Decoding interns the strings that repeat across a fleet (OS name and build, agent, source, fact
names) and shares equal versions, owner tuples, custom-fact maps, times and integers, so 100,000
resident snapshots stay small.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TypeVar, cast

import orjson

from policy_engine.model import EMPTY_FACTS, DeviceSnapshot, Fact, OsFamily, Version

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FAMILIES = {family.value: family for family in OsFamily}
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
    return (moment - _EPOCH) // _MICROSECOND  # a constant divisor: a third of the cost (the access ledger converts three per row)


def from_micros(micros: int) -> datetime:
    """The UTC datetime of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def _version(value: Version | None) -> list[object] | None:
    return None if value is None else [list(value.parts), value.text]


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
    if snapshot.unmeasurable:
        out["unmeasurable"] = sorted(snapshot.unmeasurable)
    return orjson.dumps(out)


class SnapshotDecoder:
    """Decodes snapshots, sharing equal values between them so a resident fleet stays small.

    A fleet repeats the same OS and agent versions, custom facts, screen-lock delays and (agents
    report whole seconds) collection times, and an owner with several devices repeats one owner
    tuple; one object for each distinct value keeps 100,000 resident snapshots small. A snapshot
    received when it was collected holds one datetime for both. Strings unique to a device
    (serial, hostname, owner emails) are not interned: that would add an interned-dict slot each.
    Not thread-safe: a backend keeps one per worker thread. Each memo is bounded and starts over
    when full.
    """

    _MEMO_LIMIT = 20_000

    def __init__(self) -> None:
        self._memo: dict[object, object] = {}
        self._owners: dict[object, tuple[str, ...]] = {}
        self._times: dict[int, datetime] = {}
        self._ints: dict[int, int] = {}

    def _shared(self, key: object, make: Callable[[], T]) -> T:
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= self._MEMO_LIMIT:
                self._memo.clear()
            found = self._memo[key] = make()
        return found  # type: ignore[return-value]

    def _version(self, raw: list[object] | None) -> Version | None:
        if raw is None:
            return None
        parts, text = cast(list[int], raw[0]), cast(str, raw[1])  # as the module-level _version wrote them
        key = ("v", tuple(parts), text)
        return self._shared(key, lambda: Version(parts=key[1], text=sys.intern(text)))

    def _time(self, micros: int) -> datetime:
        times = self._times
        found = times.get(micros)
        if found is None:
            if len(times) >= self._MEMO_LIMIT:
                times.clear()
            found = times[micros] = from_micros(micros)
        return found

    def _int(self, value: int | None) -> int | None:
        if value is None or -5 <= value <= 256:  # None and small ints are shared by CPython already
            return value
        ints = self._ints
        found = ints.get(value)
        if found is None:
            if len(ints) >= self._MEMO_LIMIT:
                ints.clear()
            found = ints[value] = value
        return found

    def _owner_tuple(self, raw: list[str] | None) -> tuple[str, ...]:
        if not raw:
            return ()
        key: object = raw[0] if len(raw) == 1 else tuple(raw)
        found = self._owners.get(key)
        if found is None:
            if len(self._owners) >= self._MEMO_LIMIT:
                self._owners.clear()
            found = self._owners[key] = (raw[0],) if len(raw) == 1 else key  # type: ignore[assignment]
        return found  # type: ignore[return-value]

    def forget_devices(self) -> None:
        """Drop the memos of per-device values (owner tuples, times) after a batch; versions, facts and ints stay shared.

        Call it when a batch is decoded, so that a long-lived decoder does not pin owner tuples
        and times of snapshots that have since been replaced.
        """
        self._owners.clear()
        self._times.clear()

    def decode(self, raw: bytes | str) -> DeviceSnapshot:
        """The snapshot ``encode_snapshot`` wrote."""
        data = orjson.loads(raw)
        intern = sys.intern
        custom_raw = data.get("custom")
        custom: Mapping[str, Fact] = EMPTY_FACTS
        if custom_raw:
            key = ("c", orjson.dumps(custom_raw, option=orjson.OPT_SORT_KEYS))
            custom = self._shared(key, lambda: MappingProxyType({intern(k): v for k, v in custom_raw.items()}))
        unmeasurable_raw = data.get("unmeasurable")
        unmeasurable: frozenset[str] = frozenset()
        if unmeasurable_raw:  # rows written before this field decode with none
            blind_key = ("u", tuple(unmeasurable_raw))
            unmeasurable = self._shared(blind_key, lambda: frozenset(intern(f) for f in unmeasurable_raw))
        collected_micros = data["collected_at"]
        received_micros = data["received_at"]
        collected_at = self._time(collected_micros)
        received_at = collected_at if received_micros == collected_micros else self._time(received_micros)
        return DeviceSnapshot(
            serial=data["serial"],
            platform=_FAMILIES[data["platform"]],
            os_name=intern(data["os_name"]),
            os_version=self._version(data.get("os_version")),
            collected_at=collected_at,
            received_at=received_at,
            source=intern(data["source"]),
            hostname=data.get("hostname", ""),
            owners=self._owner_tuple(data.get("owners")),
            distribution=intern(data.get("distribution", "")),
            os_build=intern(data.get("os_build", "")),
            agent_name=intern(data.get("agent_name", "")),
            agent_version=self._version(data.get("agent_version")),
            screen_lock_delay_s=self._int(data.get("screen_lock_delay_s")),
            custom=custom,
            unmeasurable=unmeasurable,
            **{name: data.get(name) for name in _BOOL_FIELDS},
        )


def decode_snapshot(raw: bytes | str) -> DeviceSnapshot:
    """The snapshot ``encode_snapshot`` wrote (one-off; backends keep a SnapshotDecoder)."""
    return SnapshotDecoder().decode(raw)
