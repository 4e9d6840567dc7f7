"""Netflix Stethoscope results to DeviceSnapshot: the desktop app's GraphQL answers and the back end's merged device records.

Owns: is_stethoscope_item, parse_stethoscope_item, StethoscopeReading, Disagreement, STETHOSCOPE_PRACTICES.
Must not import: aiohttp, gateway.store backends, gateway.metrics (the pipeline logs and counts
what a reading reports).

Read at the source: stethoscope-app 5.0.6 (``schema.graphql``, ``docs/GRAPHQL.md``,
``src/resolvers/Device.js``, ``Policy.js``, ``platform/*Security.js``) and the Stethoscope back end
(``stethoscope/plugins/practices.py``, ``plugins/sources/jamf/base.py``, ``api/defaults.py``).

**App answers** (an item of the ingest API's ``snapshots`` list, or the whole body)::

    {"data": {"device": {"platform": "darwin", "platformName": "macOS", "osName": "macOS",
                         "osVersion": "15.6.0", "osBuild": "24G84", "hardwareSerial": "C02XK0AAJGH6",
                         "deviceName": "bobs-mbp", "stethoscopeVersion": "5.0.6",
                         "security": {"firewall": "ON", "diskEncryption": "ON", "screenLock": "ON",
                                      "screenIdle": "PASS", "remoteLogin": "OFF", "automaticUpdates": "OFF"}},
              "policy": {"validate": {"status": "NUDGE", "firewall": "PASS", "automaticUpdates": "NUDGE", ...}}},
     "collected_at": "2026-11-22T14:05:00Z", "owners": ["bob@example.com"]}

Facts come from the raw settings in ``device.security`` (``ON``/``OFF``; ``screenIdle`` is
``PASS``/``FAIL``). A practice absent there is filled in from its ``policy.validate`` verdict read
with Stethoscope's default policy (PASS means on, or off for ``remoteLogin``; FAIL or NUDGE the
opposite). A verdict is the weaker source: Stethoscope also answers PASS for a practice its
platform cannot check. When both are present and say opposite things, the raw setting wins and
the reading carries a Disagreement (serial, practice, both values) that the pipeline logs and counts.

**Not measurable by Stethoscope** (the fact is None and named in ``DeviceSnapshot.unmeasurable``,
so the policy's ``if_unmeasurable`` decides, not ``if_unknown``):

- ``UNSUPPORTED`` (app 1.0.3 and older had it in its FeatureState enum) and ``UNKNOWN``. Since
  app 1.0.3 ``Device.js`` (``securityToDeviceStatus``) answers ``UNKNOWN`` for every practice the
  platform has no resolver for (``Security.js`` returns UNSUPPORTED: ``screenIdle`` on Windows) and
  for the platform resolvers' own ``UNKNOWN`` (``automaticUpdates`` on Linux other than Ubuntu,
  ``screenLock`` on Amazon WorkSpaces). Both are a fixed "this app does not measure this here",
  not a read that failed this time (a failing read throws, and GraphQL answers null with an
  error), so UNKNOWN is read as not measurable. A null or other word is merely not reported (None).
- On macOS the app answers ``screenLock: ON`` and ``screenIdle: PASS`` without reading anything
  (hard-coded since app 3.0.6, ``MacSecurity.js``), so from those versions (or an unknown
  version) both are not measurable there, whatever the answer or the verdict says.
- ``screen_lock_delay_s`` on every answer: Stethoscope compares the idle time with its own
  policy's bound and answers PASS/FAIL (``screenIdle``), never seconds. Check
  ``custom.screen_idle_ok`` instead.
- Back-end records: practice status ``na`` (the back end's ``NA_PLATFORMS``, such as
  ``remotelogin`` on Windows).

Other fields: the OS family from ``platform`` (``darwin``, ``win32``, ``linux`` or a distribution
word); a Linux distribution id (``ubuntu``, ``debian``, ``fedora``, ``rhel``, ``arch``…, osquery's
ids) from ``platformName``/``osName`` (``/etc/os-release`` NAME); ``osVersion`` as the app formats
it (``12.undefined.0`` on Debian reads as 12, ``undefined…`` on Arch as not reported). The
overall verdict and the OS-version verdict are kept as custom facts ``stethoscope_status`` and
``stethoscope_os_version``.

**Back-end records** (an item that has ``identifiers`` and ``practices`` objects, as in the
back end's ``/devices/merged/<email>`` list)::

    {"name": "bobs-mbp", "platform": "Mac", "os": "Mac OS X", "os_version": "10.12.2",
     "identifiers": {"serial": "C02ABCDEFG"}, "last_sync": "2016-12-30T19:15:38+00:00",
     "practices": {"firewall": {"status": "ok", "value": true}, "encryption": {...},
                   "autoupdate": {...}, "screenlock": {...}, "remotelogin": {...}, "uptodate": {...}}}

``value`` is whether the practice is satisfied (``remotelogin`` true means Remote Login is off);
without a ``value``, ``status`` ``ok`` means satisfied, ``nudge``/``warn`` not, ``na`` not
measurable (above), ``unknown`` not reported. Mobile records (iOS, Android) are refused: Gatehouse gates laptops.

**Time**: the item's ``collected_at`` (written by whoever relays the answer), else the record's
``last_sync``; an app answer carries no time, so without ``collected_at`` it is dated when
Gatehouse received it. **Owners**: only the item's ``owner``/``owners`` beside ``data`` (the
relay's word, as for any API item). Nothing inside the device's own answer (``email``, a user
name) is taken as an owner; devices without owners get them from the operator's owner binding.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

from gateway.ingest.snapshot_parse import FieldProblem, ItemError, clean_serial, future_problem, parse_platform, parse_time
from policy_engine.model import DeviceSnapshot, Fact, OsFamily, Version


@dataclass(frozen=True, slots=True)
class _Practice:
    fact: str
    """A DeviceSnapshot field, or ``custom.<name>``."""
    pass_means_on: bool = True
    """False for practices Stethoscope's default policy wants off (``remoteLogin: NEVER``)."""


STETHOSCOPE_PRACTICES: Mapping[str, _Practice] = {
    "firewall": _Practice("firewall_enabled"),
    "diskEncryption": _Practice("disk_encrypted"),
    "automaticUpdates": _Practice("auto_updates_enabled"),
    "screenLock": _Practice("screen_lock_enabled"),
    "remoteLogin": _Practice("remote_login_enabled", pass_means_on=False),
    "screenIdle": _Practice("custom.screen_idle_ok"),
    "openWifiConnections": _Practice("custom.no_open_wifi_networks"),
}
"""Stethoscope practice -> fact. ``screenIdle`` is true when the idle time before the lock is within
the bound of the policy the app was asked with (it reports PASS/FAIL, never seconds);
``openWifiConnections`` is true when no open Wi-Fi network is remembered (the app has no raw
value for it, only the verdict). The metric label set of disagreements is these names."""

_HARDCODED_ON_MACOS = frozenset(("screenLock", "screenIdle"))
_HARDCODED_SINCE = Version.parse("3.0.6")
_RAW_TRUE = frozenset(("ON", "PASS"))
_RAW_FALSE = frozenset(("OFF", "FAIL"))
_RAW_NOT_MEASURED = frozenset(("UNKNOWN", "UNSUPPORTED"))
_ONLY_AS_VERDICT = frozenset(("screen_lock_delay_s",))
"""Facts Stethoscope judges against its own policy but never reports as a value, on any platform."""
_BACKEND_PRACTICES: Mapping[str, tuple[str, bool]] = {
    "firewall": ("firewall_enabled", True),
    "encryption": ("disk_encrypted", True),
    "autoupdate": ("auto_updates_enabled", True),
    "screenlock": ("screen_lock_enabled", True),
    "remotelogin": ("remote_login_enabled", False),
}
"""Back-end practice -> (fact, whether satisfied means the setting is on)."""
_BACKEND_PLATFORMS = {"mac": OsFamily.DARWIN, "mac os x": OsFamily.DARWIN, "macos": OsFamily.DARWIN,
                      "windows": OsFamily.WINDOWS, "linux": OsFamily.LINUX}
_DISTRIBUTIONS = (
    ("ubuntu", "ubuntu"), ("debian", "debian"), ("fedora", "fedora"), ("red hat enterprise linux", "rhel"),
    ("arch linux", "arch"), ("centos", "centos"), ("rocky linux", "rocky"), ("almalinux", "almalinux"),
    ("linux mint", "linuxmint"), ("pop!_os", "pop"), ("manjaro", "manjaro"), ("opensuse tumbleweed", "opensuse-tumbleweed"),
    ("opensuse leap", "opensuse-leap"), ("elementary os", "elementary"), ("zorin os", "zorin"), ("kali", "kali"),
    ("amazon linux", "amzn"), ("nixos", "nixos"), ("gentoo", "gentoo"),
)
"""os-release NAME prefix (lowercase) -> os-release ID, the distribution ids osquery reports and policies use."""


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A practice whose raw setting and verdict say opposite things; the raw setting was used."""

    practice: str
    setting: str
    verdict: str


@dataclass(frozen=True, slots=True)
class StethoscopeReading:
    """One Stethoscope item as a snapshot, with the disagreements found while reading it."""

    snapshot: DeviceSnapshot
    disagreements: tuple[Disagreement, ...] = ()


def is_stethoscope_item(item: object) -> bool:
    """True for an item shaped like a Stethoscope app answer or back-end device record."""
    if not isinstance(item, dict):
        return False
    data = item.get("data")
    if isinstance(data, dict) and isinstance(data.get("device"), dict):
        return True
    return isinstance(item.get("identifiers"), dict) and isinstance(item.get("practices"), dict)


def linux_distribution(name: str) -> str:
    """The os-release ID of an os-release NAME (``Debian GNU/Linux`` -> ``debian``), or ``""`` when unknown."""
    lowered = name.strip().lower()
    return next((ident for prefix, ident in _DISTRIBUTIONS if lowered.startswith(prefix)), "")


def _word(raw: object) -> str | None:
    return raw.strip().upper() if isinstance(raw, str) else None


def _raw_fact(raw: str | None) -> bool | None:
    if raw in _RAW_TRUE:
        return True
    if raw in _RAW_FALSE:
        return False
    return None


def _verdict_fact(spec: _Practice, verdict: str | None) -> bool | None:
    if verdict == "PASS":
        return spec.pass_means_on
    if verdict == "FAIL" or (verdict == "NUDGE" and spec.pass_means_on):
        return not spec.pass_means_on
    return None


def _time(item: Mapping[str, object], fallback: object, where: str, received_at: datetime, max_future_skew: timedelta,
          problems: list[FieldProblem]) -> datetime:
    raw = item.get("collected_at")
    field = f"{where}.collected_at"
    if raw is None:
        raw, field = fallback, f"{where}.last_sync"
    if raw is None:
        return received_at
    collected_at = parse_time(raw)
    if collected_at is None:
        problems.append(FieldProblem(field, "a time with offset such as `2026-11-22T14:05:00Z`, or no time (then the time of receipt)"))
    elif (ahead := future_problem(collected_at, received_at=received_at, max_future_skew=max_future_skew)) is not None:
        problems.append(FieldProblem(field, ahead))
    return collected_at or received_at


def _owners(item: Mapping[str, object], where: str, problems: list[FieldProblem]) -> tuple[str, ...]:
    raw = item.get("owners") or ([item["owner"]] if item.get("owner") else [])
    if not isinstance(raw, list) or not all(isinstance(o, str) and "@" in o for o in raw):
        problems.append(FieldProblem(f"{where}.owners", "a list of email addresses"))
        return ()
    return tuple(dict.fromkeys(sys.intern(o.strip().lower()) for o in raw))


def _version(raw: object, field: str, problems: list[FieldProblem]) -> Version | None:
    if raw is None:
        return None
    text = str(raw).split(".undefined", 1)[0]
    if text.startswith("undefined"):
        return None
    try:
        return Version.parse(text)
    except ValueError:
        problems.append(FieldProblem(field, "a dotted version such as `10.15.7`"))
        return None


def parse_stethoscope_item(
    item: Mapping[str, object], *, where: str, received_at: datetime, max_future_skew: timedelta
) -> StethoscopeReading:
    """One Stethoscope app answer or back-end record as a snapshot (source ``stethoscope``).

    Raises:
        ItemError: every problem, each naming its field and what was expected.
    """
    data = item.get("data")
    if isinstance(data, dict) and isinstance(device := data.get("device"), dict):
        policy = data.get("policy")
        verdicts = policy.get("validate") if isinstance(policy, dict) else None
        return _parse_app_answer(item, device, verdicts if isinstance(verdicts, dict) else {},
                                 where=where, received_at=received_at, max_future_skew=max_future_skew)
    identifiers, practices = item.get("identifiers"), item.get("practices")
    if isinstance(identifiers, dict) and isinstance(practices, dict):
        return _parse_backend_record(item, identifiers, practices, where=where, received_at=received_at, max_future_skew=max_future_skew)
    raise ItemError((FieldProblem(f"{where}.data.device", "a Stethoscope device object, or a back-end record with `identifiers` and `practices`"),))


def _parse_app_answer(
    item: Mapping[str, object], device: Mapping[str, object], verdicts: Mapping[str, object], *,
    where: str, received_at: datetime, max_future_skew: timedelta,
) -> StethoscopeReading:
    problems: list[FieldProblem] = []
    at = f"{where}.data.device"
    serial = clean_serial(device.get("hardwareSerial"), f"{at}.hardwareSerial", problems)
    collected_at = _time(item, None, where, received_at, max_future_skew, problems)
    platform_raw = device.get("platform")
    platform = parse_platform(platform_raw) if isinstance(platform_raw, str) else OsFamily.UNKNOWN
    if platform is OsFamily.UNKNOWN:
        problems.append(FieldProblem(f"{at}.platform", "`darwin`, `win32` or `linux` (or a Linux distribution id)"))
    os_version = _version(device.get("osVersion"), f"{at}.osVersion", problems)
    agent_version: Version | None = None
    if isinstance(steth_version := device.get("stethoscopeVersion"), str):
        try:
            agent_version = Version.parse(steth_version)
        except ValueError:
            agent_version = None
    owners = _owners(item, where, problems)
    security = device.get("security")
    if not isinstance(security, dict):
        security = {}
    if problems:
        raise ItemError(tuple(problems))

    hardcoded = platform is OsFamily.DARWIN and (agent_version is None or agent_version >= _HARDCODED_SINCE)
    facts: dict[str, bool | None] = {}
    custom: dict[str, Fact] = {}
    disagreements: list[Disagreement] = []
    unmeasurable = set(_ONLY_AS_VERDICT)
    for practice, spec in STETHOSCOPE_PRACTICES.items():
        verdict = _word(verdicts.get(practice))
        fact = _verdict_fact(spec, verdict)
        if practice in security:
            raw = _word(security.get(practice))
            measured = _raw_fact(raw)
            if measured is not None and fact is not None and measured != fact:
                disagreements.append(Disagreement(practice, str(raw), str(verdict)))
            fact = measured
            if raw in _RAW_NOT_MEASURED:
                unmeasurable.add(spec.fact)
        if hardcoded and practice in _HARDCODED_ON_MACOS:
            fact = None
            unmeasurable.add(spec.fact)
        if spec.fact.startswith("custom."):
            if fact is not None:
                custom[spec.fact.removeprefix("custom.")] = fact
        else:
            facts[spec.fact] = fact
    if (overall := _word(verdicts.get("status"))) in ("PASS", "FAIL", "NUDGE"):
        custom["stethoscope_status"] = overall
    if (os_verdict := _word(verdicts.get("osVersion"))) in ("PASS", "FAIL", "NUDGE"):
        custom["stethoscope_os_version"] = os_verdict
    intern = sys.intern
    name = str(device.get("platformName") or device.get("osName") or "")[:256]
    distribution = ""
    if platform is OsFamily.LINUX:
        word = str(platform_raw).strip().lower()
        distribution = word if word != "linux" else linux_distribution(name) or linux_distribution(str(device.get("osName") or "")[:256])
    snapshot = DeviceSnapshot(
        serial=serial,
        platform=platform,
        os_name=intern(name),
        os_version=os_version,
        collected_at=collected_at,
        received_at=received_at,
        source="stethoscope",
        hostname=str(device.get("deviceName") or "")[:256],
        owners=owners,
        distribution=intern(distribution),
        os_build=intern(str(device.get("osBuild") or "")[:256]),
        agent_name="stethoscope",
        agent_version=agent_version,
        custom=custom,
        unmeasurable=frozenset(unmeasurable),
        **facts,
    )
    return StethoscopeReading(snapshot, tuple(disagreements))


def _parse_backend_record(
    item: Mapping[str, object], identifiers: Mapping[str, object], practices: Mapping[str, object], *,
    where: str, received_at: datetime, max_future_skew: timedelta,
) -> StethoscopeReading:
    problems: list[FieldProblem] = []
    serial = clean_serial(identifiers.get("serial"), f"{where}.identifiers.serial", problems)
    collected_at = _time(item, item.get("last_sync"), where, received_at, max_future_skew, problems)
    platform_raw = item.get("platform")
    platform = _BACKEND_PLATFORMS.get(platform_raw.strip().lower(), OsFamily.UNKNOWN) if isinstance(platform_raw, str) else OsFamily.UNKNOWN
    if platform is OsFamily.UNKNOWN:
        problems.append(FieldProblem(f"{where}.platform", "`Mac`, `Windows` or `Linux`; Gatehouse gates laptops, not phones"))
    os_version = _version(item.get("os_version"), f"{where}.os_version", problems)
    owners = _owners(item, where, problems)
    if problems:
        raise ItemError(tuple(problems))
    facts: dict[str, bool | None] = {}
    unmeasurable = set(_ONLY_AS_VERDICT)
    for key, (field, satisfied_means_on) in _BACKEND_PRACTICES.items():
        practice = practices.get(key)
        satisfied: bool | None = None
        if isinstance(practice, dict):
            value, status = practice.get("value"), _word(practice.get("status"))
            if isinstance(value, bool):
                satisfied = value
            elif status == "OK":
                satisfied = True
            elif status in ("NUDGE", "WARN"):
                satisfied = False
            elif status == "NA":
                unmeasurable.add(field)
        facts[field] = None if satisfied is None else satisfied == satisfied_means_on
    custom: dict[str, Fact] = {}
    uptodate = practices.get("uptodate")
    if isinstance(uptodate, dict) and (status := _word(uptodate.get("status"))) in ("OK", "NUDGE", "WARN"):
        custom["stethoscope_os_version"] = {"OK": "PASS", "NUDGE": "NUDGE", "WARN": "FAIL"}[status]
    name = str(item.get("os") or "")[:256]
    snapshot = DeviceSnapshot(
        serial=serial,
        platform=platform,
        os_name=sys.intern(name),
        os_version=os_version,
        collected_at=collected_at,
        received_at=received_at,
        source="stethoscope",
        hostname=str(item.get("name") or "")[:256],
        owners=owners,
        distribution=sys.intern(linux_distribution(name)) if platform is OsFamily.LINUX else "",
        agent_name="stethoscope",
        custom=custom,
        unmeasurable=frozenset(unmeasurable),
        **facts,  # type: ignore[arg-type]  # only the bool | None fields named in _BACKEND_PRACTICES
    )
    return StethoscopeReading(snapshot)
