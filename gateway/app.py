"""The aiohttp application: wires settings, metrics, the gate, middlewares, resources and routes.

Owns: create_app, Clock/utc_now, LiveConfig, ConfigHolder.
Must not import: server, cli (the app knows nothing about sockets, signals or files).

Seams for the rest of the gateway:

- ``create_app(settings, *, clock=utc_now, metrics=None, gate=None)``; ``app[GATE]`` may also be
  replaced before the app starts. The gate (``gateway.handlers.Gate``) is called for every routed,
  non-reserved request and returns an ``Admission``.
- Readiness: ``app[READINESS].add("store", check)``; a check is a cheap sync or async callable
  returning bool. ``config`` is registered here. Register a placeholder (``lambda: False``) at wiring
  time for anything that must be loaded before traffic, and replace it when it is.
- Reserved routes: mount handlers under ``/.gatehouse/`` or ``/.well-known/gatehouse/`` with plain
  ``app.router.add_get("/.gatehouse/callback", handler)`` (or ``add_subapp`` for a whole area), any
  time before the app starts. Order does not matter: aiohttp resolves the most specific path first
  and the proxy's catch-all is indexed at ``/``, so it only sees paths no other route claims; it
  answers 404 for any reserved path nobody serves, so reserved paths are never proxied. Requests to
  reserved routes pass through the same middleware (request id, 400 on ambiguous targets, log line).
- Live configuration: ``app[CONFIG]`` is a ConfigHolder; ``holder.swap(settings)`` replaces the
  settings and route table for every request that starts afterwards (a request keeps the snapshot
  it started with, as ``request[LIVE]``). Socket-level limits (listeners, header limits, timeouts of
  the HTTP front) take effect only on restart. To reload something else on SIGHUP (the policy),
  append ``async def hook(settings) -> None`` to ``app[RELOAD_HOOKS]``; hooks run after the new
  configuration is in force and handle (log, count) their own failures; one that raises is logged as
  ``config.reload_hook_failed`` and does not undo the configuration swap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.handlers import Gate, OpenGate, Readiness, handle_proxied, healthz, readyz
from gateway.keys import CLOCK, CONFIG, GATE, METRICS, READINESS, RELOAD_HOOKS, UPSTREAM_SESSION
from gateway.metrics import Metrics
from gateway.middleware import add_response_headers, request_context
from gateway.proxy import peer_is_trusted
from gateway.routing import RouteTable
from gateway.settings import ServerSettings, Settings

Clock = Callable[[], datetime]
ReloadHook = Callable[[Settings], Awaitable[None]]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """One consistent configuration: settings, the route table built from them, trusted networks."""

    settings: Settings
    routes: RouteTable
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    loaded_at: datetime

    @classmethod
    def build(cls, settings: Settings, *, now: datetime) -> LiveConfig:
        """Precompute everything a request needs from the settings."""
        routes = RouteTable.from_settings(settings.routes, default_max_body_bytes=settings.server.default_max_body_bytes)
        return cls(settings=settings, routes=routes, trusted=settings.server.trusted_networks(), loaded_at=now)

    def trusts(self, remote: str | None) -> bool:
        """True when the peer is a configured trusted proxy."""
        return peer_is_trusted(remote, self.trusted)


class ConfigHolder:
    """The one swappable slot holding the live configuration; read once per request."""

    __slots__ = ("current",)

    def __init__(self, live: LiveConfig) -> None:
        self.current = live

    def swap(self, settings: Settings, *, now: datetime) -> LiveConfig:
        """Make ``settings`` the configuration for every request that starts from now on."""
        live = LiveConfig.build(settings, now=now)
        self.current = live  # INVARIANT: a single reference assignment; requests never see a mix
        return live


def handler_kwargs(server: ServerSettings) -> dict[str, Any]:
    """aiohttp RequestHandler arguments: the limits of the HTTP front; bodies pass through as sent."""
    return {
        "auto_decompress": False,  # Content-Encoding of request bodies is the upstream's business
        "max_line_size": server.max_header_bytes,
        "max_field_size": server.max_header_bytes,
        "max_headers": server.max_header_count,
        "keepalive_timeout": server.keepalive_timeout_s,
    }


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    """The one pooled upstream client: no cookies, no decompression, no redirects, no env proxies."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )
    app[UPSTREAM_SESSION] = session
    try:
        yield
    finally:
        await session.close()


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    metrics: Metrics | None = None,
    gate: Gate | None = None,
) -> web.Application:
    """Build the Gatehouse application for ``settings`` (see the module docstring for the seams)."""
    app = web.Application(
        middlewares=[request_context],
        handler_args=handler_kwargs(settings.server),
    )
    app[CLOCK] = clock
    app[METRICS] = metrics if metrics is not None else Metrics(CollectorRegistry())
    app[CONFIG] = ConfigHolder(LiveConfig.build(settings, now=clock()))
    app[GATE] = gate if gate is not None else OpenGate()
    readiness = Readiness()
    readiness.add("config", lambda: True)
    app[READINESS] = readiness
    app[RELOAD_HOOKS] = []
    app.cleanup_ctx.append(upstream_session)
    app.on_response_prepare.append(add_response_headers)
    app.router.add_get("/.gatehouse/healthz", healthz, allow_head=True)
    app.router.add_get("/.gatehouse/readyz", readyz, allow_head=True)
    app.router.add_route("*", "/{tail:.*}", handle_proxied)
    return app


__all__ = ["Clock", "ConfigHolder", "LiveConfig", "ReloadHook", "create_app", "handler_kwargs", "upstream_session", "utc_now"]
