"""The store interface: what every backend (SQLite now, PostgreSQL later) implements.

Owns: the Store Protocol and its parts (SnapshotStore, EnrollmentStore, OsqueryStateStore, LedgerStore (AccessRollup, AccessVerdict),
HistoryStore, DistributedQueryStore, OwnerStore (OwnerRecord, OwnerEdit, OwnerSource)), ConnectorStateStore (ConnectorState,
ConnectorClaim), CertificateStore (CertificateRecord, CertificateChanges), EnrollmentRequestStore (EnrollSession,
EnrollmentRequest, OsqueryConflict), RecordFeed (one page of the owner and certificate change feeds), the change
notices (ChangeKind, ChangeNotice, ChangeCallback, Subscribers), the values they exchange, StoreError.
Must not import: aiohttp, sqlite3, asyncpg, gateway.ingest (backends import this, not the reverse).

Every method is a coroutine and every write is durable (committed) when it returns: ingest
handlers answer 200 only after the store returned. Times are timezone-aware UTC datetimes;
backends keep them to the microsecond.

Change propagation: every stored snapshot gets a new value of one monotonic sequence, its
``seq``. ``changes_since(cursor)`` returns the latest snapshots whose seq is above the cursor,
in seq order, with the new cursor. A PostgreSQL backend takes the seq from a SEQUENCE in the
same transaction and may NOTIFY the new seq; listeners then call ``changes_since`` as usual,
so a missed notification costs only latency, never data.

The owner inventory (``OwnerStore``) follows the same pattern with its own sequence: every edit of a
serial's owners gets a new ``seq``, an unassigned serial keeps a row with no owners (a tombstone, so
followers learn of the removal), and ``owner_changes_since(cursor)`` returns those rows in seq order.

Pull connectors (``ConnectorStateStore``) keep one row per connector: a lease (which replica polls it,
until when) and where its sync stands (the cursor inside the current pass, the last complete pass).
A replica claims the lease before polling; one whose lease lapsed is replaced by the next claimer,
which continues from the stored cursor.

The device certificates Gatehouse's CA issued (``CertificateStore``) too: recording or revoking one
gives its row a new ``seq``, and ``certificate_changes_since(cursor)`` returns those rows in seq order.

Change notices: ``subscribe(callback)`` calls back after every committed write that other processes
hold in memory (snapshots, owners, certificates, audit entries). PostgreSQL tells every process
through NOTIFY (``local=False``, the writer included); SQLite has no channel between processes, so it
tells only the writing process (``local=True``), and the worker supervisor's link forwards those to
the sibling workers. A notice is a hint to call the feed (``changes_since`` and its kin), never data.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar, runtime_checkable

import structlog

from breakglass.audit import AuditSink
from policy_engine.model import DeviceSnapshot

_log = structlog.get_logger("gateway.store")


class StoreError(RuntimeError):
    """The store could not do what was asked (I/O error, locked, schema newer than this code)."""


class PutOutcome(StrEnum):
    """What happened to one snapshot handed to ``put_snapshots``."""

    STORED = "stored"
    """It is now the device's latest snapshot."""
    DUPLICATE = "duplicate"
    """The device's latest snapshot already has this ``collected_at``; nothing changed."""
    OLDER = "older-than-latest"
    """The device already has a newer snapshot; this one was not kept."""


@dataclass(frozen=True, slots=True)
class Changes:
    """Latest snapshots stored after a cursor, and the cursor to ask from next time."""

    snapshots: tuple[DeviceSnapshot, ...]
    cursor: int
    more: bool = False
    """True when ``limit`` cut the answer short: ask again from ``cursor``."""


@dataclass(frozen=True, slots=True)
class HostDetails:
    """What an osquery agent said about its host when it enrolled (all optional)."""

    hostname: str = ""
    platform: str = ""
    """osquery's ``os_version.platform``: ``darwin``, ``ubuntu``, ``windows``, ``rhel``..."""
    platform_like: str = ""
    os_name: str = ""
    os_version: str = ""
    os_build: str = ""
    agent_version: str = ""


@dataclass(frozen=True, slots=True)
class Enrollment:
    """One osquery agent's enrollment; the node key itself is never stored, only its hash."""

    node_key_hash: str
    serial: str
    host_identifier: str
    enrolled_at: datetime
    details: HostDetails = HostDetails()
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The current rows of one osquery query on one device, as the agent last reported them."""

    rows: tuple[Mapping[str, str], ...]
    collected_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One compliance evaluation of a device, kept for auditors for the retention period."""

    serial: str
    owners: tuple[str, ...]
    recorded_at: datetime
    results: Mapping[str, bool] = field(default_factory=dict)
    """Pass (True) or fail (False) per check name."""


class AccessVerdict(StrEnum):
    """How one request was decided, as the access ledger counts it (a closed set)."""

    ALLOWED = "allowed"
    GRACE = "allowed-in-grace"
    """Allowed while a failing check is inside its grace period (or only nudges)."""
    BREAK_GLASS = "break-glass"
    MONITOR = "monitor-would-deny"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class AccessRollup:
    """The access ledger's unit: how many requests one user on one device got one verdict for on one route in one hour.

    Replicas and workers add their counts to the same row (``LedgerStore.add_access_rollups``);
    ``first_seen`` is the earliest and ``last_seen`` the latest request counted in it.
    """

    hour: datetime
    """The UTC hour the requests fell in (minutes, seconds and microseconds zero)."""
    route: str
    tier: str
    user: str
    """The verified user's email ("" when no user was verified)."""
    device: str
    """The verified hardware serial ("" when the request named no device)."""
    verdict: AccessVerdict
    reason: str
    """The decision's reason code (`checks-failed`, `device-unowned`, ...); "" when allowed without one."""
    count: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class PendingQuery:
    """An on-demand (distributed) query waiting for a device's agent to pick it up."""

    query_id: str
    serial: str
    query_name: str
    """Name of the posture query whose results these are (maps the answer to facts)."""
    sql: str
    created_at: datetime


class OwnerSource(StrEnum):
    """Where an owner inventory entry came from (a closed set, shown to operators)."""

    CLI = "cli"
    """``gatehouse devices assign`` / ``unassign``."""
    IMPORT = "import"
    """``gatehouse devices import`` (an MDM or HR export)."""
    API = "api"
    """``PUT``/``DELETE /.gatehouse/api/v1/devices/{serial}/owners``."""
    ENROLLMENT = "enrollment"
    """The owner recorded when the device was enrolled."""
    CONNECTOR = "connector"
    """A pull connector (the user an MDM assigned); ``set_by`` is ``connector:<name>``."""


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """The owners an operator bound to one serial, and who bound them, when and how.

    ``owners`` empty means the serial was unassigned: the inventory has no entry for it any more.
    """

    serial: str
    owners: tuple[str, ...]
    """Lower-case email addresses, in the order they were added."""
    set_by: str
    """Who made the last change: an operator's login, an API caller, an import file."""
    set_at: datetime
    source: OwnerSource


class OwnerEditMode(StrEnum):
    """How an edit changes a serial's owner list."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"
    """Remove the listed owners; with none listed, remove every owner."""


@dataclass(frozen=True, slots=True)
class OwnerEdit:
    """One change to one serial's owners, applied atomically by ``OwnerStore.edit_owners``."""

    serial: str
    owners: tuple[str, ...]
    mode: OwnerEditMode
    set_by: str
    set_at: datetime
    source: OwnerSource


def edited_owners(current: tuple[str, ...], edit: OwnerEdit) -> tuple[str, ...]:
    """The owner list after ``edit`` (every backend applies edits with this one rule)."""
    if edit.mode is OwnerEditMode.REPLACE:
        return tuple(dict.fromkeys(edit.owners))
    if edit.mode is OwnerEditMode.ADD:
        return tuple(dict.fromkeys((*current, *edit.owners)))
    if not edit.owners:
        return ()
    gone = set(edit.owners)
    return tuple(o for o in current if o not in gone)


Record = TypeVar("Record")


@dataclass(frozen=True, slots=True)
class RecordFeed(Generic[Record]):
    """One page of a change feed: the records changed after a cursor, in seq order, and the cursor to ask from next time."""

    records: tuple[Record, ...]
    cursor: int
    more: bool = False
    """True when ``limit`` cut the page short: ask again from ``cursor``."""


# INVARIANT: the aliases below name types only; build pages with ``RecordFeed(...)`` (calling a
# subscripted alias of a slotted frozen dataclass fails on Python 3.11).
OwnerChanges = RecordFeed[OwnerRecord]
"""The owner inventory's feed (tombstones, entries with no owners, included)."""


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """One device certificate issued by Gatehouse's device CA: whose, for which serial, until when, revoked or not."""

    fingerprint: str
    """SHA-256 of the certificate's DER, lowercase hex."""
    serial: str
    """The hardware serial it names (its one `urn:device:serial:` SAN URI)."""
    owner: str
    """The enrolling user's email."""
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str = ""
    """Who revoked it (an approver's email, ``cli:<login>``, ``device-removed:<who>``); "" while it is not revoked."""

    def expired(self, *, now: datetime) -> bool:
        """True once ``now`` is past the certificate's end of validity."""
        return now >= self.not_after


CertificateChanges = RecordFeed[CertificateRecord]
"""The device certificates' feed: records recorded or revoked after a cursor."""


@runtime_checkable
class SnapshotStore(Protocol):
    """Latest snapshot per device and the change feed the caches follow."""

    async def put_snapshots(self, snapshots: Sequence[DeviceSnapshot]) -> tuple[PutOutcome, ...]:
        """Store a batch in one transaction, idempotent on (serial, collected_at); one outcome per item, in order."""
        ...

    async def latest(self, serial: str) -> DeviceSnapshot | None:
        """The device's newest stored snapshot."""
        ...

    async def load_latest(self) -> Changes:
        """Every device's latest snapshot, with the cursor to follow changes from."""
        ...

    async def changes_since(self, cursor: int, *, limit: int = 10_000) -> Changes:
        """Latest snapshots stored after ``cursor`` (at most ``limit``), oldest first."""
        ...


@runtime_checkable
class EnrollmentStore(Protocol):
    """osquery enrollments, looked up by node key (stored hashed)."""

    async def create_enrollment(
        self, *, node_key: str, serial: str, host_identifier: str, details: HostDetails, now: datetime
    ) -> Enrollment:
        """Record a new node key for a device; earlier active keys of the same serial are revoked."""
        ...

    async def enrollment_by_node_key(self, node_key: str) -> Enrollment | None:
        """The enrollment a node key belongs to, revoked or not; None when unknown."""
        ...

    async def revoke_enrollments(self, serial: str, *, now: datetime) -> int:
        """Revoke every active node key of a device; returns how many were revoked."""
        ...

    async def active_enrollments(self, serial: str) -> tuple[Enrollment, ...]:
        """The device's enrollments whose node key is not revoked, oldest first."""
        ...


@runtime_checkable
class OsqueryStateStore(Protocol):
    """The current rows of each posture query per device, so differential logs can be applied."""

    async def query_results(self, serial: str) -> Mapping[str, QueryResult]:
        """Every posture query's current rows for a device, by query name."""
        ...

    async def save_query_results(self, serial: str, results: Mapping[str, QueryResult]) -> None:
        """Replace the rows of the named queries for a device (other queries are untouched)."""
        ...


@runtime_checkable
class HistoryStore(Protocol):
    """Bounded per-device compliance history and when each check started failing."""

    async def record_compliance(self, entry: HistoryEntry) -> None:
        """Append an entry and, in the same transaction, update failing-since for its checks.

        A failing check without a failing-since gets ``entry.recorded_at``; a passing check loses its
        failing-since; checks not in ``entry.results`` are untouched.
        """
        ...

    def iter_history(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[HistoryEntry]:
        """History entries recorded in [since, until), oldest first, fetched in pages."""
        ...

    async def prune_history(self, *, before: datetime) -> int:
        """Delete entries recorded before ``before``; returns how many were deleted."""
        ...

    async def failing_since(self, serial: str) -> Mapping[str, datetime]:
        """When each currently failing check of a device started failing, by check name."""
        ...

    async def set_failing_since(self, serial: str, check: str, since: datetime | None) -> None:
        """Set (or clear, with None) when a device's check started failing."""
        ...

    async def load_failing_since(self, serials: Sequence[str] | None = None) -> Mapping[str, Mapping[str, datetime]]:
        """Failing-since of many devices at once (all devices when ``serials`` is None), by serial then check.

        Devices with no failing check are absent. The snapshot cache loads this at start and for the
        devices each refresh changed, so the request path has grace-period starts in memory.
        """
        ...


@runtime_checkable
class DistributedQueryStore(Protocol):
    """Queries waiting for an agent's next distributed read (the "check again" refresh)."""

    async def add_pending_queries(self, queries: Sequence[PendingQuery]) -> None:
        """Queue queries for their devices; a query_id already queued is replaced."""
        ...

    async def pending_queries(self, serial: str) -> tuple[PendingQuery, ...]:
        """Queries queued for a device and not yet answered, oldest first."""
        ...

    async def complete_pending_queries(self, serial: str, query_ids: Sequence[str]) -> None:
        """Forget queries the agent answered (unknown ids are ignored)."""
        ...


@runtime_checkable
class LedgerStore(Protocol):
    """The access ledger's durable rollups (``AccessRollup``), shared by every replica.

    Adding is an upsert in one transaction: concurrent writers (replicas, worker processes) adding to
    the same row never lose a count. A writer that retries a batch whose commit it could not confirm
    passes ``writer`` (its own id, unique per process) and ``seq`` (its batches' increasing number):
    the store remembers each writer's last added seq in the same transaction and adds nothing for a
    seq it already has, so a retried batch is counted exactly once.
    """

    async def add_access_rollups(self, rollups: Sequence[AccessRollup], *, writer: str | None = None, seq: int = 0) -> bool:
        """Add each rollup's count to its row (same hour, route, tier, user, device, verdict, reason), widening first/last seen.

        Returns False, adding nothing, when ``writer`` already added batch ``seq`` (or a later one).
        """
        ...

    def iter_access(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[AccessRollup]:
        """Every rollup whose hour is in [since, until), oldest hour first."""
        ...

    async def prune_access(self, *, before: datetime) -> int:
        """Remove rollups whose hour is before ``before`` (and writers silent since then); returns how many rollups went."""
        ...


@runtime_checkable
class OwnerStore(Protocol):
    """The owner inventory: which users own each serial, set by operators, never by the device itself."""

    async def edit_owners(self, edits: Sequence[OwnerEdit]) -> tuple[OwnerRecord, ...]:
        """Apply the edits in one transaction, in order; returns each edited serial's record after its edit.

        An edit that changes nothing (adding an owner already listed, removing one not listed) still
        returns the record but stores nothing and takes no seq.
        """
        ...

    async def owners(self, serial: str) -> OwnerRecord | None:
        """The serial's inventory entry; None when it has none (never assigned, or unassigned)."""
        ...

    async def load_owners(self) -> OwnerChanges:
        """Every serial with owners (no tombstones), with the cursor to follow changes from."""
        ...

    async def owner_changes_since(self, cursor: int, *, limit: int = 10_000) -> OwnerChanges:
        """Owner records changed after ``cursor`` (at most ``limit``, tombstones included), oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """Where one pull connector stands, as every replica sees it."""

    name: str
    holder: str
    """The replica holding the lease (``""`` before anyone claimed it)."""
    lease_until: datetime | None
    cursor: str
    """Where the current pass stopped (the connector's own format); ``""`` starts a new pass."""
    last_success_at: datetime | None
    """When the last complete pass ended."""


@dataclass(frozen=True, slots=True)
class ConnectorClaim:
    """The state after a claim, and whether the claimer now holds the lease."""

    state: ConnectorState
    held: bool


@runtime_checkable
class ConnectorStateStore(Protocol):
    """Leases and sync positions of the pull connectors, shared by every replica."""

    async def claim_connector(self, name: str, holder: str, *, now: datetime, lease_s: float) -> ConnectorClaim:
        """Take (or renew) the connector's lease when it is free, lapsed or already ``holder``'s; always returns the state."""
        ...

    async def save_connector_state(
        self, name: str, holder: str, *, cursor: str, last_success_at: datetime | None, now: datetime, lease_s: float
    ) -> bool:
        """Record the sync position and renew the lease; False (nothing written) when ``holder`` lost the lease."""
        ...


@runtime_checkable
class CertificateStore(Protocol):
    """Device certificates issued by Gatehouse's CA; every replica holds them in memory through the change feed."""

    async def record_certificate(self, cert: CertificateRecord) -> None:
        """Keep a newly issued certificate (a fingerprint already recorded is left as it is)."""
        ...

    async def revoke_certificate(self, fingerprint: str, *, at: datetime, by: str) -> CertificateRecord | None:
        """Revoke one certificate; returns its record (unchanged when it was revoked already), None when unknown."""
        ...

    async def revoke_certificates_of(self, serial: str, *, at: datetime, by: str) -> tuple[CertificateRecord, ...]:
        """Revoke every unrevoked certificate naming ``serial``; returns those it revoked."""
        ...

    async def certificates_of(self, serial: str) -> tuple[CertificateRecord, ...]:
        """Every certificate recorded for a serial, revoked and expired ones included, oldest issued first."""
        ...

    async def load_certificates(self) -> CertificateChanges:
        """Every recorded certificate, with the cursor to follow changes from."""
        ...

    async def certificate_changes_since(self, cursor: int, *, limit: int = 10_000) -> CertificateChanges:
        """Certificates recorded or revoked after ``cursor`` (at most ``limit``), oldest change first."""
        ...


class EnrollmentStatus(StrEnum):
    """Where a laptop enrollment request stands (a closed set, shown to users and approvers)."""

    PENDING_PROOF = "pending-proof"
    PENDING_APPROVAL = "pending-approval"
    ISSUED = "issued"
    REFUSED = "refused"
    EXPIRED = "expired"

    @property
    def open(self) -> bool:
        """True while the request can still end in a certificate."""
        return self in (EnrollmentStatus.PENDING_PROOF, EnrollmentStatus.PENDING_APPROVAL)


@dataclass(frozen=True, slots=True)
class EnrollSession:
    """One sign-in of the enrollment client by one-time code; secrets are kept only as SHA-256 hashes."""

    session_hash: str
    user_code: str
    created_at: datetime
    expires_at: datetime
    user: str = ""
    """The signed-in user who confirmed the code in a browser ("" until then)."""
    confirmed_at: datetime | None = None
    token_hash: str = ""
    """The enrollment token handed to the client once confirmed ("" until then)."""
    token_expires_at: datetime | None = None
    enrollment_id: str = ""
    """The enrollment the token was used for ("" until then): a token creates one enrollment."""


@dataclass(frozen=True, slots=True)
class EnrollmentEvent:
    """One step of an enrollment request, kept with it for auditors (`created`, `proof_failed`, `approved`...)."""

    at: datetime
    kind: str
    actor: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EnrollmentRequest:
    """A laptop's request for a device certificate, from creation to its outcome."""

    id: str
    user: str
    serial: str
    platform: str
    hostname: str
    csr_pem: str
    nonce_path: str
    nonce_sha256: str
    """SHA-256 (hex) of the nonce the client writes to ``nonce_path``; the nonce itself is not kept."""
    proof: str
    """``osquery-file-hash`` or ``approval``."""
    status: EnrollmentStatus
    created_at: datetime
    expires_at: datetime
    flags: tuple[str, ...] = ()
    """Why an approver must look closer: ``other-owner`` (the serial is registered to someone else)."""
    reason: str = ""
    detail: str = ""
    certificate: str = ""
    fingerprint: str = ""
    not_after: datetime | None = None
    decided_by: str = ""
    events: tuple[EnrollmentEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class OsqueryConflict:
    """A second osquery node enrolled a serial whose active node has another host identifier."""

    serial: str
    previous_host: str
    new_host: str
    at: datetime


@runtime_checkable
class EnrollmentRequestStore(Protocol):
    """Enrollment sign-in sessions, enrollment requests and osquery enroll conflicts, shared by every replica.

    ``swap_*`` is a compare-and-set: it writes ``new`` only when the stored value still equals ``old``
    and returns False otherwise, so two replicas never both move one request (approve vs. proof).
    """

    async def create_enroll_session(self, session: EnrollSession) -> None:
        """Store a new session (its hash and user code are unique)."""
        ...

    async def enroll_session(self, session_hash: str) -> EnrollSession | None:
        """The session with this hash; None when unknown."""
        ...

    async def enroll_session_by_code(self, user_code: str) -> EnrollSession | None:
        """The session shown with this user code; None when unknown."""
        ...

    async def swap_enroll_session(self, old: EnrollSession, new: EnrollSession) -> bool:
        """Replace ``old`` by ``new`` if ``old`` is still what is stored."""
        ...

    async def create_enrollment_request(self, request: EnrollmentRequest) -> None:
        """Store a new enrollment request."""
        ...

    async def enrollment_request(self, request_id: str) -> EnrollmentRequest | None:
        """The request with this id; None when unknown."""
        ...

    async def swap_enrollment_request(self, old: EnrollmentRequest, new: EnrollmentRequest) -> bool:
        """Replace ``old`` by ``new`` if ``old`` is still what is stored."""
        ...

    async def enrollment_requests(self, *, limit: int = 200) -> tuple[EnrollmentRequest, ...]:
        """The newest requests, newest first."""
        ...

    async def record_osquery_conflict(self, conflict: OsqueryConflict) -> None:
        """Keep a conflict for the fleet page."""
        ...

    async def osquery_conflicts(self, *, limit: int = 200) -> tuple[OsqueryConflict, ...]:
        """The newest conflicts, newest first."""
        ...


class ChangeKind(StrEnum):
    """What a change notice is about."""

    SNAPSHOT = "snapshot"
    """Snapshots were stored; ``seq`` is the newest: call ``changes_since(cursor)``."""
    OWNERS = "owners"
    """The owner inventory changed; ``seq`` is the newest: call ``owner_changes_since(cursor)``."""
    CERTIFICATES = "certificates"
    """A device certificate was recorded or revoked; ``seq`` is the newest: call ``certificate_changes_since(cursor)``."""
    AUDIT = "audit"
    """Audit entries (grant changes) were appended; ``seq`` is the new head's."""
    RESYNC = "resync"
    """The listener (re)connected and may have missed notices: catch up on everything."""


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """One notice that something other processes hold in memory was stored."""

    kind: ChangeKind
    seq: int
    local: bool = False
    """True when only this process was told (SQLite): the writer already applied its own write, and
    other processes on the same store learn of it only if something forwards the notice (the worker
    link does). False when the backend told every process (PostgreSQL NOTIFY), the writer included."""


ChangeCallback = Callable[[ChangeNotice], None]
"""Called on the event loop for each notice; must not block (set an event, schedule a task)."""


class Subscribers:
    """The callbacks a backend calls with its change notices; one failing callback never stops the others."""

    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        self._callbacks: list[ChangeCallback] = []

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def add(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback`` for every notice until the returned function is called."""
        self._callbacks.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    def clear(self) -> None:
        """Forget every callback (the store is closing)."""
        self._callbacks.clear()

    def dispatch(self, notice: ChangeNotice) -> None:
        """Call every callback with ``notice``; a callback that raises is logged and skipped."""
        for callback in tuple(self._callbacks):
            try:
                callback(notice)
            except Exception:
                _log.exception("store.change_callback_failed", kind=notice.kind.value)


class Store(
    SnapshotStore, EnrollmentStore, OsqueryStateStore, HistoryStore, DistributedQueryStore, OwnerStore, LedgerStore,
    ConnectorStateStore, CertificateStore, EnrollmentRequestStore, Protocol,
):
    """Everything the snapshot subsystem keeps durably, its change notices and the audit sink; ``close`` releases connections."""

    async def health(self, *, timeout_s: float = 1.0) -> bool:
        """True when the store answers a trivial read within ``timeout_s`` (for readiness); never raises."""
        ...

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback`` with a ``ChangeNotice`` after every committed write other processes cache, until the returned function is called.

        Must be called on the running loop. See the module docstring for which processes hear of which writes.

        Raises:
            StoreError: the store is closed.
        """
        ...

    async def audit_sink(self) -> AuditSink:
        """The break-glass audit log kept with this store (opened on first call, closed with the store); its appends are announced as ``ChangeKind.AUDIT``.

        Raises:
            StoreError: the store is closed, or the audit log cannot be opened.
        """
        ...

    async def close(self) -> None:
        """Finish pending work and release the backend's connections (the audit sink's too)."""
        ...
