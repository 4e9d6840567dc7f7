"""Baselines for bench/bench_policy.py: the same policy evaluated without compiling it.

- ``InterpretedPolicy``: walks the loaded policy mapping on every call (tier inheritance,
  comparison keys, version strings), the way a straightforward first implementation would.
- ``handwritten_high``: the strictest tier of the bench policy written out by hand as ifs.
- ``cedar_policy_text`` / ``cedar_context``: the same three tiers in Cedar for cedarpy.

All of them return the allow/deny verdict of Gatehouse's semantics (grace counted from the
snapshot's time when there is no history, ``if_unknown``, platform scoping), so the bench can
check they agree with the compiled engine before timing them.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Mapping

from policy_engine import DeviceSnapshot, Version

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _duration(text: str) -> timedelta:
    d, h, m, s = (int(g) if g else 0 for g in _DURATION.fullmatch(text).groups())  # type: ignore[union-attr]
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


class InterpretedPolicy:
    """Evaluates the raw policy mapping on each call; nothing is precomputed but durations."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.skew = _duration(raw.get("max_clock_skew", "1m"))

    def _tier_checks(self, tier: str) -> list[str]:
        spec = self.raw["tiers"][tier]
        names = self._tier_checks(spec["extends"]) if "extends" in spec else []
        return names + [n for n in spec["checks"] if n not in names]

    def _passes(self, check: Mapping[str, Any], s: DeviceSnapshot) -> bool:
        platforms = check.get("platforms")
        if platforms and s.platform.value not in platforms and s.platform.value != "unknown":
            return True
        fact = check["fact"]
        value = s.custom.get(fact[7:]) if fact.startswith("custom.") else getattr(s, fact)
        if value is None:
            return check.get("if_unknown", "fail") == "pass"
        if "equals" in check:
            return value == check["equals"]
        if "at_most" in check:
            return value <= check["at_most"]
        if "at_least" in check:
            return value >= check["at_least"]
        if "one_of" in check:
            return value in check["one_of"]
        if "none_of" in check:
            return value not in check["none_of"]
        if "min_version" in check:
            floor = check["min_version"]
            if isinstance(floor, Mapping):
                entry = floor.get(s.platform.value, floor.get("default"))
                if isinstance(entry, Mapping):
                    entry = entry.get(s.distribution, entry.get("default", floor.get("default")))
                floor = entry
            return floor is not None and value >= Version.parse(str(floor))
        raise ValueError(f"no comparison in {check}")

    def decide(self, s: DeviceSnapshot | None, tier: str, now: datetime) -> tuple[bool, tuple[str, ...]]:
        """Allowed or not, and the names of the blocking failures."""
        if s is None or tier not in self.raw["tiers"]:
            return False, ()
        observed = min(s.collected_at, s.received_at)
        age = now - observed
        if age > _duration(self.raw["tiers"][tier]["max_snapshot_age"]) or age < -self.skew:
            return False, ()
        failing = []
        for name in self._tier_checks(tier):
            check = self.raw["checks"][name]
            if self._passes(check, s) or check.get("severity", "fail") == "nudge":
                continue
            if "grace" in check and now < observed + _duration(check["grace"]):
                continue
            failing.append(name)
        return not failing, tuple(failing)


_MAC_OS_SUPPORTED, _MAC_OS_CURRENT = Version.parse("13.0"), Version.parse("14.4")
_WIN_OS_SUPPORTED, _WIN_OS_CURRENT = Version.parse("10.0.19045"), Version.parse("10.0.22631")
_LINUX_SUPPORTED = {"ubuntu": Version.parse("22.04"), "debian": Version.parse("12"), "fedora": Version.parse("39")}
_LINUX_CURRENT = {"ubuntu": Version.parse("24.04"), "debian": Version.parse("12.5"), "fedora": Version.parse("40")}
_AGENT = Version.parse("5.10")
_H72, _H168, _H24, _M15, _M1 = timedelta(hours=72), timedelta(hours=168), timedelta(hours=24), timedelta(minutes=15), timedelta(minutes=1)


def _floor(s: DeviceSnapshot, mac: Version, win: Version, linux: Mapping[str, Version]) -> Version | None:
    if s.platform == "darwin":
        return mac
    if s.platform == "windows":
        return win
    if s.platform == "linux":
        return linux.get(s.distribution)
    return None


def handwritten_high(s: DeviceSnapshot, now: datetime) -> tuple[bool, tuple[str, ...]]:
    """The bench policy's ``high`` tier written by hand (no history: grace counts from the snapshot)."""
    observed = s.collected_at if s.collected_at <= s.received_at else s.received_at
    age = now - observed
    if age > _M15 or age < -_M1:
        return False, ()
    in_grace_72 = now < observed + _H72
    failing = []
    if s.disk_encrypted is not True:
        failing.append("disk_encryption")
    if s.screen_lock_enabled is not True:
        failing.append("screen_lock")
    if s.firewall_enabled is not True and not in_grace_72:
        failing.append("firewall")
    if (s.screen_lock_delay_s is None or s.screen_lock_delay_s > 600) and not in_grace_72:
        failing.append("screen_lock_delay")
    if s.remote_login_enabled is not False and not now < observed + _H24:
        failing.append("remote_login_off")
    if s.platform in ("darwin", "unknown") and s.sip_enabled is not True:
        failing.append("sip")
    if s.platform in ("darwin", "unknown") and s.gatekeeper_enabled is False:
        failing.append("gatekeeper")
    v = s.os_version
    floor = _floor(s, _MAC_OS_SUPPORTED, _WIN_OS_SUPPORTED, _LINUX_SUPPORTED)
    if v is None or floor is None or v < floor:
        failing.append("os_supported")
    floor = _floor(s, _MAC_OS_CURRENT, _WIN_OS_CURRENT, _LINUX_CURRENT)
    if (v is None or floor is None or v < floor) and not now < observed + _H168:
        failing.append("os_current")
    if (s.agent_version is None or s.agent_version < _AGENT) and not in_grace_72:
        failing.append("agent_current")
    return not failing, tuple(failing)


def _version_number(v: Version | None) -> int:
    parts = (list(v.parts) + [0, 0, 0, 0])[:4] if v is not None else [0, 0, 0, 0]
    return ((parts[0] * 100_000 + parts[1]) * 100_000 + parts[2]) * 100_000 + parts[3]


def _cedar_floor(name: str, mac: str, win: str, linux: Mapping[str, str]) -> str:
    def n(text: str) -> int:
        return _version_number(Version.parse(text))

    distros = " || ".join(f'(context.distribution == "{d}" && context.{name} >= {n(v)})' for d, v in linux.items())
    return (
        f'(context has {name} && ((context.platform == "darwin" && context.{name} >= {n(mac)}) || '
        f'(context.platform == "windows" && context.{name} >= {n(win)}) || '
        f'(context.platform == "linux" && ({distros}))))'
    )


def cedar_policy_text() -> str:
    """The bench policy's three tiers as Cedar ``permit`` statements (blocking checks only)."""
    supported = _cedar_floor("os_v", "13.0", "10.0.19045", {"ubuntu": "22.04", "debian": "12", "fedora": "39"})
    current = _cedar_floor("os_v", "14.4", "10.0.22631", {"ubuntu": "24.04", "debian": "12.5", "fedora": "40"})
    low = (
        "context has disk_encrypted && context.disk_encrypted == true && "
        "context has screen_lock_enabled && context.screen_lock_enabled == true && " + supported
    )
    medium = (
        low + " && ((context has firewall_enabled && context.firewall_enabled == true) || context.now_s < context.observed_s + 259200)"
        " && ((context has screen_lock_delay_s && context.screen_lock_delay_s <= 600) || context.now_s < context.observed_s + 259200)"
        f" && ({current} || context.now_s < context.observed_s + 604800)"
        f" && ((context has agent_v && context.agent_v >= {_version_number(Version.parse('5.10'))}) || context.now_s < context.observed_s + 259200)"
    )
    high = (
        medium + " && ((context has remote_login_enabled && context.remote_login_enabled == false) || context.now_s < context.observed_s + 86400)"
        ' && (context.platform == "windows" || context.platform == "linux" || (context has sip_enabled && context.sip_enabled == true))'
        ' && (context.platform == "windows" || context.platform == "linux" || !(context has gatekeeper_enabled) || context.gatekeeper_enabled == true)'
    )
    out = []
    for tier, condition, max_age in (("low", low, 86400), ("medium", medium, 3600), ("high", high, 900)):
        out.append(
            f'permit(principal, action == Action::"access", resource == Tier::"{tier}") when {{\n'
            f"  context.age_s <= {max_age} && context.age_s >= -60 && {condition}\n}};"
        )
    return "\n".join(out)


def cedar_context(s: DeviceSnapshot, now: datetime) -> dict[str, Any]:
    """A snapshot as a Cedar request context (unreported facts are left out)."""
    observed = s.collected_at if s.collected_at <= s.received_at else s.received_at
    age = now - observed
    context: dict[str, Any] = {
        "platform": s.platform.value,
        "distribution": s.distribution,
        "now_s": int(now.timestamp()),
        "observed_s": int(observed.timestamp()),
        # Cedar has no durations: whole seconds, rounded away from acceptance at the boundary.
        "age_s": int(age.total_seconds()) + (1 if age.microseconds else 0),
    }
    for name in ("disk_encrypted", "screen_lock_enabled", "firewall_enabled", "remote_login_enabled",
                 "sip_enabled", "gatekeeper_enabled", "screen_lock_delay_s"):
        value = getattr(s, name)
        if value is not None:
            context[name] = value
    if s.os_version is not None:
        context["os_v"] = _version_number(s.os_version)
    if s.agent_version is not None:
        context["agent_v"] = _version_number(s.agent_version)
    return context
