"""Break-glass values as plain data: a grant for the API, a decision's failures for the audit log.

Owns: grant_json, failing_checks_of, iso.
Must not import: aiohttp, gateway.keys (plain values in, plain data out).
"""

from __future__ import annotations

from datetime import datetime

from breakglass import BreakglassService, FailingCheck, Grant, GrantStatus
from gateway.web.breakglass.context import API_PATH, REVIEW_API_PATH
from policy_engine import Decision


def failing_checks_of(decision: Decision | None) -> tuple[FailingCheck, ...]:
    """The device's blocking failures in ``decision`` as audit values (the reason code when none is a check)."""
    if decision is None:
        return (FailingCheck("not-evaluated", "the device could not be evaluated when break-glass was requested"),)
    checks = tuple(FailingCheck(f.check, f"{f.actual}; needs {f.required}") for f in decision.failing)
    if checks or decision.allowed:
        return checks
    return (FailingCheck(decision.reason.value, decision.detail or decision.reason.value.replace("-", " ")),)


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 time, or None."""
    return value.isoformat() if value is not None else None


def grant_json(grant: Grant, *, status: GrantStatus, now: datetime, service: BreakglassService | None = None) -> dict[str, object]:
    """A grant as plain data for the API; with ``service``, also its audit events and usage."""
    remaining = (grant.expires_at - now).total_seconds() if grant.expires_at and status is GrantStatus.ACTIVE else None
    doc: dict[str, object] = {
        "id": grant.id,
        "status": status.value,
        "user": grant.user,
        "user_email": grant.user_email,
        "device_serial": grant.device_serial,
        "scope": {"tier": grant.scope.tier, "route_set": grant.scope.route_set, "routes": sorted(grant.scope.routes)},
        "reason": grant.reason,
        "duration_s": int(grant.duration.total_seconds()),
        "requested_at": iso(grant.requested_at),
        "starts_at": iso(grant.starts_at),
        "expires_at": iso(grant.expires_at),
        "expires_in_s": int(remaining) if remaining is not None else None,
        "pending_because": sorted(grant.pending_because),
        "self_granted": grant.self_granted,
        "flagged": grant.flagged,
        "approver": grant.approver,
        "failing_checks": [{"name": c.name, "detail": c.detail} for c in grant.failing_checks],
        "first_used_at": iso(grant.first_used_at),
        "ended_at": iso(grant.ended_at),
        "ended_by": grant.ended_by,
        "end_reason": grant.end_reason,
        "reviewed": grant.reviewed,
        "reviewed_by": grant.reviewed_by,
        "reviewed_at": iso(grant.reviewed_at),
        "comment": grant.comment,
        "links": {"self": f"{API_PATH}/{grant.id}", "end": f"{API_PATH}/{grant.id}/end",
                  "review": f"{REVIEW_API_PATH}/{grant.id}"},
    }
    if service is not None:
        doc["usage"] = dict(service.usage(grant.id))
        doc["events"] = [
            {"kind": e.kind.value, "at": iso(e.at), "actor": e.actor, "reason": e.reason,
             "duration_s": int(e.duration.total_seconds()) if e.duration is not None else None,
             "expires_at": iso(e.expires_at), "route_id": e.route_id, "flags": sorted(e.flags)}
            for e in service.events_for(grant.id)
        ]
    return doc
