"""What a grant change tells besides the audit log: the metrics, the webhook, a log-safe reason.

Owns: count, notify, short, set_active_gauge, LOG_REASON_CHARS.
Must not import: the gateway.gate.admission of this package.

Reasons are not secrets but are free text: logs carry the first 80 characters (``short``); the
audit log keeps them whole.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from breakglass import BreakglassService, Grant, GrantFilter, GrantStatus
from gateway.keys import METRICS, WEBHOOK
from gateway.metrics import Metrics
from gateway.web.webhook import describe

LOG_REASON_CHARS = 80


def set_active_gauge(metrics: Metrics | None, service: BreakglassService, now: datetime) -> None:
    """The active-grants gauge, and the age of the oldest grant that was granted but is not reviewed yet."""
    if metrics is not None:
        metrics.breakglass_active.set(len(service.list_grants(GrantFilter(status=GrantStatus.ACTIVE), now=now)))
        began = [g.starts_at for g in service.list_grants(GrantFilter(unreviewed_only=True), now=now) if g.starts_at is not None]
        metrics.breakglass_oldest_unreviewed.set(max(0.0, (now - min(began)).total_seconds()) if began else 0.0)


def short(text: str) -> str:
    """A free-text reason for a log line: one line, at most LOG_REASON_CHARS characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= LOG_REASON_CHARS else flat[: LOG_REASON_CHARS - 1] + "…"


def notify(request: web.Request, kind: str, grant: Grant, *, actor: str = "", note: str = "") -> None:
    """Queue a webhook message about ``grant`` when notifications are configured."""
    notifier = request.config_dict.get(WEBHOOK)
    if notifier is not None:
        notifier.notify(describe(kind, grant, actor=actor, note=note, public_url=notifier.public_url))


def count(request: web.Request, tier: str, outcome: str) -> None:
    """Count one grant outcome for ``tier`` in ``gatehouse_breakglass_grants_total``."""
    metrics = request.config_dict.get(METRICS)
    if metrics is not None:
        metrics.breakglass_grants.labels(tier=tier, outcome=outcome).inc()
