"""What happens to parsed snapshots from any source: store, cache, history, metrics.

Owns: Ingestor (the one path every source goes through), ComplianceRecorder (the seam the policy
engine plugs into), pause_between_chunks (how every long ingest loop keeps the event loop responsive).
Must not import: aiohttp, gateway.app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from gateway.ingest.osquery import ResultItem, apply_results, assemble_snapshot, fact_name, sequence_after
from gateway.ingest.stethoscope import Disagreement
from gateway.metrics import Metrics
from gateway.store.snapshots import SnapshotCache
from gateway.store.base import Enrollment, HistoryEntry, PutOutcome, Store, StoreError
from policy_engine.model import DeviceSnapshot

_log = structlog.get_logger(__name__)

CHUNK_ITEMS = 128
"""How many items a long ingest loop handles before it lets the event loop run other callbacks."""


async def pause_between_chunks(done: int) -> None:
    """After every CHUNK_ITEMS items (``done`` counts them), yield to the event loop.

    A 10,000-item batch is parsed and applied on the worker's one event loop; without a pause the
    requests beside it would wait for all of it.
    """
    if done % CHUNK_ITEMS == 0:
        await asyncio.sleep(0)


class ComplianceRecorder(Protocol):
    """Given a newly stored snapshot, pass (True) or fail (False) per check name; None records nothing.

    app.py plugs the policy engine in here. It must not raise: a recorder error is logged and the
    snapshot stays stored.
    """

    def __call__(self, snapshot: DeviceSnapshot) -> Mapping[str, bool] | None: ...


class HistoryThrottle:
    """Decides which evaluations go into the compliance history: a change, or a day since the last entry.

    osquery devices send a new snapshot every few minutes; recording each would write hundreds of
    identical rows per device per day. Entries are written when a device's results differ from
    its last recorded ones, or when ``every`` has passed (so the evidence shows the device was
    still evaluated). Memory only: after a restart each device's next evaluation is recorded.
    """

    def __init__(self, every: timedelta = timedelta(days=1)) -> None:
        self._every = every
        self._last: dict[str, tuple[int, datetime]] = {}

    def should_record(self, serial: str, results: Mapping[str, bool], at: datetime) -> bool:
        """True when this evaluation belongs in the history; remembers it if so."""
        digest = hash(frozenset(results.items()))
        last = self._last.get(serial)
        if last is not None and last[0] == digest and at - last[1] < self._every:
            return False
        self._last[serial] = (digest, at)
        return True


@dataclass(slots=True)
class Ingestor:
    """Stores snapshots durably, then shows them to this process's cache and records compliance."""

    store: Store
    cache: SnapshotCache | None
    metrics: Metrics | None = None
    recorder: ComplianceRecorder | None = None
    throttle: HistoryThrottle | None = None
    """Without one, every evaluation is recorded."""

    async def ingest(self, snapshots: Sequence[DeviceSnapshot]) -> tuple[PutOutcome, ...]:
        """Store a batch (committed when this returns), then update cache, history and metrics.

        Raises:
            StoreError: nothing was stored; the caller must not acknowledge the batch.
        """
        try:
            outcomes = await self.store.put_snapshots(snapshots)
        except StoreError:
            if self.metrics is not None:
                self.metrics.store_errors.labels(operation="put_snapshots").inc()
                for snapshot in snapshots:
                    self.metrics.ingests.labels(source=snapshot.source, outcome="store-error").inc()
            raise
        for done, (snapshot, outcome) in enumerate(zip(snapshots, outcomes, strict=True), start=1):
            await pause_between_chunks(done)
            if self.metrics is not None:
                self.metrics.ingests.labels(source=snapshot.source, outcome=outcome.value).inc()
            if outcome is not PutOutcome.STORED:
                continue
            if self.metrics is not None:
                self.metrics.ingest_last_stored.labels(source=snapshot.source).set_to_current_time()
            if self.cache is not None:
                self.cache.apply(snapshot)
            await self._record(snapshot)
        return outcomes

    async def ingest_osquery(
        self, enrollment: Enrollment, items: Sequence[ResultItem], *, now: datetime
    ) -> PutOutcome | None:
        """Apply osquery result items to the device's query rows, then store the re-assembled snapshot.

        Results of queries that are not posture queries (no ``zt_`` in the name, e.g. the operator's
        own packs) are ignored, so their rows are never kept. Returns None when nothing needed
        storing. The caller holds the device's lock.

        Raises:
            StoreError: the rows or the snapshot could not be stored.
        """
        items = [item for item in items if fact_name(item.name) is not None]
        if not items:
            return None
        state = await self.store.query_results(enrollment.serial)
        touched = apply_results(state, items)
        await self.store.save_query_results(enrollment.serial, touched)
        previous = await self.store.latest(enrollment.serial)
        snapshot = assemble_snapshot(
            enrollment,
            {**state, **touched},
            received_at=now,
            owners=previous.owners if previous is not None else (),
        )
        snapshot = None if snapshot is None else sequence_after(snapshot, previous)
        if snapshot is None:
            return None
        (outcome,) = await self.ingest([snapshot])
        return outcome

    def rejected(self, source: str, count: int = 1) -> None:
        """Count items refused before storage (malformed, future-dated, placeholder serial)."""
        if self.metrics is not None and count:
            self.metrics.ingests.labels(source=source, outcome="rejected").inc(count)

    def disagreed(self, serial: str, disagreements: Sequence[Disagreement]) -> None:
        """Log and count each Stethoscope practice whose raw setting and verdict disagree."""
        for found in disagreements:
            _log.warning("stethoscope.verdict_disagreed", serial=serial, practice=found.practice, setting=found.setting, verdict=found.verdict)
            if self.metrics is not None:
                self.metrics.stethoscope_disagreements.labels(practice=found.practice).inc()

    async def _record(self, snapshot: DeviceSnapshot) -> None:
        if self.recorder is None:
            return
        try:
            results = self.recorder(snapshot)
        except Exception:  # noqa: BLE001 - a recorder bug must not lose an acknowledged snapshot
            _log.exception("compliance.record_failed", source=snapshot.source)
            return
        if not results:
            return
        if self.throttle is not None and not self.throttle.should_record(snapshot.serial, results, snapshot.collected_at):
            return
        entry = HistoryEntry(snapshot.serial, snapshot.owners, snapshot.collected_at, dict(results))
        try:
            await self.store.record_compliance(entry)
            if self.cache is not None:
                self.cache.set_failing_since(snapshot.serial, await self.store.failing_since(snapshot.serial))
        except StoreError as exc:
            _log.warning("compliance.record_failed", error=str(exc))
            if self.metrics is not None:
                self.metrics.store_errors.labels(operation="record_compliance").inc()


async def prune_history(store: Store, *, retention_days: int, now: datetime) -> int:
    """Delete compliance history older than the retention period; returns how many entries went.

    Raises:
        StoreError: the store failed.
    """
    deleted = await store.prune_history(before=now - timedelta(days=retention_days))
    if deleted:
        _log.info("compliance.history_pruned", deleted=deleted, retention_days=retention_days)
    return deleted


async def run_history_prune(
    store: Store,
    *,
    retention_days: int,
    clock: Callable[[], datetime],
    wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
    every_s: float = 3600.0,
) -> None:
    """Prune now and then every ``every_s`` seconds, forever; store errors are logged, not raised.

    Run it as a task in a cleanup_ctx and cancel it on shutdown; tests pass their own ``wait``.
    """
    while True:
        try:
            await prune_history(store, retention_days=retention_days, now=clock())
        except StoreError as exc:
            _log.warning("compliance.prune_failed", error=str(exc))
        await wait(every_s)
