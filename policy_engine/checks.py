"""Checks compiled from CheckSpecs: a closure that says pass/fail, an inline expression for the
generated fast path, and display helpers for the explanation.

Owns: CompiledCheck, compile_check, display.
Must not import: anything outside the standard library and policy_engine.
"""

from __future__ import annotations

import operator as op
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from policy_engine.decision import Finding, FindingTwin
from policy_engine.document import CheckSpec, IfUnknown, IfUnmeasurable, Operator, Scalar, Severity, VersionFloor
from policy_engine.facts import BUILTIN_FACTS, CUSTOM_PREFIX, FactKind, fact_kind
from policy_engine.model import DeviceSnapshot, OsFamily, Version

NOT_REPORTED = "not reported"
NEVER: tuple[int, ...] = (1 << 62,)
"""A floor no real version reaches: no version is accepted."""
_ALL_PLATFORMS = frozenset(OsFamily)
_NUMERIC_TYPES = (int, float)
_BOUND_SYMBOL = {
    Operator.AT_MOST: "<=",
    Operator.AT_LEAST: ">=",
    Operator.BELOW: "<",
    Operator.ABOVE: ">",
}
# Any: a bound compares whatever the fact holds (numbers, versions, strings) with the policy's constant;
# the custom-fact path checks the value is numeric before it compares.
_BOUND_FUNC: dict[Operator, Callable[[Any, Any], bool]] = {
    Operator.AT_MOST: op.le,
    Operator.AT_LEAST: op.ge,
    Operator.BELOW: op.lt,
    Operator.ABOVE: op.gt,
}

Predicate = Callable[[DeviceSnapshot], bool]


def display(value: object) -> str:
    """A fact or constant as the deny page shows it: ``on``, ``off``, ``13.2.1``, ``not reported``."""
    if value is None:
        return NOT_REPORTED
    if value is True:
        return "on"
    if value is False:
        return "off"
    if isinstance(value, OsFamily):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class CompiledCheck:
    """A check ready to run: ``passes`` is total over well-typed snapshots and never looks anything up by name."""

    name: str
    fact: str
    severity: Severity
    grace: timedelta | None
    remediation: str
    cost: int
    """Rough relative cost; tiers run cheap checks first."""
    passes: Predicate
    actual: Callable[[DeviceSnapshot], str]
    required: Callable[[DeviceSnapshot], str]
    describe: Callable[[DeviceSnapshot], tuple[str, str]]
    """``(actual, required)`` display strings, cached per distinct fact value and platform."""
    finding: Callable[[DeviceSnapshot], Finding]
    """The Finding for a failing snapshot, without grace deadline; cached like ``describe``."""
    inline: str | None
    """A Python expression over ``s`` for the generated fast path, or None to call ``passes``."""
    constants: tuple[tuple[str, object], ...]
    """Names the inline expression uses, with their values."""
    if_unmeasurable: IfUnmeasurable = IfUnmeasurable.FAIL
    """What the fact being unmeasurable on a device means; see ``unmeasurable_finding``."""

    def unmeasurable_finding(self, snapshot: DeviceSnapshot, deadline: datetime | None = None) -> Finding:
        """The Finding for a device whose source cannot measure this check's fact (``actual`` names the source)."""
        severity = Severity.NUDGE if self.if_unmeasurable is IfUnmeasurable.NUDGE else self.severity
        where = snapshot.platform.value if snapshot.platform is not OsFamily.UNKNOWN else "this device"
        actual = f"not measurable by {snapshot.source or 'the agent'} on {where}"
        return FindingTwin(  # type: ignore[no-any-return]
            self.name, self.fact, actual, self.required(snapshot), severity, deadline, self.remediation, True
        )


def _floor_parts(version: Version | None) -> tuple[int, ...] | None:
    if version is None:
        return None
    parts = version.parts
    end = len(parts)
    while end > 1 and parts[end - 1] == 0:
        end -= 1
    # INVARIANT: comparing a raw ``parts`` tuple with a floor stripped of trailing zeros orders
    # exactly like Version comparison (missing parts count as zero).
    return parts[:end]


class _FloorTable:
    """Resolves the minimum version for a device: distribution, then platform, then everywhere."""

    __slots__ = ("by_platform", "by_distribution", "everywhere", "texts", "dist_texts", "every_text")

    def __init__(self, floor: VersionFloor) -> None:
        self.everywhere = _floor_parts(floor.everywhere)
        self.every_text = floor.everywhere.text if floor.everywhere else ""
        pairs = {
            OsFamily.DARWIN: floor.darwin,
            OsFamily.WINDOWS: floor.windows,
            OsFamily.LINUX: floor.linux,
        }
        self.by_platform = {p: _floor_parts(v) for p, v in pairs.items() if v is not None}
        self.texts = {p: v.text for p, v in pairs.items() if v is not None}
        self.by_distribution = {d: _floor_parts(v) for d, v in floor.linux_distributions}
        self.dist_texts = {d: v.text for d, v in floor.linux_distributions}

    def parts(self, snapshot: DeviceSnapshot) -> tuple[int, ...] | None:
        platform = snapshot.platform
        if platform == OsFamily.LINUX and self.by_distribution:
            found = self.by_distribution.get(snapshot.distribution)
            if found is not None:
                return found
        found = self.by_platform.get(platform)
        return found if found is not None else self.everywhere

    def text(self, snapshot: DeviceSnapshot) -> str:
        platform = snapshot.platform
        if platform == OsFamily.LINUX and snapshot.distribution in self.dist_texts:
            return f">= {self.dist_texts[snapshot.distribution]}"
        if platform in self.texts:
            return f">= {self.texts[platform]}"
        if self.every_text:
            return f">= {self.every_text}"
        where = snapshot.distribution if platform == OsFamily.LINUX and snapshot.distribution else str(platform)
        return f"a supported platform (no minimum for `{where}`)"

    def inline_table(self) -> dict[object, tuple[dict[str, tuple[int, ...]], tuple[int, ...]]]:
        """For the generated fast path: platform -> (floors by distribution, floor otherwise)."""
        fallback = self.everywhere if self.everywhere is not None else NEVER
        table: dict[object, tuple[dict[str, tuple[int, ...]], tuple[int, ...]]] = {}
        for platform in (OsFamily.DARWIN, OsFamily.WINDOWS, OsFamily.LINUX):
            floor = self.by_platform.get(platform)
            other = floor if floor is not None else fallback
            dists = self.by_distribution if platform is OsFamily.LINUX else {}
            table[platform] = (dict(dists), other)  # type: ignore[arg-type]
        return table

    def inline_default(self) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
        """For platforms outside the table (unknown): the `default` floor or none at all."""
        return ({}, self.everywhere if self.everywhere is not None else NEVER)

    @property
    def single(self) -> bool:
        return not self.by_platform and not self.by_distribution


def _same(value: object, constant: Scalar) -> bool:
    # Custom facts are loosely typed: ``True`` must not equal ``1`` and ``"1"`` must not equal ``1``.
    if isinstance(constant, bool) or isinstance(value, bool):
        return value is constant
    if isinstance(constant, str) or isinstance(value, str):
        return type(value) is str and value == constant
    return isinstance(value, _NUMERIC_TYPES) and value == constant


def _value_test(spec: CheckSpec, kind: FactKind) -> tuple[Callable[[object], bool], Callable[[DeviceSnapshot], str]]:
    """A test on a reported (non-None) value, and the required display."""
    operator, value = spec.operator, spec.value
    custom = kind is FactKind.CUSTOM
    if operator is Operator.EQUALS:
        constant = value
        text = display(constant)
        if custom:
            return (lambda v: _same(v, constant)), (lambda s: text)  # type: ignore[arg-type]
        return (lambda v: v == constant), (lambda s: text)
    if operator in (Operator.ONE_OF, Operator.NONE_OF):
        items = tuple(value)  # type: ignore[arg-type]
        members = frozenset(items)
        listed = ", ".join(display(i) for i in items)
        inside = operator is Operator.ONE_OF
        text = f"one of {listed}" if inside else f"none of {listed}"
        if custom:
            return (lambda v: any(_same(v, c) for c in items) is inside), (lambda s: text)
        if inside:
            return (lambda v: v in members), (lambda s: text)
        return (lambda v: v not in members), (lambda s: text)
    if operator in _BOUND_FUNC:
        compare = _BOUND_FUNC[operator]
        bound = value
        text = f"{_BOUND_SYMBOL[operator]} {display(bound)}"
        if custom:
            return (
                lambda v: isinstance(v, _NUMERIC_TYPES) and not isinstance(v, bool) and compare(v, bound)
            ), (lambda s: text)
        return (lambda v: compare(v, bound)), (lambda s: text)
    if operator is Operator.MIN_VERSION:
        raise AssertionError("versions are compiled by _version_passes")  # pragma: no cover
    raise ValueError(f"unsupported comparison `{operator}`")


def compile_check(spec: CheckSpec, remediation: str, index: int) -> CompiledCheck:
    """Build the closure, inline expression and display helpers for one validated check.

    Raises:
        ValueError: the spec combines a fact and comparison the parser would have refused.
    """
    kind = fact_kind(spec.fact)
    if kind is None:
        raise ValueError(f"unknown fact `{spec.fact}`")
    builtin = kind is not FactKind.CUSTOM
    if builtin:
        attr = spec.fact
        get: Callable[[DeviceSnapshot], object] = op.attrgetter(attr)
    else:
        key = spec.fact[len(CUSTOM_PREFIX) :]

        def get(s: DeviceSnapshot, _key: str = key) -> object:
            return s.custom.get(_key)

    unknown_passes = spec.if_unknown is IfUnknown.PASS
    skip = frozenset(_ALL_PLATFORMS - spec.platforms - {OsFamily.UNKNOWN}) if spec.platforms else frozenset()

    if spec.operator is Operator.MIN_VERSION:
        if not isinstance(spec.value, VersionFloor):
            raise ValueError("`min_version` needs a VersionFloor")
        table = _FloorTable(spec.value)
        floor_of = table.parts

        def test_version(s: DeviceSnapshot) -> bool:
            v = get(s)
            if v is None:
                return unknown_passes
            if not isinstance(v, Version):
                try:
                    v = Version.parse(str(v))
                except ValueError:
                    return False
            floor = floor_of(s)
            return floor is not None and v.parts >= floor

        core: Predicate = test_version
        required: Callable[[DeviceSnapshot], str] = table.text
        cost = 4 if table.single else 6
    else:
        test, required = _value_test(spec, kind)

        def core(s: DeviceSnapshot) -> bool:
            v = get(s)
            if v is None:
                return unknown_passes
            return test(v)

        cost = {FactKind.BOOL: 1, FactKind.INT: 2, FactKind.STR: 3}.get(kind, 8)
        if spec.operator in (Operator.ONE_OF, Operator.NONE_OF):
            cost += 1

    passes: Predicate = core
    if skip:

        def passes_outside_skip(s: DeviceSnapshot) -> bool:
            return s.platform in skip or core(s)

        passes = passes_outside_skip

    def actual(s: DeviceSnapshot) -> str:
        return display(get(s))

    describe, finding = _describers(spec, get, actual, required, remediation)

    inline, constants = _inline(spec, kind, index, skip, unknown_passes, passes)
    return CompiledCheck(
        name=spec.name,
        fact=spec.fact,
        severity=spec.severity,
        grace=spec.grace,
        remediation=remediation,
        cost=cost,
        passes=passes,
        actual=actual,
        required=required,
        describe=describe,
        finding=finding,
        inline=inline,
        constants=constants,
        if_unmeasurable=spec.if_unmeasurable,
    )


_CACHE_LIMIT = 4096


def _describers(
    spec: CheckSpec,
    get: Callable[[DeviceSnapshot], object],
    actual: Callable[[DeviceSnapshot], str],
    required: Callable[[DeviceSnapshot], str],
    remediation: str,
) -> tuple[Callable[[DeviceSnapshot], tuple[str, str]], Callable[[DeviceSnapshot], Finding]]:
    """Display strings and findings cached by what they depend on: the fact value, plus the
    platform and distribution for version floors. The caches stop growing at a few thousand
    entries (a fleet has few distinct values; a hostile one is computed every time)."""
    texts: dict[object, tuple[str, str]] = {}
    findings: dict[object, Finding] = {}
    per_platform = spec.operator is Operator.MIN_VERSION
    name, fact, severity = spec.name, spec.fact, spec.severity

    def key_of(s: DeviceSnapshot) -> object:
        value = get(s)
        kind = type(value)
        # type() keeps True, 1 and 1.0 apart (they hash alike but display differently); a
        # Version is keyed by its text, which is what it displays and is cheap to hash.
        if kind is Version:
            value = value.text  # type: ignore[attr-defined]  # `kind is Version` does not narrow `value`
        return (value, kind, s.platform, s.distribution) if per_platform else (value, kind)

    def describe(s: DeviceSnapshot) -> tuple[str, str]:
        try:
            key = key_of(s)
            found = texts.get(key)
        except TypeError:  # unhashable value from a broken ingest
            return actual(s), required(s)
        if found is None:
            found = (actual(s), required(s))
            if len(texts) < _CACHE_LIMIT:
                texts[key] = found
        return found

    def finding(s: DeviceSnapshot) -> Finding:
        try:
            key = key_of(s)
            found = findings.get(key)
        except TypeError:
            key, found = None, None
        if found is None:
            shown, needed = describe(s)
            found = FindingTwin(name, fact, shown, needed, severity, None, remediation, False)
            if key is not None and len(findings) < _CACHE_LIMIT:
                findings[key] = found
        return found

    return describe, finding


def _inline(
    spec: CheckSpec,
    kind: FactKind,
    index: int,
    skip: frozenset[OsFamily],
    unknown_passes: bool,
    passes: Predicate,
) -> tuple[str, tuple[tuple[str, object], ...]]:
    """An expression over ``s`` equivalent to ``passes``; only whitelisted field names and
    generated constant names appear in it, never text from the policy file."""
    c, t, k, p = f"_c{index}", f"_t{index}", f"_k{index}", f"_p{index}"
    constants: list[tuple[str, object]] = []
    expr: str | None = None
    if kind is not FactKind.CUSTOM and spec.fact in BUILTIN_FACTS:
        a = f"s.{spec.fact}"
        operator, value = spec.operator, spec.value
        if operator is Operator.EQUALS and kind is FactKind.BOOL and isinstance(value, bool):
            expr = f"{a} is not {not value}" if unknown_passes else f"{a} is {value}"
        elif operator is Operator.EQUALS:
            constants.append((c, value))
            expr = f"(({t} := {a}) is None or {t} == {c})" if unknown_passes else f"{a} == {c}"
        elif operator in (Operator.ONE_OF, Operator.NONE_OF):
            constants.append((c, frozenset(value)))  # type: ignore[arg-type]
            test = "in" if operator is Operator.ONE_OF else "not in"
            guard = "is None or" if unknown_passes else "is not None and"
            expr = f"(({t} := {a}) {guard} {t} {test} {c})"
        elif operator in _BOUND_SYMBOL:
            constants.append((c, value))
            guard = "is None or" if unknown_passes else "is not None and"
            expr = f"(({t} := {a}) {guard} {t} {_BOUND_SYMBOL[operator]} {c})"
        elif operator is Operator.MIN_VERSION and isinstance(value, VersionFloor):
            table = _FloorTable(value)
            guard = "is None or" if unknown_passes else "is not None and"
            if table.single and table.everywhere is not None:
                constants.append((c, table.everywhere))
                expr = f"(({t} := {a}) {guard} {t}.parts >= {c})"
            else:
                # platform -> (floor by distribution, floor otherwise); a missing platform has
                # no acceptable version unless `default` gives one.
                constants.append((c, table.inline_table()))
                constants.append((k + "d", table.inline_default()))
                f = f"_f{index}"
                expr = (
                    f"(({t} := {a}) {guard} ({t}.parts >= "
                    f"(({f} := {c}.get(s.platform, {k}d))[0].get(s.distribution, {f}[1]))))"
                )
    if expr is None:
        constants.append((p, passes))
        return f"{p}(s)", tuple(constants)
    if skip:
        constants.append((k, skip))
        expr = f"(s.platform in {k} or {expr})"
    return expr, tuple(constants)
