"""Identity values handed from the identity package to the rest of the gateway.

Owns: Identity, DeviceId, PostureSummary.
Must not import: aiohttp, pyjwt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

UserSourceKind = Literal["bearer", "header", "cookie", "session"]
DeviceSourceKind = Literal["mtls", "assertion", "claim", "header"]


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified user: only the claims the gateway needs, already checked for emptiness and control characters."""

    subject: str
    email: str
    groups: tuple[str, ...]
    issuer: str
    source: UserSourceKind
    expires_at: datetime
    device_serial_claim: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceId:
    """A hardware serial from a verified source, and which source proved it."""

    serial: str
    source: DeviceSourceKind


@dataclass(frozen=True, slots=True)
class PostureSummary:
    """What the caller decided about the device, passed to upstreams inside the signed assertion."""

    tier: str
    decision: str
    """Closed-set word from the gate, e.g. `allow`, `deny`, `monitor`."""
    snapshot_age_s: int | None
    failed_checks: tuple[str, ...] = ()
    break_glass: bool = False
