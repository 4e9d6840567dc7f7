"""Audited, time-limited emergency access: grants, their rules, and the tamper-evident audit log.

Break-glass waives device-health checks, never identity. Everything here is pure or behind the
``AuditSink`` Protocol; ``gateway`` supplies the clock, the policy's tier rules and the store.
Must not import: gateway, policy_engine, aiohttp (stdlib and orjson only).

How the gateway uses it (a sketch)::

    service = await BreakglassService.open(store.audit, config=config)     # verifies, replays
    grant = service.active_for(user, serial, route.id, route.tier, now=now)  # every denied request
    if grant is not None:
        await service.record_use(grant.id, route_id=route.id, now=now)     # first use is audited
    grant = await service.request(GrantRequest(...), rule=tier_rule, now=now)
    await service.expire_due(now=now); await service.refresh()             # periodic task

Errors map to responses by their builtin: ``GrantRejected`` (ValueError) 400/409,
``NotAuthorised`` (PermissionError) 403, ``GrantNotFound`` (LookupError) 404,
``AuditWriteError`` (OSError) 503 "no grant was given".
"""

from __future__ import annotations

from breakglass.audit import (
    CSV_COLUMNS,
    GENESIS_HASH,
    GENESIS_HEAD,
    AuditEntry,
    AuditProblem,
    AuditSink,
    ChainHead,
    InMemoryAuditSink,
    TamperKind,
    VerifyReport,
    check_batch,
    decode_entry,
    encode_entry,
    entry_hash,
    export_entries,
    seal,
    verify,
    verify_sink,
)
from breakglass.errors import (
    AuditConflict,
    AuditIntegrityError,
    AuditWriteError,
    BreakglassError,
    GrantNotFound,
    GrantRejected,
    NotAuthorised,
)
from breakglass.grants import GrantIndex
from breakglass.model import (
    HARD_MAX_DURATION,
    AuditEvent,
    BreakglassConfig,
    EventKind,
    FailingCheck,
    Grant,
    GrantRequest,
    GrantStatus,
    Scope,
    TierMode,
    TierRule,
)
from breakglass.rules import is_active, status_at
from breakglass.service import SYSTEM_ACTOR, BreakglassService, GrantFilter, new_grant_id

__all__ = [
    "CSV_COLUMNS",
    "GENESIS_HASH",
    "GENESIS_HEAD",
    "HARD_MAX_DURATION",
    "SYSTEM_ACTOR",
    "AuditConflict",
    "AuditEntry",
    "AuditEvent",
    "AuditIntegrityError",
    "AuditProblem",
    "AuditSink",
    "AuditWriteError",
    "BreakglassConfig",
    "BreakglassError",
    "BreakglassService",
    "ChainHead",
    "EventKind",
    "FailingCheck",
    "Grant",
    "GrantFilter",
    "GrantIndex",
    "GrantNotFound",
    "GrantRejected",
    "GrantRequest",
    "GrantStatus",
    "InMemoryAuditSink",
    "NotAuthorised",
    "Scope",
    "TamperKind",
    "TierMode",
    "TierRule",
    "VerifyReport",
    "check_batch",
    "decode_entry",
    "encode_entry",
    "entry_hash",
    "export_entries",
    "is_active",
    "new_grant_id",
    "seal",
    "status_at",
    "verify",
    "verify_sink",
]
