"""The aiohttp application: wires settings, metrics, the gate, middlewares, resources and routes.

Owns: create_app, wire_gatehouse, the cleanup contexts that wire the parts together (Clock/utc_now live in
gateway.config.clock, LiveConfig/ConfigHolder/ReloadHook in gateway.proxy.live; re-exported here).
Must not import: gateway.serve, cli (the app knows nothing about sockets, signals or files).

Seams for the rest of the gateway:

- ``create_app(settings, *, clock=utc_now, metrics=None, gate=None)``; ``app[GATE]`` may also be
  replaced before the app starts. The gate (``gateway.gate.admission.Gate``) is called for every routed,
  non-reserved request and returns an ``Admission``.
- Readiness: ``app[READINESS].add("store", check)``; a check is a cheap sync or async callable
  returning bool. ``config`` is registered here. Register a placeholder (``lambda: False``) at wiring
  time for anything that must be loaded before traffic, and replace it when it is.
- Reserved routes: mount handlers under ``/.gatehouse/`` or ``/.well-known/gatehouse/`` with plain
  ``app.router.add_get("/.gatehouse/callback", handler)`` (or ``add_subapp`` for a whole area), any
  time before the app starts. The proxy (``gateway.proxy``) gives aiohttp only requests under the
  reserved prefixes; aiohttp's catch-all (``not_served``) answers 404 for a reserved path nobody
  serves. Requests to reserved routes pass through the middleware (request id, 400 on ambiguous
  targets, log line), and aiohttp closes the connection after answering each.
- Live configuration: ``app[CONFIG]`` is a ConfigHolder; ``holder.swap(settings)`` replaces the
  settings and route table for every request that starts afterwards (a request keeps the snapshot
  it started with, as ``request[LIVE]``). Socket-level limits (listeners, header limits, timeouts of
  the HTTP front) take effect only on restart. To reload something else on SIGHUP (the policy),
  append ``async def hook(settings) -> None`` to ``app[RELOAD_HOOKS]``; hooks run after the new
  configuration is in force and handle (log, count) their own failures; one that raises is logged as
  ``config.reload_hook_failed`` and does not undo the configuration swap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from breakglass import BreakglassService
from gateway.identity.device_ca import DeviceCA, DeviceCaError
from gateway.web.breakglass import BreakglassWeb, add_breakglass_routes, breakglass_maintenance_ctx
from gateway.web.enroll import add_enroll_routes
from gateway.errors import ConfigError, Problem, RouteNotFound
from gateway.gate.admission import Gate
from gateway.web.health import Readiness, healthz, readyz_handler
from gateway.identity import add_identity_routes, identity_cleanup_ctx
from gateway.proxy.record import RequestRecorder
from gateway.ingest.connectors import connectors_ctx
from gateway.ingest.http import add_ingest_routes, ingest_background
from gateway.web.owners import add_owner_routes
from gateway.keys import (
    ENROLLED_CERTIFICATES,
    BREAKGLASS, CLOCK, COMPLIANCE_RECORDER, CONFIG, DEVICE, DEVICE_CA, GATE, IDENTITY, INGEST_SETTINGS, LEDGER, METRICS, POLICY, READINESS,
    RECORDER, RELOAD_HOOKS, SNAPSHOT_CACHE, STORE, WEBHOOK,
)
from gateway.gate.ledger import AccessLedger, ledger_ctx
from gateway.config.policy_file import PolicyHolder, route_tier_problems
from gateway.gate.policy_gate import PolicyGate
from gateway.web.gate_pages import GatePages, reserved_identity
from gateway.web.portal import add_portal_routes
from gateway.store.snapshots import SnapshotCache
from gateway.store import open_store
from gateway.store.base import ChangeNotice
from gateway.web.webhook import WebhookNotifier, webhook_ctx
from policy_engine import Decision, DeviceSnapshot
from gateway.metrics import Metrics
from gateway.web.middleware import add_response_headers, request_context, request_context_with
from gateway.config.clock import Clock, utc_now
from gateway.proxy.live import ConfigHolder, LiveConfig, ReloadHook
from gateway.config.settings import ServerSettings, Settings

STORE_READY_TIMEOUT_S = 0.5
"""How long readiness waits for the store's health check: under the 1 s a probe usually allows."""
_FEED_RETRY_MIN_S = 0.25
_FEED_RETRY_MAX_S = 5.0


def handler_kwargs(server: ServerSettings) -> dict[str, Any]:
    """aiohttp RequestHandler arguments: the limits of the HTTP front; bodies pass through as sent."""
    return {
        "auto_decompress": False,  # Content-Encoding of request bodies is the upstream's business
        "max_line_size": server.max_header_bytes,
        "max_field_size": server.max_header_bytes,
        "max_headers": server.max_header_count,
        "keepalive_timeout": server.keepalive_timeout_s,
    }


async def not_served(request: web.Request) -> web.StreamResponse:
    """aiohttp's catch-all: a reserved path no endpoint serves is 404, and it is never proxied (only the proxy proxies).

    Raises:
        RouteNotFound: always.
    """
    raise RouteNotFound(f"`{request.path}` is reserved for Gatehouse and nothing is served there")


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    metrics: Metrics | None = None,
    gate: Gate | None = None,
) -> web.Application:
    """Build the Gatehouse application for ``settings`` (see the module docstring for the seams).

    Without ``gate`` this is the full Gatehouse: store, snapshot cache, policy, identity, ingest,
    break-glass and the policy gate, all wired from ``settings``. Passing a gate (``OpenGate()`` in
    proxy-only tests) builds the bare proxy around it instead.

    Raises:
        ConfigError: the full Gatehouse is asked for but the policy or identity is missing or broken.
    """
    full = gate is None
    app = web.Application(
        middlewares=[request_context_with(reserved_identity)] if full else [request_context],
        handler_args=handler_kwargs(settings.server),
    )
    app[CLOCK] = clock
    app[METRICS] = metrics if metrics is not None else Metrics(CollectorRegistry())
    app[RECORDER] = RequestRecorder(app[METRICS])
    app[CONFIG] = ConfigHolder(LiveConfig.build(settings, now=clock()))
    readiness = Readiness()
    readiness.add("config", lambda: True)
    app[READINESS] = readiness
    app[RELOAD_HOOKS] = []
    app.on_response_prepare.append(add_response_headers)
    app.router.add_get("/.gatehouse/healthz", healthz, allow_head=True)
    app.router.add_get("/.gatehouse/readyz", readyz_handler(readiness), allow_head=True)
    if gate is None:
        app[GATE] = wire_gatehouse(app, settings)
    else:
        app[GATE] = gate
    app.router.add_route("*", "/{tail:.*}", not_served)
    return app


def wire_gatehouse(app: web.Application, settings: Settings) -> Gate:
    """Install every part of a full Gatehouse on ``app``; returns its gate.

    Raises:
        ConfigError: the policy file or the identity settings are missing or broken.
    """
    problems = []
    if settings.policy is None:
        problems.append(Problem("policy", "is required: name the policy file that decides requests, e.g. `policy: policy.yaml`"))
    if settings.identity is None:
        problems.append(Problem("identity", "is required: say how users prove who they are (see the README's identity section)"))
    if problems:
        raise ConfigError(settings.source, tuple(problems))
    assert settings.policy is not None and settings.identity is not None  # narrowed by the check above
    metrics = app[METRICS]
    holder = PolicyHolder.load(settings.policy, metrics=metrics)
    tier_problems = route_tier_problems(settings.routes, holder.current)
    if tier_problems:
        raise ConfigError(settings.source, tuple(tier_problems))
    app[POLICY] = holder
    app[INGEST_SETTINGS] = settings.ingest
    app[COMPLIANCE_RECORDER] = ComplianceFromPolicy(holder)

    async def reload_policy(new: Settings) -> None:
        if new.policy is not None:
            await asyncio.to_thread(holder.reload, new.policy)

    app[RELOAD_HOOKS].append(reload_policy)
    app[READINESS].add("policy", lambda: holder.current is not None)
    if settings.identity.device.ca is not None:
        try:
            app[DEVICE_CA] = DeviceCA.from_settings(settings.identity.device.ca, now=app[CLOCK]())
        except DeviceCaError as exc:
            raise ConfigError(settings.source, (Problem("identity.device.ca", str(exc)),)) from None
    app.cleanup_ctx.append(identity_cleanup_ctx(settings.identity, clock=app[CLOCK], metrics=metrics))
    app.cleanup_ctx.append(_store_ctx(settings))
    app.cleanup_ctx.append(_revocations_ctx)
    ledger: AccessLedger | None = None
    if settings.evidence.ledger_enabled:
        ledger = app[LEDGER] = AccessLedger(max_pending_rows=settings.evidence.ledger_max_pending_rows, metrics=metrics)
        # after the store's: its last flush runs before the store closes
        app.cleanup_ctx.append(ledger_ctx(settings.evidence, ledger, store=lambda: app[STORE], clock=app[CLOCK]))
    else:
        structlog.get_logger("gateway.app").warning("ledger.disabled", detail="evidence.ledger_enabled is false: no request is counted in the access ledger (for benchmarking only)")
    app.cleanup_ctx.append(ingest_background)
    app.cleanup_ctx.append(connectors_ctx)
    app.cleanup_ctx.append(_breakglass_ctx(settings))
    app.cleanup_ctx.append(breakglass_maintenance_ctx)
    notifier = WebhookNotifier.from_settings(settings.breakglass.webhook) if settings.breakglass.webhook is not None else None
    if notifier is not None:
        app[WEBHOOK] = notifier
    app.cleanup_ctx.append(webhook_ctx(notifier))
    app.cleanup_ctx.append(_change_feed_ctx)
    add_identity_routes(app)
    add_ingest_routes(app)
    add_owner_routes(app)
    add_portal_routes(app)
    add_enroll_routes(app)
    add_breakglass_routes(app, BreakglassWeb.from_settings(settings.breakglass, policies=lambda: holder.current, evaluate=_device_decision(holder)))
    return PolicyGate(holder, answers=GatePages(), ledger=ledger)


def _device_decision(holder: PolicyHolder) -> Callable[[web.Request, str | None, str], Decision]:
    """The requesting device's decision for a tier now: the failing checks a break-glass request records."""

    def evaluate(request: web.Request, route_id: str | None, tier: str) -> Decision:
        device = request.get(DEVICE)
        cache = request.config_dict[SNAPSHOT_CACHE]
        snapshot = cache.get(device.serial) if device is not None else None
        failing = cache.failing_since(device.serial) if snapshot is not None and device is not None else None
        return holder.current.evaluate(snapshot, tier, now=request.config_dict[CLOCK](), failing_since=failing)

    return evaluate


class ComplianceFromPolicy:
    """Pass/fail of every check of the policy in force, for each newly stored snapshot (history, grace)."""

    def __init__(self, holder: PolicyHolder) -> None:
        self._holder = holder

    def __call__(self, snapshot: DeviceSnapshot) -> Mapping[str, bool] | None:
        policies = self._holder.current
        failing = policies.failing_check_names(snapshot)
        return {name: name not in failing for name in policies.checks}


def _store_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(settings.store.reveal())
        app[STORE] = store
        app[SNAPSHOT_CACHE] = SnapshotCache(store, metrics=app[METRICS], refresh_interval_s=settings.ingest.cache_refresh_s,
                                            on_replaced=app[POLICY].memo.forget)
        cache = app[SNAPSHOT_CACHE]
        app[ENROLLED_CERTIFICATES] = cache  # the status page lists a user's enrolled laptops from memory
        app[READINESS].add("snapshots", lambda: cache.loaded)
        # The store degrades rather than fails readiness: with the cache loaded, requests are still
        # decided correctly from memory; taking every replica out of the load balancer during a
        # database outage would turn it into a full outage. `/readyz?strict=1` counts it as not ready.
        # INVARIANT: bounded well under a probe's timeout, so a silent database reads as failing, never a hang.
        app[READINESS].add("store", lambda: store.health(timeout_s=STORE_READY_TIMEOUT_S), degrades=True)
        try:
            yield
        finally:
            await store.close()

    return ctx


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Device certificate revocations, as the snapshot cache holds them, checked by identity on every request."""
    app[IDENTITY].revoked_at = app[SNAPSHOT_CACHE].revoked_at
    yield


def _breakglass_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        sink = await app[STORE].audit_sink()  # closed with the store, whose context outlives this one
        app[BREAKGLASS] = await BreakglassService.open(sink, config=settings.breakglass.to_config())
        yield

    return ctx


async def _change_feed_ctx(app: web.Application) -> AsyncIterator[None]:
    """Follow other processes' writes at once where the store announces them (PostgreSQL NOTIFY).

    One follower per kind of change (snapshots, the owner inventory and device certificates; the audit log) catches up whenever a notice arrives;
    notices arriving while it works are folded into one more catch-up, so a burst of writes costs a
    few reads, not one per write. A ``resync`` notice (the listener (re)connected, for example after
    a database outage) wakes both. A failed catch-up is retried with backoff until it succeeds or
    newer notices arrive; the periodic cache refresh and break-glass maintenance remain the safety net.
    A ``local`` notice (SQLite: this process's own write, already applied here) wakes nobody.
    """
    cache = app[SNAPSHOT_CACHE]
    service = app[BREAKGLASS]
    log = structlog.get_logger("gateway.app")
    wake = {"snapshot": asyncio.Event(), "audit": asyncio.Event()}

    async def follow(kind: str, refresh: Callable[[], Awaitable[object]]) -> None:
        event = wake[kind]
        delay = _FEED_RETRY_MIN_S
        while True:
            await event.wait()
            event.clear()
            try:
                await refresh()
            except Exception as exc:  # never let the follower die; retry unless a newer notice does
                log.warning("change_feed.refresh_failed", kind=kind, error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: on 3.11 it can swallow a cancel
                        await event.wait()
                event.set()
                delay = min(delay * 2, _FEED_RETRY_MAX_S)
            else:
                delay = _FEED_RETRY_MIN_S

    def on_notice(notice: ChangeNotice) -> None:
        if notice.local:
            return
        kind = str(notice.kind.value)
        kind = "snapshot" if kind in ("owners", "certificates") else kind  # the cache's refresh follows owners and certificates too
        for name, event in wake.items():
            if kind in (name, "resync"):
                event.set()

    tasks = [
        asyncio.create_task(follow("snapshot", cache.refresh), name="change-feed-snapshots"),
        asyncio.create_task(follow("audit", service.refresh), name="change-feed-audit"),
    ]
    unsubscribe = app[STORE].subscribe(on_notice)
    try:
        yield
    finally:
        unsubscribe()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=_FEED_RETRY_MAX_S)  # bounded: shutdown never hangs on a follower


__all__ = ["Clock", "ConfigHolder", "LiveConfig", "ReloadHook", "create_app", "handler_kwargs", "not_served", "utc_now"]
