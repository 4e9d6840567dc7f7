"""The access decision for one proxied request: identity, device, snapshot, policy, break-glass.

Owns: decide() and the GateOutcome it returns, the gate-level reason codes, owner binding
(owner_refusal, the one owner check of the product).
Must not import: aiohttp (the proxy and web turn outcomes into responses), the store (the request path
reads snapshots from memory only).

Order: the policy decides for the route's tier; a denied request is then let through by an active
break-glass grant for that user, device and route; a monitor-mode route lets any denial through
as a would-deny. Break-glass never waives identity: without a verified user there is no decision
at all (the caller answers 401), and without an identified device there is no grant to find.

Identity-only: a request naming no verified device, to a route whose tier says ``device: optional``,
is allowed on the user's identity alone, with reason ``identity-only`` (the engine's
``evaluate_without_device``); a request that names a device is decided as at any tier. A route with
``require_owner`` always needs a device (there is no owner to check without one): its requests
without a device are ``device-unknown`` whatever the tier says.

Owner binding (a route with ``require_owner``) is checked whatever the policy says, and no
break-glass grant lifts it: a device with no recorded owners is ``device-unowned``, one recorded
to other users ``device-not-owned``. The caller passes the owners (``SnapshotCache.owners_of``:
the operator's owner inventory, or the snapshot's reported owners only where the operator trusts
them); none passed means nobody owns the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Hashable, Iterable, Mapping, Protocol

from breakglass import Grant
from gateway.identity.model import DeviceId, Identity
from policy_engine import CompiledPolicySet, Decision, DeviceSnapshot, Reason


class Verdict(StrEnum):
    """What happens to the request."""

    ALLOW = "allow"
    DENY = "deny"
    MONITOR = "would-deny"
    """Denied by policy, let through because the route is in monitor mode."""
    BREAK_GLASS = "break-glass"
    """Denied by policy, let through by an active break-glass grant."""


DEVICE_NOT_OWNED = Reason.DEVICE_NOT_OWNED.value
"""The route requires the user to be one of the device's listed owners, and this user is not."""
DEVICE_UNOWNED = Reason.DEVICE_UNOWNED.value
"""The route requires the user to be one of the device's listed owners, and the device has none."""
OWNER_REASONS = frozenset({DEVICE_NOT_OWNED, DEVICE_UNOWNED})
"""Owner-binding denials: registering the device to the user lifts them, a break-glass grant never does."""


class RouteView(Protocol):
    """What the gate reads of a route."""

    @property
    def id(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def require_owner(self) -> bool: ...


class GrantLookup(Protocol):
    """Active break-glass grants, looked up in memory (BreakglassService implements it)."""

    def active_for(self, user: str, device_serial: str, route_id: str, tier: str, *, now: datetime) -> Grant | None: ...


class DecisionCache(Protocol):
    """Memoised policy decisions per device and generation (policy_engine's DecisionMemo implements it)."""

    def get(self, device: Hashable, generation: Hashable, key: Hashable, *, now: datetime) -> Decision | None: ...
    def put(self, device: Hashable, generation: Hashable, key: Hashable, decision: Decision) -> None: ...


@dataclass(frozen=True, slots=True)
class GateOutcome:
    """The gate's answer: let through or not, why, and what the decision was."""

    verdict: Verdict
    reason: str
    """``ok`` (or ``identity-only``) when allowed; otherwise the policy's reason code or a gate-level one."""
    decision: Decision
    grant: Grant | None = None

    @property
    def proxied(self) -> bool:
        return self.verdict is not Verdict.DENY


def decide(
    identity: Identity,
    device: DeviceId | None,
    snapshot: DeviceSnapshot | None,
    route: RouteView,
    *,
    policies: CompiledPolicySet,
    now: datetime,
    failing_since: Mapping[str, datetime] | None = None,
    grants: GrantLookup | None = None,
    memo: DecisionCache | None = None,
    owners: Iterable[str] = (),
) -> GateOutcome:
    """Decide one request; never raises for a policy or grant problem (it denies instead)."""
    decision = _policy_decision(
        device, snapshot, route.tier, policies=policies, now=now, failing_since=failing_since, memo=memo,
        identity_only=not route.require_owner,
    )
    if route.require_owner and snapshot is not None:
        refusal = owner_refusal(identity, owners)
        if refusal is not None:  # the device's health is not this user's to fix: no findings shown
            decision = dataclasses.replace(decision, allowed=False, reason=refusal, failing=(), in_grace=(), nudges=())
    reason = decision.reason.value
    if decision.allowed:  # `ok`, or `identity-only` from a device-optional tier
        return GateOutcome(Verdict.ALLOW, reason, decision)
    if grants is not None and device is not None and reason not in OWNER_REASONS:
        grant = grants.active_for(identity.subject, device.serial, route.id, route.tier, now=now)
        if grant is not None:
            return GateOutcome(Verdict.BREAK_GLASS, reason, decision, grant)
    if route.mode == "monitor":
        return GateOutcome(Verdict.MONITOR, reason, decision)
    return GateOutcome(Verdict.DENY, reason, decision)


def owner_refusal(identity: Identity, owners: Iterable[str]) -> Reason | None:
    """Why ``identity`` may not use a device with these recorded owners, or None when it is one of them.

    Owners are email addresses (the owner inventory's, or trusted reported ones); the user matches one
    by email, case-insensitively, never by subject. No owners matches nobody.
    """
    email = identity.email.casefold()
    listed = False
    for owner in owners:
        listed = True
        if owner.casefold() == email:
            return None
    return Reason.DEVICE_NOT_OWNED if listed else Reason.DEVICE_UNOWNED


def _policy_decision(
    device: DeviceId | None,
    snapshot: DeviceSnapshot | None,
    tier: str,
    *,
    policies: CompiledPolicySet,
    now: datetime,
    failing_since: Mapping[str, datetime] | None,
    memo: DecisionCache | None,
    identity_only: bool,
) -> Decision:
    if device is None and identity_only:
        return policies.evaluate_without_device(tier, now=now)
    if device is None or snapshot is None:
        return policies.evaluate(None, tier, now=now)
    if memo is None:
        return policies.evaluate(snapshot, tier, now=now, failing_since=failing_since)
    # INVARIANT: a device's failing-since history only changes when a new snapshot (with a new
    # collected_at) replaces the old one, so device, generation and tier cover every input of the
    # decision but `now`, which the memo checks against the decision's valid_until.
    generation = (snapshot.collected_at, policies.version)
    cached = memo.get(device.serial, generation, tier, now=now)
    if cached is not None:
        return cached
    decision = policies.evaluate(snapshot, tier, now=now, failing_since=failing_since)
    memo.put(device.serial, generation, tier, decision)
    return decision
