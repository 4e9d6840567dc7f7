"""Errors raised while loading a policy: every problem found, each with its path in the document.

Owns: Problem, PolicyError, PolicyParseError, PolicyCompileError.
Must not import: anything outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a policy document, where it is and what to write instead."""

    path: str
    """Where in the document: ``tiers.high.checks[2]``; empty for the document itself."""
    code: str
    """Short kebab-case kind: ``unknown-key``, ``unknown-check``, ``bad-duration``."""
    message: str
    """One lowercase line, user input in backticks, no final period."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyError(ValueError):
    """A policy document could not be loaded."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class PolicyParseError(PolicyError):
    """The raw document has the wrong shape, unknown keys or bad values."""


class PolicyCompileError(PolicyError):
    """A typed document refers to things it does not define (checks, tiers, remediation)."""
