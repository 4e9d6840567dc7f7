"""Tests for breakglass/errors.py: each error is also the builtin callers catch."""

from __future__ import annotations

import pytest

from breakglass import (
    AuditConflict,
    AuditIntegrityError,
    AuditWriteError,
    BreakglassError,
    GrantNotFound,
    GrantRejected,
    NotAuthorised,
)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (GrantRejected("reason-too-short", "x"), ValueError),
        (GrantNotFound("g-1"), LookupError),
        (NotAuthorised("not-an-approver", "x"), PermissionError),
        (AuditWriteError("x"), OSError),
        (AuditIntegrityError("x"), ValueError),
        (AuditConflict(2, 3), BreakglassError),
    ],
)
def test_errors_inherit_a_fitting_builtin(error: BreakglassError, builtin: type[Exception]) -> None:
    """Every error is a BreakglassError and the builtin that fits it."""
    assert isinstance(error, BreakglassError)
    assert isinstance(error, builtin)


def test_grant_not_found_says_what_to_do() -> None:
    """The default message names the grant and the command to list grants."""
    assert "no grant `g-7f3a`; see grants with `gatehouse break-glass list`" == str(GrantNotFound("g-7f3a"))
