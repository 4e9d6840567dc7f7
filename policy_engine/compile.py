"""Compile a typed PolicyDocument into a CompiledPolicySet ready for the hot path.

Owns: compile_policy_set, reference_problems.
Must not import: anything outside the standard library and policy_engine.

Resolves tier inheritance and remediation keys, pre-parses version floors and sets, orders each
tier's checks cheapest first and generates each tier's check function.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from datetime import timedelta
from enum import Enum
from typing import Callable

from policy_engine.checks import CompiledCheck, compile_check
from policy_engine.defaults import DEFAULT_KEY_BY_FACT, DEFAULT_REMEDIATION
from policy_engine.document import BreakGlassMode, DeviceRequirement, IfUnmeasurable, PolicyDocument
from policy_engine.errors import PolicyCompileError, Problem
from policy_engine.evaluate import CompiledPolicySet, TierInfo, _Tier
from policy_engine.model import DeviceSnapshot, Version
from policy_engine.remediation import Remediation, merge_remediation


def reference_problems(document: PolicyDocument) -> tuple[Problem, ...]:
    """Problems in how a typed document's parts refer to each other (names, inheritance, keys)."""
    problems: list[Problem] = []
    check_names = [c.name for c in document.checks]
    seen: set[str] = set()
    for check in document.checks:
        if check.name in seen:
            problems.append(Problem(f"checks.{check.name}", "duplicate", f"check `{check.name}` is defined twice; rename one"))
        seen.add(check.name)
    remediation_keys = set(DEFAULT_REMEDIATION) | {r.key for r in document.remediation}
    for check in document.checks:
        if check.remediation and check.remediation not in remediation_keys:
            problems.append(
                Problem(
                    f"checks.{check.name}.remediation",
                    "unknown-remediation",
                    f"unknown remediation `{check.remediation}`; define it under `remediation:` or use a built-in key",
                )
            )
    for name, _refs in document.controls:
        if name not in check_names:
            problems.append(Problem(f"controls.{name}", "unknown-check", f"unknown check `{name}`; define it under `checks:`"))
    for entry in document.remediation:
        if entry.key not in DEFAULT_REMEDIATION and not entry.title:
            problems.append(Problem(f"remediation.{entry.key}", "missing-key", f"`{entry.key}` needs a `title`; add `title: ...`"))
    if not document.tiers:
        problems.append(Problem("tiers", "missing-key", "no tiers defined; add at least one, such as `low`"))
    earlier: list[str] = []
    for tier in document.tiers:
        path = f"tiers.{tier.name}"
        if tier.name in earlier:
            problems.append(Problem(path, "duplicate", f"tier `{tier.name}` is defined twice; rename one"))
        if tier.extends and tier.extends not in earlier:
            problems.append(
                Problem(
                    f"{path}.extends",
                    "unknown-tier",
                    f"`{tier.extends}` is not a tier listed before `{tier.name}`; extend a less sensitive tier",
                )
            )
        for i, name in enumerate(tier.checks):
            if name not in check_names:
                problems.append(Problem(f"{path}.checks[{i}]", "unknown-check", f"unknown check `{name}`; define it under `checks:`"))
        rule = tier.break_glass
        if rule.mode is BreakGlassMode.NEVER and rule.max_duration is not None:
            problems.append(Problem(f"{path}.break_glass", "conflict", "`never` takes no `max_duration`; remove it"))
        if rule.mode is not BreakGlassMode.NEVER and (rule.max_duration is None or rule.max_duration <= timedelta(0)):
            problems.append(Problem(f"{path}.break_glass", "missing-key", f"`{rule.mode.value}` needs a positive `max_duration` such as `4h`"))
        if tier.max_snapshot_age < timedelta(0):
            problems.append(Problem(f"{path}.max_snapshot_age", "bad-duration", "must not be negative; write such as `1h`"))
        earlier.append(tier.name)
    return tuple(problems)


def _canonical(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value) if f.name != "source"}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Version):
        return value.text
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, frozenset):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    return value


def policy_fingerprint(document: PolicyDocument) -> str:
    """A short stable hash of what a document says (not where it came from).

    An empty ``controls`` section and a tier's default ``device: required`` are left out, so policies
    written before they existed keep their version.
    """
    data = _canonical(document)
    if not document.controls and isinstance(data, dict):
        data.pop("controls", None)
    if isinstance(data, dict):
        for tier in data.get("tiers", ()):
            if tier.get("device") == DeviceRequirement.REQUIRED.value:
                del tier["device"]
    text = json.dumps(data, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unmeasurable_failing(checks: tuple[CompiledCheck, ...]) -> Callable[[DeviceSnapshot], list[int]]:
    """The check function for a snapshot naming facts its source cannot measure: such a check
    passes with ``if_unmeasurable: pass`` and is listed (for ``_explain``) otherwise; every other
    check runs as usual."""
    tests = tuple((i, c.fact, c.if_unmeasurable is IfUnmeasurable.PASS, c.passes) for i, c in enumerate(checks))

    def failing(s: DeviceSnapshot) -> list[int]:
        out = []
        blind = s.unmeasurable
        for i, fact, blind_passes, passes in tests:
            if fact in blind:
                if not blind_passes:
                    out.append(i)
                continue
            try:
                if not passes(s):
                    out.append(i)
            except Exception:  # noqa: BLE001 - reported as ~i, like the generated function
                out.append(~i)
        return out

    return failing


def _build_failing(checks: tuple[CompiledCheck, ...]) -> Callable[[DeviceSnapshot], list[int]]:
    """Generate a function returning the index of every check that does not pass on a snapshot,
    or ``~index`` (negative) for a check that raised; an empty list means all pass. A snapshot
    with unmeasurable facts takes ``_unmeasurable_failing`` instead (one test of an empty set
    on the common path)."""
    namespace: dict[str, object] = {"__builtins__": {}, "_E": Exception, "_U": _unmeasurable_failing(checks)}
    terms = []
    for check in checks:
        # INVARIANT: inline expressions hold only whitelisted field names, operators and
        # generated names (_c3, _p7); policy text reaches the code only as bound constants.
        terms.append(check.inline or "False")
        namespace.update(check.constants)
    failing = ["def _failing(s):", "    if s.unmeasurable:", "        return _U(s)", "    out = []"]
    for i, term in enumerate(terms):
        failing += [
            "    try:",
            f"        if not ({term}):",
            f"            out.append({i})",
            "    except _E:",
            f"        out.append({~i})",
        ]
    failing.append("    return out")
    source = "\n".join(failing) + "\n"
    exec(compile(source, "<gatehouse-policy>", "exec"), namespace)  # noqa: S102 - see INVARIANT
    return namespace["_failing"]  # type: ignore[return-value]


def compile_policy_set(document: PolicyDocument) -> CompiledPolicySet:
    """Compile a validated document for evaluation.

    Raises:
        PolicyCompileError: listing every reference that does not resolve and every check that
            cannot be compiled.
    """
    problems = list(reference_problems(document))
    catalog: dict[str, Remediation] = dict(DEFAULT_REMEDIATION)
    for entry in document.remediation:
        catalog[entry.key] = merge_remediation(DEFAULT_REMEDIATION.get(entry.key), entry)
    compiled: dict[str, CompiledCheck] = {}
    for index, spec in enumerate(document.checks):
        key = spec.remediation or (spec.name if spec.name in catalog else DEFAULT_KEY_BY_FACT.get(spec.fact, spec.name))
        if key not in catalog:
            catalog[key] = Remediation(key=key, title=spec.description or key.replace("_", " ").capitalize())
        try:
            compiled[spec.name] = compile_check(spec, key, index)
        except (ValueError, TypeError) as exc:
            problems.append(Problem(f"checks.{spec.name}", "bad-check", f"cannot compile: {exc}"))
    if problems:
        raise PolicyCompileError(tuple(problems))

    resolved: dict[str, tuple[str, ...]] = {}
    tiers = []
    for rank, tier in enumerate(document.tiers):
        names = list(resolved.get(tier.extends, ()))
        names += [n for n in tier.checks if n not in names]
        resolved[tier.name] = tuple(names)
        info = TierInfo(
            name=tier.name,
            rank=rank,
            checks=tuple(names),
            max_snapshot_age=tier.max_snapshot_age,
            break_glass=tier.break_glass,
            extends=tier.extends,
            description=tier.description,
            device=tier.device,
        )
        ordered = tuple(sorted((compiled[n] for n in names), key=lambda c: c.cost))
        tiers.append(_Tier(info, ordered, _build_failing(ordered)))
    return CompiledPolicySet(
        source=document.source,
        version=policy_fingerprint(document),
        description=document.description,
        max_clock_skew=document.max_clock_skew,
        tiers=tiers,
        checks=compiled.values(),
        remediation=catalog,
        all_failing=_build_failing(tuple(compiled.values())),
        controls=dict(document.controls),
    )
