"""The typed form of a policy file, as parsed and validated: checks, tiers, remediation entries.

Owns: PolicyDocument, CheckSpec, TierSpec, BreakGlassSpec, RemediationSpec, ControlRef, VersionFloor and the
small enums they use (Severity, IfUnknown, IfUnmeasurable, Operator, BreakGlassMode, DeviceRequirement).
Must not import: anything outside the standard library; no behaviour lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Union

from policy_engine.model import OsFamily, Version

Scalar = Union[str, int, float, bool]
"""A constant a check compares a fact with."""


class Severity(StrEnum):
    """What a failing check does: ``fail`` blocks (after any grace), ``nudge`` only warns."""

    FAIL = "fail"
    NUDGE = "nudge"


class IfUnknown(StrEnum):
    """What a fact the agent did not report means for a check (Stethoscope's IF_SUPPORTED is ``pass``)."""

    FAIL = "fail"
    PASS = "pass"


class IfUnmeasurable(StrEnum):
    """What a fact the source cannot measure on the device means for a check: it passes, it is
    listed as a nudge that never blocks, or it fails like a failing value (severity and grace apply)."""

    FAIL = "fail"
    NUDGE = "nudge"
    PASS = "pass"


class Operator(StrEnum):
    """How a check compares its fact; the key the check uses in the policy file."""

    EQUALS = "equals"
    ONE_OF = "one_of"
    NONE_OF = "none_of"
    AT_MOST = "at_most"
    AT_LEAST = "at_least"
    BELOW = "below"
    ABOVE = "above"
    MIN_VERSION = "min_version"


class BreakGlassMode(StrEnum):
    """Whether a tier may be entered with an emergency grant despite a deny."""

    ALLOWED = "allowed"
    APPROVAL = "approval"
    NEVER = "never"


class DeviceRequirement(StrEnum):
    """Whether a tier needs a verified device: ``optional`` decides a request naming none on identity alone."""

    REQUIRED = "required"
    OPTIONAL = "optional"


@dataclass(frozen=True, slots=True)
class VersionFloor:
    """Minimum versions: one for every platform, or one per platform and per Linux distribution.

    Lookup order for a device: its distribution (Linux only), then its platform, then
    ``everywhere``; no entry at all means no version is acceptable on that device.
    """

    everywhere: Version | None = None
    darwin: Version | None = None
    windows: Version | None = None
    linux: Version | None = None
    """Linux distributions without their own entry."""
    linux_distributions: tuple[tuple[str, Version], ...] = ()


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A named check: a fact, a comparison, a severity and what unknown means."""

    name: str
    fact: str
    """A snapshot field (``disk_encrypted``) or ``custom.<name>``."""
    operator: Operator
    value: Scalar | tuple[Scalar, ...] | VersionFloor
    severity: Severity = Severity.FAIL
    grace: timedelta | None = None
    if_unknown: IfUnknown = IfUnknown.FAIL
    if_unmeasurable: IfUnmeasurable = IfUnmeasurable.FAIL
    platforms: frozenset[OsFamily] = frozenset()
    """Platforms the check applies to; empty means every platform."""
    remediation: str = ""
    """Remediation catalog key; empty means the catalog entry named like the check or its fact."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class BreakGlassSpec:
    """A tier's break-glass rule; ``max_duration`` is set for ``allowed`` and ``approval``."""

    mode: BreakGlassMode
    max_duration: timedelta | None = None


@dataclass(frozen=True, slots=True)
class TierSpec:
    """A sensitivity tier as written: its own checks plus those of the tier it extends."""

    name: str
    checks: tuple[str, ...]
    max_snapshot_age: timedelta
    break_glass: BreakGlassSpec
    extends: str = ""
    description: str = ""
    device: DeviceRequirement = DeviceRequirement.REQUIRED
    """``optional``: a request that names no verified device is allowed on identity alone; not inherited."""


@dataclass(frozen=True, slots=True)
class RemediationSpec:
    """A remediation entry as written; empty fields keep the built-in default's value."""

    key: str
    title: str = ""
    why: str = ""
    steps: tuple[tuple[OsFamily, str], ...] = ()
    doc_url: str = ""


@dataclass(frozen=True, slots=True)
class ControlRef:
    """A compliance control a check is evidence for, such as HIPAA ``164.312(a)(2)(iv)`` or SOC 2 ``CC6.7``."""

    framework: str
    id: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A whole policy file, typed; tiers in order of sensitivity, least sensitive first."""

    source: str
    checks: tuple[CheckSpec, ...]
    tiers: tuple[TierSpec, ...]
    remediation: tuple[RemediationSpec, ...] = ()
    description: str = ""
    max_clock_skew: timedelta = timedelta(minutes=1)
    """How far in the future a snapshot may be dated before it is refused."""
    format: int = 1
    controls: tuple[tuple[str, tuple[ControlRef, ...]], ...] = ()
    """Per check name (in file order), the controls it evidences; reports only, never decisions."""
