"""Netflix Stethoscope device results (its GraphQL JSON) to DeviceSnapshot.

Owns: is_stethoscope_item, parse_stethoscope_item.
Must not import: aiohttp, gateway.store backends.

What is accepted, as an item of the ingest API's ``snapshots`` list (or a whole GraphQL response
posted as the item)::

    {"data": {
       "device": {"deviceId": "...", "deviceName": "bobs-mbp", "platform": "darwin",
                  "platformName": "macOS", "osVersion": "15.6", "osBuild": "24G84",
                  "hardwareSerial": "C02XK0AAJGH6", "stethoscopeVersion": "7.1.0",
                  "identifiers": {"serialNumbers": ["C02XK0AAJGH6"]},
                  "lastScanDate": "2026-11-22T14:05:00Z",
                  "practices": {"firewall": {"status": "PASS"}, ...}},
       "policy": {"validate": {"status": "FAIL", "osVersion": "PASS", "firewall": "PASS",
                               "diskEncryption": "FAIL", "screenLock": "PASS",
                               "remoteLogin": "PASS", "automaticUpdates": "NUDGE"}}},
     "owner": "bob@example.com", "collected_at": "2026-11-22T14:05:00Z"}

That is the ``device`` and ``policy.validate`` results of the Stethoscope app's local GraphQL
endpoint (or a back end's ``device`` record with ``practices``), wrapped in ``data`` as GraphQL
answers are. The serial is ``hardwareSerial`` or the first of ``identifiers.serialNumbers``;
the time is the item's ``collected_at``, else ``lastScanDate``/``lastSync``. Owners come from the
item's ``owner``/``owners`` or the device's ``email``.

Stethoscope reports each practice as PASS/FAIL/NUDGE/UNKNOWN/UNSUPPORTED against its policy, not
the raw setting, so facts assume its default policy: firewall, disk encryption, automatic
updates and screen lock are settings that PASS when on (NUDGE or FAIL means off); remote login
PASSes when off. UNKNOWN/UNSUPPORTED give None. The overall status and the OS-version verdict
are kept as custom facts ``stethoscope_status`` and ``stethoscope_os_version``.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Mapping

from gateway.ingest.snapshot_parse import FieldProblem, ItemError, clean_serial, future_problem, parse_platform, parse_time
from policy_engine.model import DeviceSnapshot, Fact, OsFamily, Version

_ON_WHEN_PASS = {
    "firewall": "firewall_enabled",
    "diskEncryption": "disk_encrypted",
    "automaticUpdates": "auto_updates_enabled",
    "screenLock": "screen_lock_enabled",
}
_OFF_WHEN_PASS = {"remoteLogin": "remote_login_enabled"}
_STATUSES = frozenset(("PASS", "FAIL", "NUDGE", "UNKNOWN", "UNSUPPORTED"))


def is_stethoscope_item(item: object) -> bool:
    """True for an item shaped like a Stethoscope GraphQL answer."""
    return isinstance(item, dict) and isinstance(item.get("data"), dict) and isinstance(item["data"].get("device"), dict)


def _status(raw: object) -> str | None:
    if isinstance(raw, dict):
        raw = raw.get("status")
    if isinstance(raw, str) and raw.upper() in _STATUSES:
        return raw.upper()
    return None


def parse_stethoscope_item(
    item: Mapping[str, object], *, where: str, received_at: datetime, max_future_skew: timedelta
) -> DeviceSnapshot:
    """One Stethoscope result as a snapshot (source ``stethoscope``).

    Raises:
        ItemError: every problem, each naming its field and what was expected.
    """
    problems: list[FieldProblem] = []
    data = item.get("data")
    device = data.get("device") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(device, dict):
        raise ItemError((FieldProblem(f"{where}.data.device", "a Stethoscope device object"),))
    at = f"{where}.data.device"
    serial_raw = device.get("hardwareSerial")
    identifiers = device.get("identifiers")
    if not serial_raw and isinstance(identifiers, dict) and isinstance(identifiers.get("serialNumbers"), list):
        serial_raw = next(iter(identifiers["serialNumbers"]), None)
    serial = clean_serial(serial_raw, f"{at}.hardwareSerial", problems)
    time_raw = item.get("collected_at") or device.get("lastScanDate") or device.get("lastSync")
    collected_at = parse_time(time_raw)
    if collected_at is None:
        problems.append(FieldProblem(f"{where}.collected_at", "a time with offset, or a device `lastScanDate`/`lastSync`"))
    elif (ahead := future_problem(collected_at, received_at=received_at, max_future_skew=max_future_skew)) is not None:
        problems.append(FieldProblem(f"{where}.collected_at", ahead))
    platform_raw = device.get("platform")
    platform = parse_platform(platform_raw) if isinstance(platform_raw, str) else OsFamily.UNKNOWN
    if platform is OsFamily.UNKNOWN:
        problems.append(FieldProblem(f"{at}.platform", "`darwin`, `win32` or `linux` (or a Linux distribution id)"))
    os_version: Version | None = None
    if device.get("osVersion") is not None:
        try:
            os_version = Version.parse(str(device["osVersion"]))
        except ValueError:
            problems.append(FieldProblem(f"{at}.osVersion", "a dotted version such as `10.15.7`"))
    agent_version: Version | None = None
    if isinstance(device.get("stethoscopeVersion"), str):
        try:
            agent_version = Version.parse(device["stethoscopeVersion"])
        except ValueError:
            agent_version = None
    owners_raw = item.get("owners") or ([item["owner"]] if item.get("owner") else []) or ([device["email"]] if device.get("email") else [])
    if not isinstance(owners_raw, list) or not all(isinstance(o, str) and "@" in o for o in owners_raw):
        problems.append(FieldProblem(f"{where}.owners", "a list of email addresses"))
        owners_raw = []
    policy = data.get("policy")
    verdicts = policy.get("validate") if isinstance(policy, dict) and isinstance(policy.get("validate"), dict) else {}
    practices = device.get("practices") if isinstance(device.get("practices"), dict) else {}
    if problems:
        raise ItemError(tuple(problems))

    def verdict(name: str) -> str | None:
        return _status(verdicts.get(name)) or _status(practices.get(name))

    facts: dict[str, bool | None] = {}
    for name, field in _ON_WHEN_PASS.items():
        status = verdict(name)
        facts[field] = None if status in (None, "UNKNOWN", "UNSUPPORTED") else status == "PASS"
    for name, field in _OFF_WHEN_PASS.items():
        status = verdict(name)
        facts[field] = None if status in (None, "UNKNOWN", "UNSUPPORTED") else status != "PASS"
    custom: dict[str, Fact] = {}
    overall = _status(verdicts.get("status"))
    if overall:
        custom["stethoscope_status"] = overall
    os_verdict = verdict("osVersion")
    if os_verdict:
        custom["stethoscope_os_version"] = os_verdict
    intern = sys.intern
    name = device.get("platformName") or device.get("osName") or ""
    build = device.get("osBuild") or ""
    hostname = device.get("deviceName") or device.get("friendlyName") or ""
    return DeviceSnapshot(
        serial=serial,
        platform=platform,
        os_name=intern(str(name)[:256]),
        os_version=os_version,
        collected_at=collected_at,  # type: ignore[arg-type]  # INVARIANT: None was reported as a problem
        received_at=received_at,
        source="stethoscope",
        hostname=str(hostname)[:256],
        owners=tuple(dict.fromkeys(intern(o.strip().lower()) for o in owners_raw)),
        distribution=intern(platform_raw.lower()) if platform is OsFamily.LINUX and platform_raw.lower() != "linux" else "",
        os_build=intern(str(build)[:256]),
        agent_name="stethoscope",
        agent_version=agent_version,
        custom=custom,
        **facts,
    )
