"""Turn an already-loaded policy mapping (from YAML or JSON) into a typed PolicyDocument.

Owns: parse_policy_document, parse_duration, format_duration.
Must not import: anything outside the standard library; reads no files (the gateway loads text).

Every problem in the document is collected with its path before anything is raised; unknown keys
are problems, never silently ignored.
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from typing import Iterable, Mapping, Sequence

from policy_engine.defaults import DEFAULT_REMEDIATION
from policy_engine.document import (
    BreakGlassMode,
    BreakGlassSpec,
    CheckSpec,
    ControlRef,
    DeviceRequirement,
    IfUnknown,
    IfUnmeasurable,
    Operator,
    PolicyDocument,
    RemediationSpec,
    Scalar,
    Severity,
    TierSpec,
    VersionFloor,
)
from policy_engine.errors import PolicyParseError, Problem
from policy_engine.facts import BUILTIN_FACTS, OPERATORS_BY_KIND, FactKind, fact_kind
from policy_engine.model import OsFamily, Version

FORMAT_VERSION = 1
_TOP_KEYS = ("format", "description", "max_clock_skew", "checks", "tiers", "remediation", "controls")
_CHECK_KEYS = (
    "fact",
    "severity",
    "grace",
    "if_unknown",
    "if_unmeasurable",
    "platforms",
    "remediation",
    "description",
    *(op.value for op in Operator),
)
_TIER_KEYS = ("extends", "checks", "max_snapshot_age", "break_glass", "device", "description")
_OPERATOR_KEYS = frozenset(op.value for op in Operator)
_BREAK_GLASS_KEYS = ("mode", "max_duration")
_REMEDIATION_KEYS = ("title", "why", "steps", "doc_url")
_CONTROL_KEYS = ("framework", "id", "title")
_PLATFORMS = (OsFamily.DARWIN.value, OsFamily.LINUX.value, OsFamily.WINDOWS.value)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TIER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_DISTRIBUTION = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,63}")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_HINT = "write a number and a unit such as `72h`, `15m`, `7d` or `1h30m`"


def parse_duration(text: str) -> timedelta:
    """Parse ``72h``, ``15m``, ``7d``, ``90s`` or ``1h30m`` into a timedelta.

    Raises:
        ValueError: the text is not such a duration.
    """
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"`{text}` is not a duration; {_DURATION_HINT}")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Write a timedelta the way policy files do: ``1d12h``, ``15m``, ``0s``."""
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            out.append(f"{amount}{unit}")
    return sign + ("".join(out) or "0s")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"did you mean `{close[0]}`? " if close else ""


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float, str)):
        return f"`{value}`"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


class _Collector:
    """Collects problems while walking the raw document."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, code: str, message: str) -> None:
        self.problems.append(Problem(path, code, message))

    def mapping(self, value: object, path: str, what: str) -> Mapping[str, object] | None:
        if isinstance(value, Mapping):
            bad = [k for k in value if not isinstance(k, str)]
            for key in bad:
                self.add(path, "wrong-type", f"key {_describe(key)} is not text; quote it")
            return value
        self.add(path, "wrong-type", f"expected {what}, found {_describe(value)}")
        return None

    def keys(self, raw: Mapping[str, object], allowed: Sequence[str], path: str) -> None:
        for key in raw:
            if isinstance(key, str) and key not in allowed:
                self.add(
                    _join(path, key),
                    "unknown-key",
                    f"unknown key `{key}`; {_suggest(key, allowed)}known keys: {_quoted(allowed)}",
                )

    def text(self, value: object, path: str, *, required: bool = True) -> str | None:
        if isinstance(value, str) and (value.strip() or not required):
            return value
        self.add(path, "wrong-type", f"expected text, found {_describe(value)}")
        return None

    def duration(self, value: object, path: str) -> timedelta | None:
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError as exc:
                self.add(path, "bad-duration", str(exc))
                return None
        self.add(path, "bad-duration", f"{_describe(value)} is not a duration; {_DURATION_HINT}")
        return None

    def version(self, value: object, path: str) -> Version | None:
        if isinstance(value, bool) or isinstance(value, float):
            self.add(
                path,
                "bad-version",
                f"{_describe(value)} is read as a number, not a version; quote it: `\"{value}\"`",
            )
            return None
        if isinstance(value, int):
            value = str(value)
        if not isinstance(value, str):
            self.add(path, "bad-version", f"expected a version such as `\"14.4\"`, found {_describe(value)}")
            return None
        text = value.strip()
        if not re.fullmatch(r"\d+(\.\d+)*", text):
            self.add(path, "bad-version", f"`{value}` is not a version; write dotted numbers such as `14.2`")
            return None
        return Version.parse(text)

    def choice(self, value: object, path: str, choices: Sequence[str]) -> str | None:
        if isinstance(value, str) and value in choices:
            return value
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        self.add(path, "bad-value", f"{_describe(value)} is not allowed here; {hint}write one of {_quoted(choices)}")
        return None


def parse_policy_document(raw: Mapping[str, object], *, source: str) -> PolicyDocument:
    """Validate a loaded policy mapping and return its typed form.

    Raises:
        PolicyParseError: listing every problem found, each with its path.
    """
    out = _Collector()
    root = out.mapping(raw, "", "a mapping with `format`, `checks` and `tiers`")
    if root is None:
        raise PolicyParseError(tuple(out.problems))
    out.keys(root, _TOP_KEYS, "")
    for key in ("format", "checks", "tiers"):
        if key not in root:
            out.add(key, "missing-key", f"missing `{key}`; see policy_engine/FORMAT.md for an example")
    fmt = root.get("format", FORMAT_VERSION)
    if fmt != FORMAT_VERSION or isinstance(fmt, bool):
        out.add("format", "bad-value", f"{_describe(fmt)} is not a format this gatehouse reads; write `format: 1`")
    description = ""
    if "description" in root:
        description = out.text(root["description"], "description", required=False) or ""
    skew = timedelta(minutes=1)
    if "max_clock_skew" in root:
        skew = out.duration(root["max_clock_skew"], "max_clock_skew") or skew

    remediation = _parse_remediation(out, root.get("remediation", {}))
    remediation_keys = set(DEFAULT_REMEDIATION) | {r.key for r in remediation}
    raw_remediation = root.get("remediation")
    if isinstance(raw_remediation, Mapping):
        remediation_keys |= {k for k in raw_remediation if isinstance(k, str)}
    checks, check_names = _parse_checks(out, root.get("checks", {}), remediation_keys)
    tiers = _parse_tiers(out, root.get("tiers", {}), check_names)
    controls = _parse_controls(out, root.get("controls", {}), check_names)
    if out.problems:
        raise PolicyParseError(tuple(out.problems))
    return PolicyDocument(
        source=source,
        checks=tuple(checks),
        tiers=tuple(tiers),
        remediation=tuple(remediation),
        description=description,
        max_clock_skew=skew,
        format=FORMAT_VERSION,
        controls=tuple(controls),
    )


def _parse_checks(
    out: _Collector, raw: object, remediation_keys: set[str]
) -> tuple[list[CheckSpec], list[str]]:
    checks: list[CheckSpec] = []
    table = out.mapping(raw, "checks", "a mapping of check names to checks")
    if table is None:
        return checks, []
    if not table:
        out.add("checks", "missing-key", "no checks defined; add at least one, such as `disk_encryption`")
    names = [k for k in table if isinstance(k, str)]
    for name in names:
        path = _join("checks", name)
        if not _NAME.fullmatch(name):
            out.add(path, "bad-name", f"`{name}` is not a check name; use lowercase letters, digits and `_`")
        spec = _parse_check(out, name, table[name], path, remediation_keys)
        if spec is not None:
            checks.append(spec)
    return checks, names


def _parse_check(
    out: _Collector, name: str, raw: object, path: str, remediation_keys: set[str]
) -> CheckSpec | None:
    body = out.mapping(raw, path, "a mapping with `fact` and one comparison such as `equals: true`")
    if body is None:
        return None
    before = len(out.problems)
    out.keys(body, _CHECK_KEYS, path)
    fact = None
    if "fact" not in body:
        out.add(path, "missing-key", "missing `fact`; name a snapshot field such as `disk_encrypted` or `custom.<name>`")
    else:
        fact = out.text(body["fact"], _join(path, "fact"))
    kind = None
    if fact is not None:
        kind = fact_kind(fact)
        if kind is None:
            out.add(
                _join(path, "fact"),
                "unknown-fact",
                f"unknown fact `{fact}`; {_suggest(fact, tuple(BUILTIN_FACTS))}"
                f"known facts: {_quoted(BUILTIN_FACTS)} or `custom.<name>`",
            )
    ops = [Operator(k) for k in body if k in _OPERATOR_KEYS]
    operator: Operator | None = None
    if not ops:
        out.add(path, "missing-key", f"missing a comparison; add one of {_quoted(o.value for o in Operator)}")
    elif len(ops) > 1:
        out.add(
            path,
            "conflict",
            f"{_quoted(o.value for o in ops)} given together; use one comparison per check, or two checks",
        )
    else:
        operator = ops[0]
        if kind is not None and operator not in OPERATORS_BY_KIND[kind]:
            allowed = sorted(o.value for o in OPERATORS_BY_KIND[kind])
            out.add(
                _join(path, operator.value),
                "bad-comparison",
                f"`{operator.value}` does not apply to {kind.value} fact `{fact}`; use {_quoted(allowed)}",
            )
            operator = None
    value: Scalar | tuple[Scalar, ...] | VersionFloor | None = None
    if operator is not None and kind is not None and fact is not None:
        value = _parse_value(out, operator, kind, fact, body[operator.value], _join(path, operator.value))

    severity = Severity.FAIL
    if "severity" in body:
        severity = Severity(out.choice(body["severity"], _join(path, "severity"), tuple(Severity)) or "fail")
    grace = None
    if "grace" in body:
        grace = out.duration(body["grace"], _join(path, "grace"))
        if severity is Severity.NUDGE:
            out.add(_join(path, "grace"), "conflict", "a `nudge` never blocks, so it takes no `grace`; remove `grace`")
    if_unknown = IfUnknown.FAIL
    if "if_unknown" in body:
        if_unknown = IfUnknown(out.choice(body["if_unknown"], _join(path, "if_unknown"), tuple(IfUnknown)) or "fail")
    if_unmeasurable = IfUnmeasurable.FAIL
    if "if_unmeasurable" in body:
        if_unmeasurable = IfUnmeasurable(
            out.choice(body["if_unmeasurable"], _join(path, "if_unmeasurable"), tuple(IfUnmeasurable)) or "fail"
        )
    platforms: frozenset[OsFamily] = frozenset()
    if "platforms" in body:
        platforms = _parse_platforms(out, body["platforms"], _join(path, "platforms"))
    remediation = ""
    if "remediation" in body:
        remediation = out.text(body["remediation"], _join(path, "remediation")) or ""
        if remediation and remediation not in remediation_keys:
            out.add(
                _join(path, "remediation"),
                "unknown-remediation",
                f"unknown remediation `{remediation}`; {_suggest(remediation, sorted(remediation_keys))}"
                "define it under `remediation:` or use a built-in key",
            )
    description = ""
    if "description" in body:
        description = out.text(body["description"], _join(path, "description"), required=False) or ""
    if len(out.problems) > before or operator is None or value is None or fact is None:
        return None
    return CheckSpec(
        name=name,
        fact=fact,
        operator=operator,
        value=value,
        severity=severity,
        grace=grace,
        if_unknown=if_unknown,
        if_unmeasurable=if_unmeasurable,
        platforms=platforms,
        remediation=remediation,
        description=description,
    )


def _parse_platforms(out: _Collector, raw: object, path: str) -> frozenset[OsFamily]:
    if not isinstance(raw, (list, tuple)) or not raw:
        out.add(path, "wrong-type", f"expected a list of platforms such as `[darwin, windows]`, found {_describe(raw)}")
        return frozenset()
    found = set()
    for i, item in enumerate(raw):
        choice = out.choice(item, f"{path}[{i}]", _PLATFORMS)
        if choice is not None:
            found.add(OsFamily(choice))
    return frozenset(found)


def _scalar_ok(kind: FactKind, fact: str, value: object) -> bool:
    if kind is FactKind.BOOL:
        return isinstance(value, bool)
    if kind is FactKind.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is FactKind.STR:
        if fact == "platform":
            return value in (*_PLATFORMS, OsFamily.UNKNOWN.value)
        return isinstance(value, str)
    return isinstance(value, (str, int, float, bool))


def _scalar_hint(kind: FactKind, fact: str) -> str:
    if fact == "platform":
        return f"write one of {_quoted((*_PLATFORMS, OsFamily.UNKNOWN.value))}"
    return {
        FactKind.BOOL: "write `true` or `false`",
        FactKind.INT: "write a whole number such as `600`",
        FactKind.STR: "write text",
    }.get(kind, "write text, a number or `true`/`false`")


def _parse_value(
    out: _Collector, operator: Operator, kind: FactKind, fact: str, raw: object, path: str
) -> Scalar | tuple[Scalar, ...] | VersionFloor | None:
    if operator is Operator.MIN_VERSION:
        return _parse_floor(out, raw, path)
    if operator in (Operator.AT_MOST, Operator.AT_LEAST, Operator.BELOW, Operator.ABOVE):
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        whole = kind is FactKind.INT
        if not ok or (whole and not isinstance(raw, int)):
            what = "a whole number" if whole else "a number"
            out.add(path, "wrong-type", f"{_describe(raw)} is not {what}; write {what} such as `600`")
            return None
        return raw  # type: ignore[return-value]
    if operator is Operator.EQUALS:
        if not _scalar_ok(kind, fact, raw):
            out.add(path, "wrong-type", f"{_describe(raw)} does not fit fact `{fact}`; {_scalar_hint(kind, fact)}")
            return None
        return raw  # type: ignore[return-value]
    if not isinstance(raw, (list, tuple)) or not raw:
        out.add(path, "wrong-type", f"expected a list such as `[a, b]`, found {_describe(raw)}")
        return None
    items: list[Scalar] = []
    for i, item in enumerate(raw):
        if _scalar_ok(kind, fact, item):
            items.append(item)
        else:
            out.add(f"{path}[{i}]", "wrong-type", f"{_describe(item)} does not fit fact `{fact}`; {_scalar_hint(kind, fact)}")
    return tuple(items) if len(items) == len(raw) else None


def _parse_floor(out: _Collector, raw: object, path: str) -> VersionFloor | None:
    if not isinstance(raw, Mapping):
        version = out.version(raw, path)
        return VersionFloor(everywhere=version) if version is not None else None
    before = len(out.problems)
    out.keys(raw, (*_PLATFORMS, "default"), path)
    floors: dict[str, Version | None] = {}
    distributions: list[tuple[str, Version]] = []
    for key in (*_PLATFORMS, "default"):
        if key not in raw:
            continue
        value = raw[key]
        sub = _join(path, key)
        if key == OsFamily.LINUX.value and isinstance(value, Mapping):
            for distro, text in value.items():
                if not isinstance(distro, str) or not _DISTRIBUTION.fullmatch(distro):
                    out.add(_join(sub, distro), "bad-name", f"{_describe(distro)} is not a distribution id; write it as `/etc/os-release` `ID` does, such as `ubuntu`")
                    continue
                version = out.version(text, _join(sub, distro))
                if version is None:
                    continue
                if distro == "default":
                    floors[key] = version
                else:
                    distributions.append((distro, version))
        else:
            floors[key] = out.version(value, sub)
    if not raw:
        out.add(path, "missing-key", "no minimum given; write `min_version: \"14.4\"` or one per platform")
    if len(out.problems) > before:
        return None
    return VersionFloor(
        everywhere=floors.get("default"),
        darwin=floors.get(OsFamily.DARWIN.value),
        windows=floors.get(OsFamily.WINDOWS.value),
        linux=floors.get(OsFamily.LINUX.value),
        linux_distributions=tuple(distributions),
    )


def _parse_tiers(out: _Collector, raw: object, check_names: list[str]) -> list[TierSpec]:
    tiers: list[TierSpec] = []
    table = out.mapping(raw, "tiers", "a mapping of tier names, least sensitive first")
    if table is None:
        return tiers
    if not table:
        out.add("tiers", "missing-key", "no tiers defined; add at least one, such as `low`")
    names = [k for k in table if isinstance(k, str)]
    for position, name in enumerate(names):
        path = _join("tiers", name)
        before = len(out.problems)
        if not _TIER_NAME.fullmatch(name):
            out.add(path, "bad-name", f"`{name}` is not a tier name; use letters, digits, `_` and `-`")
        body = out.mapping(table[name], path, "a mapping with `checks`, `max_snapshot_age` and `break_glass`")
        if body is None:
            continue
        out.keys(body, _TIER_KEYS, path)
        extends = ""
        if "extends" in body:
            extends = out.text(body["extends"], _join(path, "extends")) or ""
            if extends and extends not in names[:position]:
                where = "is listed after it" if extends in names else "is not defined"
                out.add(
                    _join(path, "extends"),
                    "unknown-tier",
                    f"`{extends}` {where}; extend a less sensitive tier listed before `{name}`: {_quoted(names[:position]) or 'none'}",
                )
        checks: list[str] = []
        raw_checks = body.get("checks", [])
        if not isinstance(raw_checks, (list, tuple)):
            out.add(_join(path, "checks"), "wrong-type", f"expected a list of check names, found {_describe(raw_checks)}")
            raw_checks = []
        for i, item in enumerate(raw_checks):
            sub = f"{path}.checks[{i}]"
            if not isinstance(item, str):
                out.add(sub, "wrong-type", f"expected a check name, found {_describe(item)}")
            elif item not in check_names:
                out.add(sub, "unknown-check", f"unknown check `{item}`; {_suggest(item, check_names)}known checks: {_quoted(check_names)}")
            elif item in checks:
                out.add(sub, "duplicate", f"check `{item}` is listed twice; remove one")
            else:
                checks.append(item)
        max_age = None
        if "max_snapshot_age" not in body:
            out.add(path, "missing-key", "missing `max_snapshot_age`; write how old a snapshot may be, such as `24h`")
        else:
            max_age = out.duration(body["max_snapshot_age"], _join(path, "max_snapshot_age"))
        break_glass = None
        if "break_glass" not in body:
            out.add(path, "missing-key", "missing `break_glass`; write `never`, or `{mode: approval, max_duration: 4h}`")
        else:
            break_glass = _parse_break_glass(out, body["break_glass"], _join(path, "break_glass"))
        device = DeviceRequirement.REQUIRED
        if "device" in body:
            device = DeviceRequirement(
                out.choice(body["device"], _join(path, "device"), tuple(DeviceRequirement)) or DeviceRequirement.REQUIRED
            )
        description = ""
        if "description" in body:
            description = out.text(body["description"], _join(path, "description"), required=False) or ""
        if len(out.problems) == before and max_age is not None and break_glass is not None:
            tiers.append(TierSpec(name, tuple(checks), max_age, break_glass, extends, description, device))
    return tiers


def _parse_break_glass(out: _Collector, raw: object, path: str) -> BreakGlassSpec | None:
    if raw == BreakGlassMode.NEVER.value:
        return BreakGlassSpec(BreakGlassMode.NEVER)
    if not isinstance(raw, Mapping):
        out.add(path, "wrong-type", f"{_describe(raw)} is not a break-glass rule; write `never`, or `{{mode: allowed, max_duration: 4h}}`")
        return None
    before = len(out.problems)
    out.keys(raw, _BREAK_GLASS_KEYS, path)
    mode_text = out.choice(raw.get("mode"), _join(path, "mode"), tuple(BreakGlassMode))
    mode = BreakGlassMode(mode_text) if mode_text else None
    duration = None
    if "max_duration" in raw:
        duration = out.duration(raw["max_duration"], _join(path, "max_duration"))
        if mode is BreakGlassMode.NEVER:
            out.add(_join(path, "max_duration"), "conflict", "`never` takes no `max_duration`; remove it")
        elif duration is not None and duration <= timedelta(0):
            out.add(_join(path, "max_duration"), "bad-duration", "a grant must last more than `0s`; write such as `4h`")
    elif mode in (BreakGlassMode.ALLOWED, BreakGlassMode.APPROVAL):
        out.add(path, "missing-key", f"`{mode.value}` needs `max_duration`; write how long a grant may last, such as `4h`")
    if len(out.problems) > before or mode is None:
        return None
    return BreakGlassSpec(mode, duration)


def _parse_remediation(out: _Collector, raw: object) -> list[RemediationSpec]:
    entries: list[RemediationSpec] = []
    table = out.mapping(raw, "remediation", "a mapping of remediation keys to entries")
    if table is None:
        return entries
    for key in [k for k in table if isinstance(k, str)]:
        path = _join("remediation", key)
        before = len(out.problems)
        if not _NAME.fullmatch(key):
            out.add(path, "bad-name", f"`{key}` is not a remediation key; use lowercase letters, digits and `_`")
        body = out.mapping(table[key], path, "a mapping with `title`, `why`, `steps` and `doc_url`")
        if body is None:
            continue
        out.keys(body, _REMEDIATION_KEYS, path)
        fields: dict[str, str] = {}
        for name in ("title", "why", "doc_url"):
            if name in body:
                fields[name] = out.text(body[name], _join(path, name)) or ""
        if key not in DEFAULT_REMEDIATION and not fields.get("title"):
            out.add(path, "missing-key", f"`{key}` is not a built-in entry, so it needs a `title`; add `title: ...`")
        url = fields.get("doc_url", "")
        if url and not re.match(r"https?://\S+$", url):
            out.add(_join(path, "doc_url"), "bad-value", f"`{url}` is not a web address; write one starting with `https://`")
        steps: list[tuple[OsFamily, str]] = []
        if "steps" in body:
            table_steps = out.mapping(body["steps"], _join(path, "steps"), "a mapping of platforms to Markdown steps")
            if table_steps is not None:
                out.keys(table_steps, _PLATFORMS, _join(path, "steps"))
                for platform in _PLATFORMS:
                    if platform in table_steps:
                        text = out.text(table_steps[platform], _join(path, f"steps.{platform}"))
                        if text:
                            steps.append((OsFamily(platform), text))
        if len(out.problems) == before:
            entries.append(RemediationSpec(key, fields.get("title", ""), fields.get("why", ""), tuple(steps), url))
    return entries


def _parse_controls(out: _Collector, raw: object, check_names: list[str]) -> list[tuple[str, tuple[ControlRef, ...]]]:
    found: list[tuple[str, tuple[ControlRef, ...]]] = []
    table = out.mapping(raw, "controls", "a mapping of check names to lists of controls")
    if table is None:
        return found
    for name in [k for k in table if isinstance(k, str)]:
        path = _join("controls", name)
        if name not in check_names:
            out.add(path, "unknown-check", f"unknown check `{name}`; {_suggest(name, check_names)}known checks: {_quoted(check_names)}")
        items = table[name]
        if not isinstance(items, (list, tuple)) or not items:
            out.add(path, "wrong-type", "expected a list of controls such as `[{framework: SOC2, id: CC6.7}]`, "
                    f"found {_describe(items)}")
            continue
        refs: list[ControlRef] = []
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(items):
            sub = f"{path}[{i}]"
            before = len(out.problems)
            body = out.mapping(item, sub, "a mapping with `framework`, `id` and an optional `title`")
            if body is None:
                continue
            out.keys(body, _CONTROL_KEYS, sub)
            values: dict[str, str] = {}
            for key in ("framework", "id"):
                if key not in body:
                    out.add(sub, "missing-key", f"missing `{key}`; write such as `{{framework: SOC2, id: CC6.7}}`")
                else:
                    values[key] = (out.text(body[key], _join(sub, key)) or "").strip()
            title = ""
            if "title" in body:
                title = out.text(body["title"], _join(sub, "title"), required=False) or ""
            key_pair = (values.get("framework", ""), values.get("id", ""))
            if len(out.problems) == before and key_pair in seen:
                out.add(sub, "duplicate", f"control `{key_pair[0]} {key_pair[1]}` is listed twice for `{name}`; remove one")
            elif len(out.problems) == before:
                seen.add(key_pair)
                refs.append(ControlRef(key_pair[0], key_pair[1], title.strip()))
        if name in check_names and refs and len(refs) == len(items):
            found.append((name, tuple(refs)))
    return found
