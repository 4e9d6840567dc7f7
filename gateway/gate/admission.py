"""The gate seam: what the proxy asks about each routed request, and what it gets back.

Owns: Gate, FastGate and GateAnswers (Protocols), Admission, OpenGate.
Must not import: app, gateway.serve, the proxy (the proxy calls these; the gate implements them).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from gateway.request import RequestHead, RequestLike
from gateway.proxy.routing import Route

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Admission:
    """The gate's answer: allow with headers to inject, or a response to send instead."""

    inject: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Headers added to the upstream request (after every client X-Gatehouse-* header is stripped)."""
    strip: Collection[str] = ()
    """Extra client header names to strip before forwarding (e.g. configured assertion headers)."""
    drop_cookies: Collection[str] = ()
    """Cookie names removed from the `Cookie` header before forwarding (Gatehouse's session, token cookies)."""
    response: web.StreamResponse | None = None
    """When set, the request is not proxied; this response (deny page, redirect) is sent."""
    user: str | None = None
    device: str | None = None
    decision: str | None = None
    reason: str | None = None
    """Who, which device, what verdict and why, for the ``request.completed`` line (``admit_now`` sets them; ``admit``
    binds them with structlog's contextvars instead, which the proxy reads when it awaited ``admit``)."""

    @classmethod
    def allow(
        cls, inject: Mapping[str, str] = _EMPTY, *, strip: Collection[str] = (), drop_cookies: Collection[str] = (),
        user: str | None = None, device: str | None = None, decision: str | None = None, reason: str | None = None,
    ) -> Admission:
        """Admit the request, injecting ``inject`` upstream."""
        return cls(inject=inject, strip=strip, drop_cookies=drop_cookies, user=user, device=device, decision=decision, reason=reason)

    @classmethod
    def refuse(cls, response: web.StreamResponse) -> Admission:
        """Do not proxy; send ``response`` instead."""
        return cls(response=response)


class Gate(Protocol):
    """Identity + policy for one routed, non-reserved request.

    ``request`` is the proxy's RequestHead (``gateway.request``), which reads like an aiohttp request.
    When ``admit`` runs, ``request[TARGET]`` (canonical target), ``request[LIVE]`` (settings and
    routes in force for this request), ``request[ROUTE]`` and ``request[REQUEST_ID]`` are set. Bind
    ``decision``, ``user``, ``device`` and ``reason`` with ``structlog.contextvars.bind_contextvars`` so they
    appear in the ``request.completed`` line. Raising GatewayError renders its error page; any other
    exception is a 500 and the request is never proxied.
    """

    async def admit(self, request: RequestLike, route: Route) -> Admission: ...


class FastGate(Gate, Protocol):
    """A Gate that can also decide a request at once, from memory, without a coroutine.

    ``admit_now(app, head, route)`` gets the parsed head and returns an allowing Admission (with
    ``user``, ``device``, ``decision`` and ``reason`` for the log line) only when the request may be
    proxied as is. It returns None, before any side effect (no metric, no log, no audit entry), for
    everything else: no verified identity at hand without I/O, a denial, a grant whose use must be
    recorded. Then the proxy awaits ``prepare`` (when ``admit_now`` lacked only something it can
    fetch, a token not verified yet) and asks ``admit_now`` once more, and otherwise awaits ``admit``,
    which decides it again and answers.
    """

    def admit_now(self, app: web.Application, head: RequestHead, route: Route) -> Admission | None: ...

    async def prepare(self, app: web.Application, head: RequestHead) -> bool:
        """Do the I/O ``admit_now`` could not do (verify a new token); True when ``admit_now`` may be asked once more.

        No side effects beyond caches: a failure here is answered by ``admit``.
        """


class GateAnswers(Protocol):
    """What a gate answers instead of proxying, rendered outside the gate (``gateway.web.gate_pages.GatePages``).

    The gate decides; these build the responses (pages for browsers, problem+json for API clients),
    so that the gate never imports pages.
    """

    def denied(self, request: RequestLike, outcome: Any, route: Route, policies: Any, *, now: datetime) -> web.StreamResponse:
        """The 403 for a denied request (``outcome`` is the gate's GateOutcome, ``policies`` the CompiledPolicySet in force)."""

    def audit_unavailable(self, request: RequestLike) -> web.StreamResponse:
        """The 503 for a break-glass request whose use could not be recorded."""


class OpenGate:
    """Admits everything with no identity headers (until identity and policy are wired, and in tests)."""

    async def admit(self, request: RequestLike, route: Route) -> Admission:
        return Admission.allow()

    def admit_now(self, app: web.Application, head: RequestHead, route: Route) -> Admission | None:
        return _OPEN

    async def prepare(self, app: web.Application, head: RequestHead) -> bool:
        return False


_OPEN = Admission.allow()


__all__ = ["Admission", "FastGate", "Gate", "OpenGate"]
