"""Errors raised inside the gateway, each knowing the HTTP status it becomes.

Owns: GatewayError and its subclasses, Problem.
Must not import: aiohttp (the proxy and the middleware turn these into responses).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file, at a location such as ``routes[2].upstream``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class GatewayError(Exception):
    """Root of the gateway's own errors."""

    status: int = 500
    code: str = "internal-error"


class ConfigError(GatewayError, ValueError):
    """A configuration file could not be loaded; lists every problem found."""

    def __init__(self, source: str, problems: tuple[Problem, ...]) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")
        self.source = source
        self.problems = problems


class BadRequestTarget(GatewayError, ValueError):
    """The request target is ambiguous or malformed and is refused rather than guessed at."""

    status = 400
    code = "bad-request-target"


class RouteNotFound(GatewayError, LookupError):
    """No route matches the request; it never reaches an upstream."""

    status = 404
    code = "no-route"


class UpstreamError(GatewayError):
    """The upstream could not be reached (502) or did not answer in time (504)."""

    def __init__(self, kind: str, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status
        self.code = f"upstream-{kind}"
