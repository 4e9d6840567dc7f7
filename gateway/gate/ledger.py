"""The access ledger's recorder: every decision counted in memory, written to the store in the background.

Owns: AccessLedger, ledger_entry (a gate outcome as the ledger counts it), run_ledger and ledger_ctx (the background writer).
Must not import: gateway.keys, app, gateway.serve, gateway.gate.admission, policy_gate (the gate calls ``AccessLedger.count``; app.py wires it
and hands ``ledger_ctx`` the ledger, the store and the clock as values: keys.py names AccessLedger).

Counting: ``count`` runs on the request path for every decided request, on both lanes. It adds one
to an in-memory row keyed by hour, route, tier, user, device, verdict and reason (a dict update;
no I/O, no lock, no metric call) and widens the row's first and last seen. It returns the row, so
a caller that sees the same request again (the gate's kept admissions) counts it with
``recount(row, now)``: no key, no lookup, while the row is still collecting (not yet sealed into a
batch, and ``now`` in the row's hour); otherwise ``recount`` counts nothing and says so, and the
caller counts with ``count`` again.

What is counted (``ledger_entry``): an allowed request is ``allowed``, or ``allowed-in-grace``
when a failing check is inside its grace period (reason ``in-grace``) or only nudges fail (reason
``nudge``); one allowed without a device at a ``device: optional`` tier is ``allowed`` with reason
``identity-only`` (its device ``""``); a policy denial let through by a grant is ``break-glass``, by a monitor-mode route
``monitor-would-deny``, each with the policy's reason; a denial is ``denied`` with its reason. A
request whose user (or device) could not be verified is ``denied`` too, with the authentication
reason and user (or device) ``""``. A break-glass request refused because its use could not be
written to the audit log is ``denied`` with reason ``audit-unavailable``: it reached nothing.

Writing: ``flush`` seals what is pending into a batch (with this process's writer id and the next
batch number) and hands held batches to the store, oldest first; ``ledger_ctx`` flushes every
``evidence.ledger_flush_s`` and once more at shutdown. A batch the store refused stays held and is
retried, unchanged, at the next flush; the store adds a writer's batch number at most once, so a
batch whose commit could not be confirmed (the connection broke during COMMIT) is retried without
being counted twice. While batches are held, new requests still count into existing rows; a request
needing a new row when held and pending rows together reached ``evidence.ledger_max_pending_rows``
is dropped, counted in ``gatehouse_ledger_dropped_requests_total`` and logged as an error
(``ledger.requests_dropped``) at the next flush.

Crash window: counts not yet stored are lost when the process dies: at most one flush period of
requests, plus everything held during a store outage. ``gatehouse_ledger_requests_pending`` says
how many requests that is (as of the last flush). Retention: every hour, rows older than
``evidence.ledger_retention_days`` are pruned; every replica does it, and pruning twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from gateway.config.evidence import EvidenceSettings
from gateway.gate.decide import GateOutcome, Verdict
from gateway.metrics import Metrics
from gateway.store.base import AccessRollup, AccessVerdict, LedgerStore, StoreError
from policy_engine import Reason

_log = structlog.get_logger("gateway.ledger")

PRUNE_EVERY = timedelta(hours=1)
SHUTDOWN_FLUSH_S = 10.0
"""How long the last flush at shutdown may take before its counts are given up (and logged)."""
_HOUR = timedelta(hours=1)
_NEVER = datetime.min.replace(tzinfo=UTC)

ALLOWED, GRACE, BREAK_GLASS, MONITOR, DENIED = (
    AccessVerdict.ALLOWED, AccessVerdict.GRACE, AccessVerdict.BREAK_GLASS, AccessVerdict.MONITOR, AccessVerdict.DENIED,
)

IDENTITY_ONLY = Reason.IDENTITY_ONLY
_Key = tuple[datetime, str, str, str, str, AccessVerdict, str]


class LedgerRow:
    """One collecting row's count and first and last seen; ``recount`` adds to it while ``epoch`` is the ledger's."""

    __slots__ = ("count", "first", "last", "epoch")

    def __init__(self, now: datetime, epoch: object) -> None:
        self.count = 1
        self.first = self.last = now
        self.epoch = epoch
        """The ledger's epoch when the row was made; a new one starts at every seal and every new hour."""


def ledger_entry(outcome: GateOutcome) -> tuple[AccessVerdict, str]:
    """The verdict and reason the ledger counts for a gate outcome (see the module docstring)."""
    verdict = outcome.verdict
    if verdict is Verdict.ALLOW:
        decision = outcome.decision
        if decision.in_grace:
            return GRACE, "in-grace"
        if decision.nudges:
            return GRACE, "nudge"
        if decision.reason is IDENTITY_ONLY:
            return ALLOWED, IDENTITY_ONLY.value
        return ALLOWED, ""
    if verdict is Verdict.BREAK_GLASS:
        return BREAK_GLASS, outcome.reason
    if verdict is Verdict.MONITOR:
        return MONITOR, outcome.reason
    return DENIED, outcome.reason


@dataclass(frozen=True, slots=True)
class _Batch:
    seq: int
    rows: tuple[AccessRollup, ...]
    requests: int


class AccessLedger:
    """Counts decisions into hourly rows in memory and writes them to a LedgerStore in batches."""

    __slots__ = (
        "_pending", "_hour", "_hour_end", "_epoch", "_held", "_held_rows", "_held_requests", "_dropped", "_seq", "writer",
        "_max_rows", "_metrics", "_lock", "_next_prune",
    )

    def __init__(self, *, max_pending_rows: int, metrics: Metrics, writer: str | None = None) -> None:
        self._pending: dict[_Key, LedgerRow] = {}
        self._hour = self._hour_end = _NEVER
        self._epoch = object()
        self._held: deque[_Batch] = deque()
        self._held_rows = 0
        self._held_requests = 0
        self._dropped = 0
        self._seq = 0
        self.writer = writer or uuid.uuid4().hex
        """This process's id in the store's writer table (batches are numbered per writer)."""
        self._max_rows = max_pending_rows
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._next_prune = _NEVER

    def count(
        self, now: datetime, route: str, tier: str, user: str, device: str, verdict: AccessVerdict, reason: str,
    ) -> LedgerRow | None:
        """Count one request (on the request path: a dict update, nothing else); the row counted into, None when dropped."""
        if not self._hour <= now < self._hour_end:
            hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
            self._hour, self._hour_end, self._epoch = hour, hour + _HOUR, object()
        key = (self._hour, route, tier, user, device, verdict, reason)
        row = self._pending.get(key)
        if row is None:
            if len(self._pending) + self._held_rows >= self._max_rows:
                self._dropped += 1
                return None
            row = self._pending[key] = LedgerRow(now, self._epoch)
            return row
        row.count += 1
        row.epoch = self._epoch  # in the pending rows and of the current hour: it collects (again, after the clock went back an hour)
        if now > row.last:
            row.last = now
        elif now < row.first:
            row.first = now
        return row

    def recount(self, row: LedgerRow | None, now: datetime) -> bool:
        """Count one more request into ``row`` (from ``count``) when it still collects; False, nothing counted, when not.

        A row stops collecting when it is sealed into a batch or ``now`` leaves the current hour;
        the caller then counts with ``count``.
        """
        if row is None or row.epoch is not self._epoch or not self._hour <= now < self._hour_end:
            return False
        row.count += 1
        if now > row.last:
            row.last = now
        elif now < row.first:
            row.first = now
        return True

    @property
    def rows_pending(self) -> int:
        """Rows in memory not yet stored (counting and held)."""
        return len(self._pending) + self._held_rows

    @property
    def requests_pending(self) -> int:
        """Requests counted in memory and not yet stored."""
        return self._held_requests + sum(row.count for row in self._pending.values())

    def _seal(self) -> None:
        pending, self._pending = self._pending, {}
        self._epoch = object()  # INVARIANT: a sealed row is never counted into again (recount refuses it)
        if not pending:
            return
        rows = tuple(
            AccessRollup(hour, route, tier, user, device, verdict, reason, row.count, row.first, row.last)
            for (hour, route, tier, user, device, verdict, reason), row in pending.items()
        )
        requests = sum(row.count for row in rows)
        self._seq += 1
        self._held.append(_Batch(self._seq, rows, requests))
        self._held_rows += len(rows)
        self._held_requests += requests

    async def flush(self, store: LedgerStore) -> bool:
        """Write what is pending and every held batch, oldest first; True when nothing is left held.

        Never raises for a store failure: the batch stays held for the next flush.
        """
        async with self._lock:
            self._seal()
            self._report_drops()
            metrics = self._metrics
            while self._held:
                batch = self._held[0]
                started = time.perf_counter()
                try:
                    added = await store.add_access_rollups(batch.rows, writer=self.writer, seq=batch.seq)
                except StoreError as exc:
                    metrics.ledger_flushes.labels(outcome="failed").inc()
                    _log.warning(
                        "ledger.flush_failed", error=str(exc), rows_held=self.rows_pending, requests_held=self._held_requests,
                        max_pending_rows=self._max_rows,
                    )
                    break
                metrics.ledger_flush_duration.observe(time.perf_counter() - started)
                metrics.ledger_flushes.labels(outcome="stored" if added else "already-stored").inc()
                self._held.popleft()
                self._held_rows -= len(batch.rows)
                self._held_requests -= batch.requests
            metrics.ledger_rows_pending.set(self.rows_pending)
            metrics.ledger_requests_pending.set(self._held_requests)
            return not self._held

    def _report_drops(self) -> None:
        dropped, self._dropped = self._dropped, 0
        if dropped:
            self._metrics.ledger_dropped.inc(dropped)
            _log.error(
                "ledger.requests_dropped", dropped=dropped, rows_held=self.rows_pending, max_pending_rows=self._max_rows,
                hint="the store has not taken the access ledger for a while; these requests are missing from the evidence",
            )

    async def prune(self, store: LedgerStore, *, retention_days: int, now: datetime) -> int | None:
        """Delete rows older than the retention when the last prune is an hour old; how many went, or None when not due."""
        if now < self._next_prune:
            return None
        self._next_prune = now + PRUNE_EVERY
        deleted = await store.prune_access(before=now - timedelta(days=retention_days))
        if deleted:
            _log.info("ledger.pruned", deleted=deleted, retention_days=retention_days)
        return deleted


async def run_ledger(
    ledger: AccessLedger,
    store: LedgerStore,
    settings: EvidenceSettings,
    *,
    clock: Callable[[], datetime],
    wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Flush every ``ledger_flush_s`` and prune hourly, forever; failures are logged, never raised.

    Run it as a task and cancel it on shutdown; tests pass their own ``wait``.
    """
    while True:
        await wait(settings.ledger_flush_s)
        try:
            await ledger.flush(store)
            await ledger.prune(store, retention_days=settings.ledger_retention_days, now=clock())
        except StoreError as exc:
            _log.warning("ledger.prune_failed", error=str(exc))
        except Exception as exc:  # the loop must outlive any bug in one round, or counts pile up unseen
            _log.exception("ledger.round_failed", error=f"{type(exc).__name__}: {exc}")


def ledger_ctx(
    settings: EvidenceSettings, ledger: AccessLedger, *, store: Callable[[], LedgerStore], clock: Callable[[], datetime],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: flush ``ledger`` to ``store()`` (read at startup) in the background, and once more at shutdown.

    Register it after the store's own cleanup_ctx, so the store is open when it starts and the last
    flush runs before the store closes.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        opened = store()
        task = asyncio.create_task(run_ledger(ledger, opened, settings, clock=clock), name="access-ledger")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            stored = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                    stored = await ledger.flush(opened)
            if not stored:
                _log.error("ledger.unflushed_at_shutdown", rows=ledger.rows_pending, requests=ledger.requests_pending)

    return ctx


__all__ = ["AccessLedger", "LedgerRow", "ledger_ctx", "ledger_entry", "run_ledger"]
