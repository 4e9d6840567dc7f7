"""What evaluation returns: a Decision that explains itself, its findings and reason codes.

Owns: Decision, Finding, Reason.
Must not import: anything outside the standard library and policy_engine.document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from policy_engine.document import Severity


class Reason(StrEnum):
    """Why a decision came out as it did; the same code goes to logs, metrics and the deny page."""

    OK = "ok"
    """Allowed: every blocking check passed (nudges and checks in grace may still be listed)."""
    IDENTITY_ONLY = "identity-only"
    """Allowed without a device: the tier says ``device: optional`` and the request named no verified
    device; only ``evaluate_without_device`` gives it, never ``evaluate``."""
    DEVICE_UNKNOWN = "device-unknown"
    """No snapshot for the device."""
    SNAPSHOT_STALE = "snapshot-stale"
    """The snapshot is older than the tier's ``max_snapshot_age``."""
    SNAPSHOT_FROM_FUTURE = "snapshot-from-future"
    """The snapshot is dated after ``now`` by more than the policy's ``max_clock_skew``."""
    CHECKS_FAILED = "checks-failed"
    """At least one ``fail`` check failed and is past any grace period."""
    CHECK_UNMEASURABLE = "check-unmeasurable"
    """Denied only by checks whose fact the reporting source cannot measure on this device
    (``if_unmeasurable: fail``): nothing for the user to fix; IT decides how to measure it."""
    TIER_UNKNOWN = "tier-unknown"
    """The tier is not defined in the policy in force."""
    CHECK_ERROR = "check-error"
    """A check (or the inputs) raised while evaluating; denied, ``detail`` says what."""
    DEVICE_NOT_OWNED = "device-not-owned"
    """Never produced by ``evaluate``: the gateway's owner binding (the route requires the user to be
    one of the device's listed owners) turns a decision for someone else's device into this one."""
    DEVICE_UNOWNED = "device-unowned"
    """Never produced by ``evaluate``: the gateway's owner binding turns a decision for a device with
    no recorded owners (such as one reporting through osquery only) into this one."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One check that did not pass: what was seen, what was required, and how to fix it."""

    check: str
    fact: str
    actual: str
    """Display value of the fact: ``13.2.1``, ``off``, ``900``, ``not reported``."""
    required: str
    """Display requirement: ``>= 14.4``, ``on``, ``<= 600``, ``one of darwin, windows``."""
    severity: Severity
    grace_deadline: datetime | None
    """When a check with grace starts (or started) blocking; None without grace."""
    remediation: str
    """Key in the compiled set's remediation catalog."""
    unmeasurable: bool = False
    """The source cannot measure the fact on this device: show what could not be checked and
    why, never fix steps (``actual`` says which source)."""

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {
            "check": self.check,
            "fact": self.fact,
            "actual": self.actual,
            "required": self.required,
            "severity": self.severity.value,
            "grace_deadline": self.grace_deadline.isoformat() if self.grace_deadline else None,
            "remediation": self.remediation,
            "unmeasurable": self.unmeasurable,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not at one tier, why, and until when the same inputs give the same answer."""

    allowed: bool
    tier: str
    reason: Reason
    failing: tuple[Finding, ...] = ()
    """Blocking failures: ``fail`` checks without grace or past their grace deadline."""
    in_grace: tuple[Finding, ...] = ()
    """``fail`` checks failing but not blocking yet; each has its ``grace_deadline``."""
    nudges: tuple[Finding, ...] = ()
    """``nudge`` checks failing; never block."""
    snapshot_age: timedelta | None = None
    """Age of the snapshot at ``evaluated_at`` (negative within the allowed clock skew)."""
    evaluated_at: datetime | None = None
    valid_until: datetime | None = None
    """First instant at which the same inputs could decide differently; None means never."""
    detail: str = ""
    """For ``check-error``: which check and what went wrong; otherwise empty."""

    @property
    def reasons(self) -> frozenset[Reason]:
        """The reason as a set, for code written against ``Reason.X in decision.reasons``."""
        return frozenset((self.reason,))

    def is_valid_at(self, now: datetime) -> bool:
        """Whether this decision still holds at ``now`` for the same inputs."""
        start = self.evaluated_at
        until = self.valid_until
        return (start is None or start <= now) and (until is None or now < until)

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {
            "allowed": self.allowed,
            "tier": self.tier,
            "reason": self.reason.value,
            "failing": [f.to_dict() for f in self.failing],
            "in_grace": [f.to_dict() for f in self.in_grace],
            "nudges": [f.to_dict() for f in self.nudges],
            "snapshot_age_s": self.snapshot_age.total_seconds() if self.snapshot_age is not None else None,
            "evaluated_at": self.evaluated_at.isoformat() if self.evaluated_at else None,
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "detail": self.detail,
        }


def _mutable_twin(cls: type) -> type:
    """A plain slotted class with ``cls``'s exact slot layout and a positional ``__init__``.

    Calling the twin fills the slots and then sets ``__class__`` to the frozen dataclass, so it
    returns an ordinary frozen instance, built without one ``object.__setattr__`` call per field
    (which is what makes frozen dataclass construction slow).
    """
    names = tuple(cls.__slots__)  # type: ignore[attr-defined]
    source = (
        f"def __init__(self, {', '.join(names)}):\n"
        + "".join(f"    self.{n} = {n}\n" for n in names)
        + "    self.__class__ = _frozen\n"
    )
    namespace: dict[str, object] = {"_frozen": cls}
    exec(source, namespace)  # noqa: S102 - field names of our own dataclass only
    return type(f"_{cls.__name__}Twin", (), {"__slots__": names, "__init__": namespace["__init__"]})


# INVARIANT: the twins' slots equal the dataclasses' slots, in order, so ``__class__`` may be
# reassigned from twin to dataclass (CPython checks the layouts are compatible).
DecisionTwin = _mutable_twin(Decision)
FindingTwin = _mutable_twin(Finding)
