"""Reading a policy file from disk and compiling it; the gateway's side of the pure policy engine.

Owns: load_policy (file → CompiledPolicySet), PolicyHolder (the policy in force, reloaded on SIGHUP,
last good kept, with its decision memo), route-tier cross-checks (tier defined; no owner binding on a
device-optional tier).
Must not import: aiohttp, gateway.keys, app, gateway.gate.admission (keys.py names PolicyHolder, so this module stays below it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import structlog
import yaml

from gateway.errors import ConfigError, Problem
from gateway.metrics import Metrics
from gateway.config.settings import RouteSettings
from policy_engine import CompiledPolicySet, DecisionMemo, DeviceRequirement, PolicyError, compile_policy_set, parse_policy_document

_log = structlog.get_logger("gateway.gate")  # the policy.reload* events keep the logger they had in policy_gate


def load_policy(path: Path) -> CompiledPolicySet:
    """Read, validate and compile a YAML or JSON policy file.

    Raises:
        ConfigError: the file cannot be read or parsed, or the policy has problems (all listed).
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, (Problem("", f"cannot read the policy file: {exc.strerror or exc}"),)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, (Problem(where, f"not valid YAML or JSON: {getattr(exc, 'problem', exc)}"),)) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, (Problem("", "a policy file must hold a mapping with `checks` and `tiers`"),))
    try:
        return compile_policy_set(parse_policy_document(raw, source=source))
    except PolicyError as exc:
        raise ConfigError(source, tuple(Problem(p.path, p.message) for p in exc.problems)) from None


class PolicyHolder:
    """The compiled policy in force; ``reload`` compiles the new file first and keeps the old on failure."""

    __slots__ = ("current", "path", "memo", "_metrics")

    def __init__(self, path: Path, policies: CompiledPolicySet, *, metrics: Metrics | None = None, memo_size: int = 200_000) -> None:
        self.path = path
        self.current = policies
        self.memo = DecisionMemo(memo_size)
        self._metrics = metrics

    @classmethod
    def load(cls, path: Path, *, metrics: Metrics | None = None) -> PolicyHolder:
        """Load the policy for a starting gateway.

        Raises:
            ConfigError: the policy file has problems (every one listed).
        """
        return cls(path, load_policy(path), metrics=metrics)

    def reload(self, path: Path | None = None) -> bool:
        """Compile ``path`` (default: the same file) and swap it in; on failure keep the old one."""
        path = path or self.path
        try:
            policies = load_policy(path)
        except ConfigError as exc:
            _log.error("policy.reload_failed", source=exc.source, problems=[str(p) for p in exc.problems], kept=self.current.version)
            if self._metrics is not None:
                self._metrics.config_reloads.labels(what="policy", outcome="failure").inc()
            return False
        previous = self.current.version
        self.path, self.current = path, policies  # INVARIANT: one reference swap; memo keys carry the version
        _log.info("policy.reloaded", source=str(path), version=policies.version, previous=previous, tiers=list(policies.tier_names))
        if self._metrics is not None:
            self._metrics.config_reloads.labels(what="policy", outcome="success").inc()
        return True


def route_tier_problems(routes: Sequence[RouteSettings], policies: CompiledPolicySet) -> list[Problem]:
    """Routes whose tier the policy does not define (they would deny every request), and routes with
    ``require_owner`` on a ``device: optional`` tier (an owner needs a device; the gate denies such a
    route's requests without one as ``device-unknown``)."""
    known = policies.tier_names
    problems = []
    for index, route in enumerate(routes):
        tier = policies.tier(route.tier)
        if tier is None:
            problems.append(Problem(
                f"routes[{index}].tier", f"`{route.tier}` is not a tier of the policy; known tiers: {', '.join(f'`{t}`' for t in known)}",
            ))
        elif route.require_owner and tier.device is DeviceRequirement.OPTIONAL:
            problems.append(Problem(
                f"routes[{index}].require_owner",
                f"route `{route.id}` requires the device's owner, but its tier `{route.tier}` says `device: optional` "
                "and without a device there is no owner to check; remove `require_owner`, or give the route a tier that requires a device",
            ))
    return problems
