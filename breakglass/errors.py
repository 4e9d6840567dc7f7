"""Errors raised by the break-glass package.

Owns: BreakglassError and its subclasses.
Must not import: gateway, policy_engine, aiohttp.

Each error also inherits the builtin a caller would naturally catch, so the gateway can map them
to responses without importing this module everywhere: a refused request is a ``ValueError``
(400/409), an unknown grant a ``LookupError`` (404), a missing permission a ``PermissionError``
(403), and an audit log that could not be written an ``OSError`` (503).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from breakglass.model import Grant


class BreakglassError(Exception):
    """Root of the break-glass package's own errors."""


class GrantRejected(BreakglassError, ValueError):
    """A request, approval or other change was refused; ``code`` says why in kebab-case.

    ``grant`` is the refused grant when the refusal itself was written to the audit log (a tier
    whose rule is ``never``), and ``None`` when nothing was written (a reason that is too short).
    """

    def __init__(self, code: str, message: str, *, grant: Grant | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.grant = grant


class GrantNotFound(BreakglassError, LookupError):
    """No grant with that id, or none in the state the operation needs."""

    def __init__(self, grant_id: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"no grant `{grant_id}`; see grants with `gatehouse break-glass list`"
        )
        self.grant_id = grant_id


class NotAuthorised(BreakglassError, PermissionError):
    """The actor may not perform this operation on this grant."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AuditWriteError(BreakglassError, OSError):
    """The audit entry could not be made durable, so the change it records did not happen."""


class AuditConflict(BreakglassError):
    """Raised by an ``AuditSink`` when another writer appended first; nothing was written.

    The service catches it, reads the entries it missed, re-checks its rules and tries again.
    """

    def __init__(self, expected_seq: int, head_seq: int) -> None:
        super().__init__(
            f"audit entry {expected_seq} was already written (head is at {head_seq}); "
            "read the new entries and try again"
        )
        self.expected_seq = expected_seq
        self.head_seq = head_seq


class AuditIntegrityError(BreakglassError, ValueError):
    """The audit log does not hold together: a broken chain, an unreadable entry or an
    impossible sequence of events."""
