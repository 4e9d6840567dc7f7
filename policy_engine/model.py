"""Inputs to the policy engine: a device's health snapshot and the values inside it.

Owns: DeviceSnapshot, OsFamily, Version, Fact.
Must not import: anything outside the standard library (no aiohttp, orjson, gateway, breakglass).

Snapshots are resident for every device in the fleet (100,000 of them in one process), so the
classes use ``__slots__`` and callers intern repeated strings (platform names, OS names, agent
names) with ``sys.intern`` when they build snapshots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping, Union

Fact = Union[str, int, float, bool]
"""A custom fact value, as reported by an agent query (already typed by the ingest layer)."""

EMPTY_FACTS: Mapping[str, Fact] = MappingProxyType({})


class OsFamily(StrEnum):
    """The platform a device runs; ``UNKNOWN`` when the agent did not say."""

    DARWIN = "darwin"
    LINUX = "linux"
    WINDOWS = "windows"
    UNKNOWN = "unknown"


_VERSION_TEXT = re.compile(r"\d+(?:\.\d+)*")


@dataclass(frozen=True, slots=True, order=False)
class Version:
    """A dotted numeric version compared part by part: ``10.15.7 < 11.0 < 11.5.1``.

    Missing trailing parts count as zero, so ``14 == 14.0 == 14.0.0``. ``text`` keeps what the
    agent reported (``22.04``, ``10.0.19045``) for display; it takes no part in comparison.
    """

    parts: tuple[int, ...]
    text: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``14.4.1``, ``22.04``, ``10.0.19045`` or ``13.2.1 (22D68)`` (leading numbers only).

        Raises:
            ValueError: the text does not start with a dotted number.
        """
        match = _VERSION_TEXT.match(text.strip().lstrip("vV"))
        if match is None:
            raise ValueError(f"`{text}` is not a version; write dotted numbers such as `14.2`")
        parts = tuple(int(p) for p in match.group(0).split("."))
        return cls(parts=parts, text=text.strip())

    def _key(self) -> tuple[int, ...]:
        parts = self.parts
        end = len(parts)
        while end > 1 and parts[end - 1] == 0:
            end -= 1
        return parts[:end]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __le__(self, other: Version) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: Version) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: Version) -> bool:
        return self._key() >= other._key()

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """A device's latest health as reported by its agent, already parsed and typed.

    A health fact is ``None`` when the agent did not report it (not supported on the platform,
    query not yet run); the policy decides what unknown means for each check (``if_unknown``).
    A fact the reporting source cannot see on this device at all (a per-user desktop setting that
    osqueryd, running as root, cannot read) is ``None`` too and is named in ``unmeasurable``; the
    policy decides what that means separately (``if_unmeasurable``).
    """

    serial: str
    """Hardware serial number: the device's identity."""
    platform: OsFamily
    os_name: str
    """Human name of the OS: ``macOS``, ``Ubuntu``, ``Windows 11 Pro``."""
    os_version: Version | None
    collected_at: datetime
    """When the agent collected the facts (device clock, timezone-aware UTC)."""
    received_at: datetime
    """When Gatehouse received them (Gatehouse clock, timezone-aware UTC)."""
    source: str
    """How it arrived: ``osquery``, ``api``, ``stethoscope``, ``import``."""
    hostname: str = ""
    owners: tuple[str, ...] = ()
    """Owner email addresses, lowercase."""
    distribution: str = ""
    """Linux distribution id (``ubuntu``, ``fedora``); empty elsewhere."""
    os_build: str = ""
    agent_name: str = ""
    agent_version: Version | None = None
    firewall_enabled: bool | None = None
    disk_encrypted: bool | None = None
    screen_lock_enabled: bool | None = None
    screen_lock_delay_s: int | None = None
    """Seconds of idle before the screen locks."""
    remote_login_enabled: bool | None = None
    auto_updates_enabled: bool | None = None
    sip_enabled: bool | None = None
    """macOS System Integrity Protection."""
    gatekeeper_enabled: bool | None = None
    """macOS Gatekeeper."""
    custom: Mapping[str, Fact] = field(default_factory=lambda: EMPTY_FACTS)
    """Facts from queries Gatehouse has no field for, keyed by the policy's fact name; read-only."""
    unmeasurable: frozenset[str] = frozenset()
    """Facts the source says it cannot measure on this device, by the policy's fact name
    (``screen_lock_delay_s``, ``custom.<name>``); each of them is ``None`` above."""

    def __post_init__(self) -> None:
        # INVARIANT: custom facts are never mutated after construction; freeze dicts passed in.
        if type(self.custom) is dict:
            object.__setattr__(
                self, "custom", MappingProxyType(self.custom) if self.custom else EMPTY_FACTS
            )
