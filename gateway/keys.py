"""Every typed key stored on the aiohttp Application or Request.

Owns: AppKey / RequestKey constants only. Append your own keys at the end, under a comment naming
the part of the gateway that owns them.
Must not import: anything at run time except aiohttp. The value types are imported for type checking
only, each from a module that never imports this one, directly or through others (no cycle, not even a
type-only one: tests/test_layering.py checks it); a module that reads keys keeps its keys' value types
in a module of its own (``gateway.proxy.live``, ``gateway.web.health``, ``gateway.ingest.runtime``...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.config.clock import Clock
    from gateway.gate.admission import Gate
    from gateway.web.health import Readiness
    from gateway.proxy.live import ConfigHolder, LiveConfig, ReloadHook
    from gateway.proxy.record import RequestRecorder
    from gateway.metrics import Metrics
    from gateway.proxy.rules import Exchange
    from gateway.proxy.routing import Route
    from gateway.proxy.target import Target

# --- Request path and server (app.py, clock.py, live.py, middleware.py, handlers.py, health.py, proxy.py) ---
CONFIG: web.AppKey[ConfigHolder] = web.AppKey("config")
"""The live settings and route table; swapped as a whole on reload, read once per request."""
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
RECORDER: web.AppKey[RequestRecorder] = web.AppKey("recorder")
"""Records every finished request (log line, metrics): the proxy's and Gatehouse's own endpoints' alike."""
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
GATE: web.AppKey[Gate] = web.AppKey("gate")
"""Identity + policy seam called for every proxied request after routing."""
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
"""Named readiness checks behind /.gatehouse/readyz; add yours with ``app[READINESS].add(name, check)``."""

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
TARGET: web.RequestKey[Target] = web.RequestKey("target")
"""The canonical request target; set for every request that passed validation."""
ROUTE: web.RequestKey[Route] = web.RequestKey("route")
EXCHANGE: web.RequestKey[Exchange] = web.RequestKey("exchange")
"""Per-request accounting (bytes, upstream status) written by the proxy, logged by the middleware."""
LIVE: web.RequestKey[LiveConfig] = web.RequestKey("live")
"""The configuration snapshot this request uses from start to end (taken once, in the middleware)."""
RELOAD_HOOKS: web.AppKey[list[ReloadHook]] = web.AppKey("reload_hooks")
"""Async callables run with the new Settings after a SIGHUP swapped the configuration in (e.g. reload the policy)."""

# --- Identity (gateway/identity/) ---
if TYPE_CHECKING:
    from gateway.identity.resolver import IdentityResolver

IDENTITY: web.AppKey[IdentityResolver] = web.AppKey("identity")
"""Verified user and device for each request, upstream identity headers; exists between startup and cleanup."""

# --- Snapshots and ingest (store/, snapshots.py, ingest/) ---
if TYPE_CHECKING:
    from gateway.config.ingest import IngestSettings
    from gateway.ingest.runtime import IngestRuntime
    from gateway.ingest.pipeline import ComplianceRecorder
    from gateway.store.snapshots import SnapshotCache
    from gateway.store.base import Store

STORE: web.AppKey[Store] = web.AppKey("store")
"""The durable store (snapshots, enrollments, history); opened and closed by a cleanup_ctx in app.py."""
SNAPSHOT_CACHE: web.AppKey[SnapshotCache] = web.AppKey("snapshot_cache")
"""Every device's latest snapshot in memory; the request path reads it with ``get(serial)``."""
INGEST_SETTINGS: web.AppKey[IngestSettings] = web.AppKey("ingest_settings")
COMPLIANCE_RECORDER: web.AppKey[ComplianceRecorder] = web.AppKey("compliance_recorder")
"""Optional: per-check pass/fail of each newly stored snapshot, for history and failing-since."""
INGEST_RUNTIME: web.AppKey[IngestRuntime] = web.AppKey("ingest_runtime")
"""Set by ``add_ingest_routes``: per-device locks of the osquery handlers."""

# --- The gate (gate.py, the lead's wiring in app.py) ---
if TYPE_CHECKING:
    from breakglass import BreakglassService
    from gateway.gate.decide import GateOutcome
    from gateway.identity.model import DeviceId, Identity

BREAKGLASS: web.AppKey[BreakglassService] = web.AppKey("breakglass")
"""Break-glass grants and their audit log; exists between startup and cleanup."""
USER: web.RequestKey[Identity] = web.RequestKey("user")
"""The verified user of this request; set once identity is verified (absent otherwise)."""
DEVICE: web.RequestKey[DeviceId] = web.RequestKey("device")
"""The verified device of this request; absent when no verified source named one."""
OUTCOME: web.RequestKey[GateOutcome] = web.RequestKey("outcome")
"""The gate's decision for this request, once made."""

# --- Break-glass pages and API (web/breakglass/, csrf.py, webhook.py) ---
if TYPE_CHECKING:
    from gateway.web.breakglass.context import BreakglassWeb
    from gateway.web.csrf import CsrfProtector
    from gateway.web.webhook import WebhookNotifier

BREAKGLASS_WEB: web.AppKey[BreakglassWeb] = web.AppKey("breakglass_web")
"""Settings, policy source and device re-evaluation used by the break-glass handlers; set by ``add_breakglass_routes``."""
CSRF: web.AppKey[CsrfProtector] = web.AppKey("csrf")
"""Issues and checks the CSRF tokens of Gatehouse's own forms (``csrf_token_for(request)``)."""
WEBHOOK: web.AppKey[WebhookNotifier] = web.AppKey("breakglass_webhook")
"""Optional: break-glass notifications; started and stopped by ``webhook_ctx``."""
if TYPE_CHECKING:
    from gateway.config.policy_file import PolicyHolder

POLICY: web.AppKey[PolicyHolder] = web.AppKey("policy")
"""The compiled policy in force (``.current``) and the decision memo; reloaded on SIGHUP."""

# --- Access ledger (ledger.py) ---
if TYPE_CHECKING:
    from gateway.gate.ledger import AccessLedger

LEDGER: web.AppKey[AccessLedger] = web.AppKey("ledger")
"""Every decision counted into hourly rows, written to the store in the background; set by a full Gatehouse."""

# --- Pull connectors (ingest/connectors/runtime.py) ---
if TYPE_CHECKING:
    from gateway.ingest.connectors.base import ConnectorRunner

CONNECTORS: web.AppKey[dict[str, ConnectorRunner]] = web.AppKey("connectors")
"""The runner of each configured connector, by name; set by ``connectors_ctx`` (empty without connectors)."""

# --- Device certificate authority (enroll/ca.py) ---
if TYPE_CHECKING:
    from gateway.identity.device_ca import DeviceCA

DEVICE_CA: web.AppKey[DeviceCA] = web.AppKey("device_ca")
"""Gatehouse's device CA; present only when ``identity.device.ca`` is configured (enrollment enabled)."""

# --- Laptop enrollment (gateway/enroll/) ---
if TYPE_CHECKING:
    from gateway.web.enroll_limits import EnrollRuntime
    from gateway.ingest.runtime import AnswerHandler

ENROLL_RUNTIME: web.AppKey[EnrollRuntime] = web.AppKey("enroll_runtime")
"""Per-process enrollment state (the session rate limit); set by ``add_enroll_routes``."""
OSQUERY_ANSWERS: web.AppKey[dict[str, AnswerHandler]] = web.AppKey("osquery_answers")
"""Distributed-query name prefix → handler: answers to those queries go there, never into posture facts."""

# --- Enrollment pages (portal.py, views/enroll.py, views/status.py) ---
if TYPE_CHECKING:
    from pathlib import Path

    from gateway.web.views.status import CertificateDirectory

ENROLL_CLIENT_FILE: web.AppKey[Path] = web.AppKey("enroll_client_file")
"""The one-file enrollment client served at /.gatehouse/enroll/gatehouse_enroll.py; set by ``add_portal_routes``."""
ENROLLED_CERTIFICATES: web.AppKey[CertificateDirectory] = web.AppKey("enrolled_certificates")
"""Optional: the device certificates Gatehouse issued, by owner, from memory; the status page lists them."""
