"""A tiny app with the break-glass routes for tests: fake identity from test headers, a fixed clock.

The real USER and DEVICE request keys are set by the identity middleware the lead wires in
``gateway/app.py``; here ``identity_from_test_headers`` reads ``X-Test-User: alice;group1,group2``
and ``X-Test-Device: SERIAL`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from breakglass import AuditEntry, AuditSink, BreakglassService, ChainHead, InMemoryAuditSink
from gateway.config.breakglass import BreakglassSettings
from gateway.web.breakglass import BreakglassWeb, DecisionSource, add_breakglass_routes
from gateway.identity.model import DeviceId, Identity
from gateway.keys import BREAKGLASS, CLOCK, DEVICE, METRICS, USER, WEBHOOK
from gateway.metrics import Metrics
from gateway.web.webhook import WebhookNotifier
from policy_engine import CompiledPolicySet
from tests.policy_engine.factories import deploy_policies

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
REASON = "paged at 3am: billing database is down, INC-4711"
ROUTES: Mapping[str, str] = {"wiki": "low", "chat": "low", "source": "medium", "prod": "high"}
"""Route id → tier, as the live configuration would say (tiers of deploy/policy.yaml)."""
APPROVER = "carol;sre-leads"
REVIEWER = "rita;security-review"
BOTH = "boss;sre-leads,security-review"
CLIENT = {"X-Gatehouse-Client": "tests"}
API = "/.gatehouse/api/v1/break-glass"

_POLICIES: list[CompiledPolicySet] = []


def policies() -> CompiledPolicySet:
    """deploy/policy.yaml: low allows 8 h at once, medium needs approval (4 h), high never."""
    if not _POLICIES:
        _POLICIES.append(deploy_policies())
    return _POLICIES[0]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_settings(**overrides: object) -> BreakglassSettings:
    """Settings with approver/reviewer groups, one route set and a fixed CSRF secret."""
    raw: dict[str, object] = {
        "approver_groups": ["sre-leads"],
        "reviewer_groups": ["security-review"],
        "route_sets": {"collab": ["wiki", "chat"], "eng": ["wiki", "source"]},
        "csrf_secret": {"value": "test-csrf-secret"},
    }
    raw.update(overrides)
    return BreakglassSettings.model_validate(raw)


def identity(spec: str) -> Identity:
    """``alice;g1,g2`` → a verified Identity for alice in groups g1 and g2."""
    subject, _, groups = spec.partition(";")
    return Identity(subject=subject, email=f"{subject}@example.com", groups=tuple(g for g in groups.split(",") if g),
                    issuer="https://idp.test", source="header", expires_at=NOW + timedelta(days=30))


@web.middleware
async def identity_from_test_headers(request: web.Request, handler: Callable) -> web.StreamResponse:  # type: ignore[type-arg]
    """Test-only stand-in for the identity middleware: USER and DEVICE from test headers."""
    user = request.headers.get("X-Test-User")
    if user:
        request[USER] = identity(user)
    serial = request.headers.get("X-Test-Device")
    if serial:
        request[DEVICE] = DeviceId(serial=serial, source="header")
    return await handler(request)


@dataclass
class Harness:
    """The app under test and what it was built from."""

    app: web.Application
    service: BreakglassService
    sink: AuditSink
    clock: FakeClock
    metrics: Metrics
    context: BreakglassWeb

    def token(self, user: str) -> str:
        """A CSRF token as the pages would issue it to ``user`` (subject only)."""
        return self.context.csrf.issue(user.partition(";")[0], now=self.clock())

    def count(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def build_app(
    *,
    sink: AuditSink | None = None,
    service: BreakglassService | None = None,
    clock: FakeClock | None = None,
    settings: BreakglassSettings | None = None,
    evaluate: DecisionSource | None = None,
    notifier: WebhookNotifier | None = None,
    extra_routes: Callable[[web.Application], None] | None = None,
) -> Harness:
    """The break-glass routes on a bare app with test identity, a fake clock and fresh metrics."""
    clock = clock or FakeClock()
    settings = settings or make_settings()
    sink = sink if sink is not None else InMemoryAuditSink()
    if service is None:
        service = BreakglassService(sink, config=settings.to_config())
    metrics = Metrics(CollectorRegistry())
    app = web.Application(middlewares=[identity_from_test_headers])
    app[CLOCK] = clock
    app[METRICS] = metrics
    app[BREAKGLASS] = service
    if notifier is not None:
        app[WEBHOOK] = notifier
    context = BreakglassWeb.from_settings(settings, policies=policies, evaluate=evaluate, route_tiers=lambda: ROUTES)
    add_breakglass_routes(app, context)
    if extra_routes is not None:
        extra_routes(app)
    return Harness(app=app, service=service, sink=sink, clock=clock, metrics=metrics, context=context)


def as_user(user: str, device: str | None = "SER-A", **headers: str) -> dict[str, str]:
    """Test identity headers (plus any others)."""
    out = {"X-Test-User": user, **headers}
    if device is not None:
        out["X-Test-Device"] = device
    return out


class FailingSink:
    """An audit sink whose append always fails (the disk is full), reads work."""

    def __init__(self) -> None:
        self._inner = InMemoryAuditSink()
        self.fail = True

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        await self._inner.append(entries)

    async def entries(self, *, after_seq: int = 0) -> Sequence[AuditEntry]:
        return await self._inner.entries(after_seq=after_seq)

    async def head(self) -> ChainHead:
        return await self._inner.head()


async def ask(client: TestClient, user: str = "alice", device: str | None = "SER-A", **body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    """POST a JSON request as ``user`` on ``device``; returns status and JSON body."""
    doc = {"route": "wiki", "reason": REASON, "duration_s": 1800, **body}
    response = await client.post(API, json=doc, headers=as_user(user, device, **CLIENT))
    return response.status, await response.json(content_type=None)
