"""Thin aiohttp handlers: the catch-all proxied route, liveness and readiness; the gate seam.

Owns: Gate and FastGate (Protocols), Admission, OpenGate, Readiness, handle_proxied, healthz, readyz,
RESERVED_PREFIXES.
Must not import: app, server (app.py wires these handlers; they read what they need from app keys).

The catch-all is: canonical target (set by the middleware) → reserved prefix check → route match
→ ``app[GATE].admit(request, route)`` → proxy (or WebSocket relay). The gate is where identity and
policy plug in: it returns an Admission that either allows (with the identity headers to inject) or
carries the response to send instead (a deny page, a login redirect).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import orjson
import structlog
from aiohttp import web

from gateway import proxy
from gateway.errors import RouteNotFound
from gateway.keys import EXCHANGE, GATE, LIVE, METRICS, READINESS, REQUEST_ID, ROUTE, TARGET, UPSTREAM_SESSION
from gateway.routing import Route

if TYPE_CHECKING:
    from gateway.fastlane.head import RequestHead

RESERVED_PREFIXES = ("/.gatehouse/", "/.well-known/gatehouse/")
"""Paths that belong to Gatehouse on every host and are never proxied, in any letter case (``/.GateHouse/x`` too)."""
_RESERVED_BARE = frozenset(p[:-1] for p in RESERVED_PREFIXES)

_EMPTY: Mapping[str, str] = MappingProxyType({})


def log_context_var(name: str) -> contextvars.ContextVar[object]:
    """structlog's context variable behind ``bind_contextvars(name=...)``; ``.set(v)`` binds ``name`` without its per-call lookups."""
    token = structlog.contextvars.bind_contextvars(**{name: None})[name]
    structlog.contextvars.reset_contextvars(**{name: token})
    return token.var


_ROUTE_VAR = log_context_var("route")
_TIER_VAR = log_context_var("tier")


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
    """Who, which device, what verdict and why, for the fast lane's ``request.completed`` line (``admit_now`` sets them)."""

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

    When ``admit`` runs, ``request[TARGET]`` (canonical target), ``request[LIVE]`` (settings and
    routes in force for this request), ``request[ROUTE]`` and ``request[REQUEST_ID]`` are set. Bind
    ``decision``, ``user``, ``device`` and ``reason`` with ``structlog.contextvars.bind_contextvars`` so they
    appear in the ``request.completed`` line. Raising GatewayError renders its error page; any other
    exception is a 500 and the request is never proxied.
    """

    async def admit(self, request: web.Request, route: Route) -> Admission: ...


class FastGate(Gate, Protocol):
    """A Gate that can also decide a plain request at once, for the fast lane (``gateway.fastlane``).

    ``admit_now(app, head, route)`` gets the parsed head (``head.headers``, ``head.cookies``,
    ``head.transport``, ``head.method``, ``head.raw_path``, as on an aiohttp request) and returns an
    allowing Admission (with ``user``, ``device``, ``decision`` and ``reason`` for the log line) only when the
    request may be proxied as is. It returns None, before any side effect (no metric, no log, no
    audit entry), for everything else: no verified identity at hand without I/O, a denial, a grant
    whose use must be recorded. The request is then handed to aiohttp and ``admit`` decides it again.
    When ``admit_now`` lacked only something ``prepare`` can fetch (a token not verified yet), the
    lane awaits ``prepare`` and asks ``admit_now`` once more before handing over.
    """

    def admit_now(self, app: web.Application, head: RequestHead, route: Route) -> Admission | None: ...

    async def prepare(self, app: web.Application, head: RequestHead) -> bool:
        """Do the I/O ``admit_now`` could not do (verify a new token); True when ``admit_now`` may be asked once more.

        No side effects beyond caches: a failure here is answered by ``admit`` on the full path.
        """


class OpenGate:
    """Admits everything with no identity headers (until identity and policy are wired, and in tests)."""

    async def admit(self, request: web.Request, route: Route) -> Admission:
        return Admission.allow()

    def admit_now(self, app: web.Application, head: RequestHead, route: Route) -> Admission | None:
        return _OPEN

    async def prepare(self, app: web.Application, head: RequestHead) -> bool:
        return False


_OPEN = Admission.allow()


Check = Callable[[], bool | Awaitable[bool]]


@dataclass(slots=True)
class Readiness:
    """Named readiness checks behind /.gatehouse/readyz.

    A check is critical (the replica cannot decide requests without it: config, policy, the loaded
    snapshot cache) or degradable (``degrades=True``: the replica still decides correctly from memory
    while it fails, e.g. the store). Readiness is 200 while every critical check passes, listing the
    degradable ones that fail under ``degraded``; ``?strict=1`` counts those as not ready too.
    """

    checks: dict[str, Check] = field(default_factory=dict)
    degradable: set[str] = field(default_factory=set)

    def add(self, name: str, check: Check, *, degrades: bool = False) -> None:
        """Register (or replace) a check; it may be sync or async and must be cheap."""
        self.checks[name] = check
        if degrades:
            self.degradable.add(name)
        else:
            self.degradable.discard(name)

    def remove(self, name: str) -> None:
        """Forget a check."""
        self.checks.pop(name, None)
        self.degradable.discard(name)

    async def evaluate(self) -> dict[str, bool]:
        """Every check's state; a check that raises counts as failing."""
        states: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                value = check()
                if inspect.isawaitable(value):
                    value = await value
                states[name] = bool(value)
            except Exception:  # a broken check means not ready, never a 500
                states[name] = False
        return states


def is_reserved(path: str) -> bool:
    """True for paths under a reserved prefix (or the bare prefixes themselves), in any letter case."""
    if not path.startswith("/."):
        return False
    lowered = path.lower()
    return lowered.startswith(RESERVED_PREFIXES) or lowered in _RESERVED_BARE


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop runs."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while every critical check passes (degraded ones listed), else 503 naming what is not ready."""
    readiness = request.config_dict[READINESS]
    states = await readiness.evaluate()
    strict = request.query.get("strict") in ("1", "true")
    failing = sorted(name for name, ok in states.items() if not ok)
    degraded = [] if strict else [name for name in failing if name in readiness.degradable]
    not_ready = [name for name in failing if name not in degraded]
    body = {"ready": not not_ready, "checks": states, "not_ready": not_ready, "degraded": degraded}
    return web.Response(
        status=503 if not_ready else 200, body=orjson.dumps(body), content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def handle_proxied(request: web.Request) -> web.StreamResponse:
    """Catch-all: route the canonical target, ask the gate, then proxy.

    Raises:
        RouteNotFound: a reserved path not served by Gatehouse, or no route matches.
        BodyTooLarge, UpstreamError: from the proxy.
    """
    target = request[TARGET]
    if is_reserved(target.path):
        raise RouteNotFound(f"`{target.path}` is reserved for Gatehouse")
    live = request[LIVE]
    route = live.routes.match_target(target)
    if route is None:
        raise RouteNotFound(f"no route for `{target.host}{target.path}`")
    request[ROUTE] = route
    exchange = request[EXCHANGE]
    exchange.route, exchange.tier = route.id, route.tier
    _ROUTE_VAR.set(route.id)  # bind_contextvars(route=..., tier=...), without its lookups
    _TIER_VAR.set(route.tier)
    app = request.app  # INVARIANT: the catch-all is a route of create_app's app, which holds every key read here
    admission = await app[GATE].admit(request, route)
    if admission.response is not None:
        return admission.response
    websocket = proxy.is_websocket_upgrade(request)
    headers = proxy.upstream_headers(
        request.headers,
        peer=request.remote,
        trusted=live.trusts(request.remote),
        scheme=request.scheme,
        host=target.host,
        request_id=request[REQUEST_ID],
        inject=admission.inject,
        strip=admission.strip,
        drop_cookies=admission.drop_cookies,
        websocket=websocket,
    )
    if websocket:
        return await proxy.forward_websocket(
            request, route, target, session=app[UPSTREAM_SESSION], headers=headers, counts=exchange, metrics=app[METRICS],
        )
    return await proxy.forward(
        request, route, target, session=app[UPSTREAM_SESSION], headers=headers,
        request_id=request[REQUEST_ID], counts=exchange, metrics=app[METRICS],
    )


__all__ = [
    "Admission", "FastGate", "Gate", "OpenGate", "RESERVED_PREFIXES", "Readiness",
    "handle_proxied", "healthz", "is_reserved", "log_context_var", "readyz",
]
