"""Convert a Netflix Stethoscope device policy into a Gatehouse policy document (plain data).

Owns: convert_stethoscope_policy, STETHOSCOPE_FACTS.
Must not import: anything outside the standard library and policy_engine; the gateway loads the
YAML/JSON and dumps the result (``gatehouse policy import-stethoscope FILE``).

Vocabulary, one to one (Stethoscope docs/POLICIES.md):
- ``ALWAYS`` -> ``equals: true``; ``NEVER`` -> ``equals: false`` (both ``severity: fail``). A
  setting the app cannot measure on the platform (the ingest names it in ``unmeasurable``) fails
  both, the default ``if_unmeasurable: fail``: under NEVER the app fails it too, under ALWAYS the
  app passes it (its verdict is PASS for anything it cannot check), which Gatehouse does not copy.
- ``SUGGESTED`` -> ``equals: true, severity: nudge`` (an unreported or unmeasurable setting nudges too).
- ``IF_SUPPORTED`` -> ``equals: true, if_unmeasurable: pass``: passes where the app cannot measure
  the setting (macOS screen lock, which the app never reads); a setting the answer simply lacks
  is not "unsupported" and fails.
- ``screenIdle: "<=120"`` -> ``equals: true, if_unmeasurable: pass`` on ``custom.screen_idle_ok``:
  the Stethoscope app measures the idle time against the bound of the policy it is asked with and
  answers PASS/FAIL, never seconds, so the bound stays in Stethoscope's policy (kept in the
  check's description) and Gatehouse checks the answer. Where the app cannot measure it (Windows;
  macOS, where it answers PASS without reading anything) Stethoscope passes it, and so does this.
- ``osVersion`` brackets -> check ``os_version`` (fail below the lower of ``ok``/``nudge``) plus
  ``os_version_recommended`` (nudge below ``ok``): PASS at or above ``ok``, NUDGE at or above
  ``nudge`` only, FAIL below both.
- Platforms: ``darwin`` -> darwin, ``win32`` -> windows, ``ubuntu`` -> linux distribution
  ``ubuntu``, ``linux`` -> every other Linux distribution. ``awsWorkspace`` is dropped: Amazon
  WorkSpaces desktops report as Windows, so they get the ``win32`` brackets (stated in the
  converted policy's description).
- ``openWifiConnections`` -> ``custom.no_open_wifi_networks`` (true when no open network is remembered).
- Other practices become ``custom.<snake_name>`` facts, true when the practice passes.
The facts are the ones the ingest sets (gateway/ingest/stethoscope.py; a test keeps them equal).
"""

from __future__ import annotations

import re
from typing import Mapping

from policy_engine.errors import PolicyParseError, Problem

STETHOSCOPE_FACTS: Mapping[str, str] = {
    "firewall": "firewall_enabled",
    "diskEncryption": "disk_encrypted",
    "automaticUpdates": "auto_updates_enabled",
    "screenLock": "screen_lock_enabled",
    "remoteLogin": "remote_login_enabled",
    "screenIdle": "custom.screen_idle_ok",
    "openWifiConnections": "custom.no_open_wifi_networks",
}
"""Stethoscope practice -> fact; anything else with a requirement option is a custom fact."""

_OPTIONS = ("ALWAYS", "SUGGESTED", "NEVER", "IF_SUPPORTED")
_PLATFORMS = ("darwin", "win32", "ubuntu", "linux", "awsWorkspace")
_RANGE = re.compile(r"\s*>=\s*v?(\d+(?:\.\d+)*)\s*")
_BOUND = re.compile(r"\s*(<=|>=|<|>)\s*(\d+)\s*")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _parts(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _os_version(raw: object, problems: list[Problem], notes: list[str]) -> dict[str, dict[str, object]]:
    if not isinstance(raw, Mapping):
        problems.append(Problem("osVersion", "wrong-type", "expected brackets per platform such as `darwin: {ok: \">=14.4\"}`"))
        return {}
    fail_floor: dict[str, object] = {}
    ok_floor: dict[str, object] = {}
    for platform, brackets in raw.items():
        path = f"osVersion.{platform}"
        if platform not in _PLATFORMS:
            problems.append(Problem(path, "unknown-key", f"unknown platform `{platform}`; Stethoscope platforms are {', '.join(f'`{p}`' for p in _PLATFORMS)}"))
            continue
        if isinstance(brackets, str):
            brackets = {"ok": brackets}
        if not isinstance(brackets, Mapping):
            problems.append(Problem(path, "wrong-type", "expected `ok` and `nudge` brackets such as `{ok: \">=14.4\", nudge: \">=13.6\"}`"))
            continue
        found: dict[str, str] = {}
        for key, value in brackets.items():
            match = _RANGE.fullmatch(value) if isinstance(value, str) else None
            if key not in ("ok", "nudge"):
                problems.append(Problem(f"{path}.{key}", "unknown-key", f"unknown bracket `{key}`; write `ok` or `nudge`"))
            elif match is None:
                problems.append(Problem(f"{path}.{key}", "bad-version", f"`{value}` is not a supported range; write `>=` and a version such as `\">=14.4\"`"))
            else:
                found[key] = match.group(1)
        if "ok" not in found:
            if "ok" not in brackets:
                problems.append(Problem(path, "missing-key", "missing `ok`; write the version that passes, such as `ok: \">=14.4\"`"))
            continue
        if platform == "awsWorkspace":
            notes.append("osVersion.awsWorkspace was dropped: Amazon WorkSpaces report as Windows and get the win32 brackets")
            continue
        ok = found["ok"]
        lowest = min((found.get("nudge", ok), ok), key=_parts)
        if platform == "darwin":
            fail_floor["darwin"], ok_floor["darwin"] = lowest, ok
        elif platform == "win32":
            fail_floor["windows"], ok_floor["windows"] = lowest, ok
        else:
            distro = "ubuntu" if platform == "ubuntu" else "default"
            fail_floor.setdefault("linux", {})[distro] = lowest  # type: ignore[index]
            ok_floor.setdefault("linux", {})[distro] = ok  # type: ignore[index]
    checks: dict[str, dict[str, object]] = {}
    if fail_floor:
        checks["os_version"] = {
            "description": "Stethoscope osVersion: below the nudge bracket fails.",
            "fact": "os_version",
            "min_version": fail_floor,
        }
        checks["os_version_recommended"] = {
            "description": "Stethoscope osVersion: below the ok bracket nudges.",
            "fact": "os_version",
            "min_version": ok_floor,
            "severity": "nudge",
        }
    return checks


def convert_stethoscope_policy(
    raw: Mapping[str, object],
    *,
    tier: str = "default",
    max_snapshot_age: str = "24h",
) -> dict[str, object]:
    """A Gatehouse policy document, as plain data, with the Stethoscope policy's semantics.

    Every check goes into one tier (``tier``); break-glass is ``never`` until the operator edits it.

    Raises:
        PolicyParseError: listing every practice or value that has no Gatehouse equivalent.
    """
    problems: list[Problem] = []
    notes: list[str] = []
    if not isinstance(raw, Mapping):
        raise PolicyParseError((Problem("", "wrong-type", "expected a Stethoscope policy mapping such as `firewall: ALWAYS`"),))
    checks: dict[str, dict[str, object]] = {}
    remediation: dict[str, dict[str, object]] = {}
    for practice, value in raw.items():
        if not isinstance(practice, str):
            problems.append(Problem("", "wrong-type", f"key `{practice}` is not text; quote it"))
            continue
        if practice == "osVersion":
            checks.update(_os_version(value, problems, notes))
            continue
        name = _snake(practice)
        fact = STETHOSCOPE_FACTS.get(practice, f"custom.{name}")
        check: dict[str, object] = {"description": f"Stethoscope {practice}: {value}.", "fact": fact}
        if practice == "screenIdle":
            match = _BOUND.fullmatch(value) if isinstance(value, str) else None
            if match is None:
                problems.append(Problem(practice, "bad-value", f"`{value}` is not a bound; write such as `\"<=120\"`"))
                continue
            check.update(
                description=f"Stethoscope screenIdle: {value} (seconds idle before the lock; the Stethoscope app checks the bound).",
                equals=True,
                if_unmeasurable="pass",
                remediation="screen_lock_delay",
            )
        elif value in _OPTIONS:
            check["equals"] = value != "NEVER"
            if value == "SUGGESTED":
                check["severity"] = "nudge"
            if value == "IF_SUPPORTED":
                check["if_unmeasurable"] = "pass"
        else:
            problems.append(
                Problem(
                    practice,
                    "unsupported",
                    f"`{practice}` with {type(value).__name__} value has no gatehouse equivalent; "
                    f"write one of {', '.join(f'`{o}`' for o in _OPTIONS)} or remove it",
                )
            )
            continue
        if fact.startswith("custom.") and "remediation" not in check:
            notes.append(f"{practice} is read from custom fact `{fact}`")
            remediation[name] = {"title": f"Fix Stethoscope practice {practice}"}
            check["remediation"] = name
        checks[name] = check
    if problems:
        raise PolicyParseError(tuple(problems))
    if "open_wifi_connections" in remediation:
        remediation["open_wifi_connections"] = {
            "title": "Forget open Wi-Fi networks",
            "why": "A device that rejoins open networks automatically can be lured onto an attacker's hotspot.",
            "steps": {
                "darwin": "Open [System Settings → Wi-Fi](x-apple.systempreferences:com.apple.Network-Settings.extension?Wi-Fi), "
                "click **Advanced…**, and remove every network without a lock icon.",
            },
        }
    description = "Converted from a Stethoscope policy by `gatehouse policy import-stethoscope`."
    if notes:
        description += " Notes: " + "; ".join(notes) + "."
    document: dict[str, object] = {
        "format": 1,
        "description": description,
        "checks": checks,
        "tiers": {
            tier: {
                "checks": list(checks),
                "max_snapshot_age": max_snapshot_age,
                "break_glass": "never",
            }
        },
    }
    if remediation:
        document["remediation"] = remediation
    return document
