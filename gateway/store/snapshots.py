"""Every device's latest snapshot and the owner inventory in process memory, kept current from the store.

Owns: SnapshotCache, run_cache_refresh.
Must not import: aiohttp, gateway.ingest, gateway.app.

The request path calls ``get(serial)`` and ``failing_since(serial)``: dict lookups, never a store
call. The cache is loaded once at start (``load``), follows the store's change feed every
``refresh_interval_s`` (``refresh``, which also re-reads failing-since of the devices that
changed), and takes a snapshot this process ingested at once (``apply``). ``fresh(serial)`` is
for "I fixed it, check again": it asks the store for the newest snapshot and keeps it. Replacing a
device's snapshot calls ``on_replaced(serial)``: the decision memo drops that device's decisions,
so nothing keeps a replaced snapshot's decisions alive.

The owner inventory (``OwnerStore``) is held the same way: loaded with the snapshots, followed
through its own change feed on every ``refresh`` (and so on every PostgreSQL notice, worker
sibling refresh and periodic refresh), read with ``inventory(serial)``. ``owners_of`` is the one
rule for whose device it is: the inventory's entry when it has one; otherwise the owners in the
device's snapshot, only when the operator trusts reported owners (``ingest.trust_reported_owners``);
otherwise nobody.

Device certificates issued by Gatehouse's CA (``CertificateStore``) are held the same way, by
fingerprint and by serial, followed through their own change feed on every ``refresh``:
``certificate(fingerprint)`` is the request path's revocation check (a dict lookup), so a
revocation reaches every replica and worker with the next notice or refresh, never a store call.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Protocol, TypeVar

import structlog

from gateway.metrics import Metrics
from gateway.store.base import (
    CertificateRecord, CertificateStore, HistoryStore, OwnerRecord, OwnerStore, RecordFeed, SnapshotStore, StoreError,
)
from policy_engine.model import DeviceSnapshot

_log = structlog.get_logger("gateway.snapshots")
_NOT_FAILING: Mapping[str, datetime] = MappingProxyType({})
FREEZE_AT = 10_000
"""Fleet size from which ``load`` freezes the objects alive after it (see ``gc.freeze``)."""


class CacheSource(SnapshotStore, HistoryStore, OwnerStore, CertificateStore, Protocol):
    """What the cache reads: the snapshot change feed, failing-since, the owner inventory and device certificates (every Store is one)."""


class SnapshotCache:
    """Latest snapshot per serial; one dict, replaced entry by entry, never awaited on reads."""

    def __init__(
        self, store: CacheSource, *, metrics: Metrics | None = None, refresh_interval_s: float = 30.0,
        on_replaced: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._on_replaced = on_replaced  # called with the serial when a held snapshot is replaced
        self._by_serial: dict[str, DeviceSnapshot] = {}
        self._failing: dict[str, Mapping[str, datetime]] = {}
        self._cursor = 0
        self._inventory: dict[str, OwnerRecord] = {}
        self._owner_cursor = 0
        self._certificates: dict[str, CertificateRecord] = {}
        self._certificates_by_serial: dict[str, tuple[CertificateRecord, ...]] = {}
        self._certificates_by_owner: dict[str, tuple[CertificateRecord, ...]] = {}
        self._certificate_cursor = 0
        self.refresh_interval_s = refresh_interval_s
        self.loaded = False
        """True once ``load`` has filled the cache (readiness may wait for it)."""

    def get(self, serial: str) -> DeviceSnapshot | None:
        """The device's latest snapshot held in memory, or None."""
        return self._by_serial.get(serial)

    def failing_since(self, serial: str) -> Mapping[str, datetime]:
        """When each currently failing check of the device started failing (for grace periods); empty when none."""
        return self._failing.get(serial, _NOT_FAILING)

    def set_failing_since(self, serial: str, failing: Mapping[str, datetime]) -> None:
        """Hold a device's failing-since as the store now has it."""
        if failing:
            self._failing[serial] = MappingProxyType(dict(failing))
        else:
            self._failing.pop(serial, None)

    def inventory(self, serial: str) -> OwnerRecord | None:
        """The serial's owner inventory entry held in memory, or None (the same object until it changes)."""
        return self._inventory.get(serial)

    def inventory_records(self) -> tuple[OwnerRecord, ...]:
        """Every inventory entry held (a copy, for the fleet and status pages)."""
        return tuple(self._inventory.values())

    def certificate(self, fingerprint: str) -> CertificateRecord | None:
        """The device certificate Gatehouse's CA issued with this fingerprint, as the store last said; None when not one of ours."""
        return self._certificates.get(fingerprint)

    def revoked_at(self, fingerprint: str) -> datetime | None:
        """When the Gatehouse-issued certificate with this fingerprint was revoked; None when it is not (or unknown)."""
        record = self._certificates.get(fingerprint)
        return record.revoked_at if record is not None else None

    def certificates_of(self, serial: str) -> tuple[CertificateRecord, ...]:
        """Every certificate issued for the serial (revoked and expired ones included), oldest issued first."""
        return self._certificates_by_serial.get(serial, ())

    def certificates_of_user(self, email: str) -> tuple[CertificateRecord, ...]:
        """Every certificate issued to ``email`` (any case), revoked and expired ones included, oldest issued first."""
        return self._certificates_by_owner.get(email.lower(), ())

    def _hold_certificate(self, record: CertificateRecord) -> None:
        self._certificates[record.fingerprint] = record
        for index, key in ((self._certificates_by_serial, record.serial), (self._certificates_by_owner, record.owner.lower())):
            others = tuple(c for c in index.get(key, ()) if c.fingerprint != record.fingerprint)
            index[key] = tuple(sorted((*others, record), key=lambda c: c.issued_at))

    def owners_of(self, serial: str, *, trust_reported: bool) -> tuple[str, ...]:
        """Who owns the device: the inventory's owners; else, when ``trust_reported``, its snapshot's; else nobody."""
        record = self._inventory.get(serial)
        if record is not None:
            return record.owners
        if trust_reported:
            snapshot = self._by_serial.get(serial)
            if snapshot is not None:
                return snapshot.owners
        return ()

    def __len__(self) -> int:
        return len(self._by_serial)

    def __contains__(self, serial: object) -> bool:
        return serial in self._by_serial

    def snapshots(self) -> tuple[DeviceSnapshot, ...]:
        """Every held snapshot (a copy, for fleet views and exports)."""
        return tuple(self._by_serial.values())

    @property
    def cursor(self) -> int:
        """The store change-feed position this cache has applied up to."""
        return self._cursor

    def apply(self, snapshot: DeviceSnapshot) -> bool:
        """Hold ``snapshot`` unless the held one is newer; True when it was taken."""
        held = self._by_serial.get(snapshot.serial)
        if held is not None and held.collected_at > snapshot.collected_at:
            return False
        self._by_serial[snapshot.serial] = snapshot
        if held is not None and held is not snapshot and self._on_replaced is not None:
            self._on_replaced(snapshot.serial)
        self._count()
        return True

    async def load(self) -> None:
        """Fill the cache with every latest snapshot in the store.

        Raises:
            StoreError: the store could not be read.
        """
        changes = await self._store.load_latest()
        failing = await self._store.load_failing_since()
        owners = await self._store.load_owners()
        certificates = await self._store.load_certificates()
        self._certificates, self._certificates_by_serial, self._certificates_by_owner = {}, {}, {}
        for record in certificates.records:
            self._hold_certificate(record)
        self._certificate_cursor = certificates.cursor
        self._inventory = {r.serial: r for r in owners.records}
        self._owner_cursor = owners.cursor
        self._by_serial = {s.serial: s for s in changes.snapshots}
        self._failing = {serial: MappingProxyType(dict(f)) for serial, f in failing.items()}
        self._cursor = changes.cursor
        self.loaded = True
        self._count()
        if len(self._by_serial) >= FREEZE_AT:
            # A large fleet is long-lived: move it (and everything else alive now) out of the cyclic
            # collector's reach, or every full collection walks all of it (tens of ms per pass with
            # 100,000 snapshots, a latency spike each time). Snapshots hold no cycles; refcounting
            # frees the ones replaced later as before.
            gc.collect()
            gc.freeze()

    async def refresh(self) -> int:
        """Apply every change stored since the last refresh; returns how many snapshots, inventory entries and certificates changed.

        Raises:
            StoreError: the store could not be read (the cache keeps what it holds).
        """
        applied = await self.refresh_owners()
        applied += await self.refresh_certificates()
        while True:
            changes = await self._store.changes_since(self._cursor)
            if changes.snapshots:
                serials = [s.serial for s in changes.snapshots]
                failing = await self._store.load_failing_since(serials)
                for serial in serials:
                    self.set_failing_since(serial, failing.get(serial, _NOT_FAILING))
            for snapshot in changes.snapshots:
                applied += self.apply(snapshot)
            self._cursor = changes.cursor
            if not changes.more:
                return applied

    async def refresh_owners(self) -> int:
        """Apply every owner inventory change stored since the last refresh; returns how many entries changed.

        Raises:
            StoreError: the store could not be read (the cache keeps what it holds).
        """
        def hold(record: OwnerRecord) -> None:
            if record.owners:
                self._inventory[record.serial] = record
            else:
                self._inventory.pop(record.serial, None)

        applied, self._owner_cursor = await _follow(self._store.owner_changes_since, self._owner_cursor, hold)
        return applied

    async def refresh_certificates(self) -> int:
        """Apply every device certificate recorded or revoked since the last refresh; returns how many changed.

        Raises:
            StoreError: the store could not be read (the cache keeps what it holds).
        """
        applied, self._certificate_cursor = await _follow(
            self._store.certificate_changes_since, self._certificate_cursor, self._hold_certificate,
        )
        return applied

    async def fresh(self, serial: str) -> DeviceSnapshot | None:
        """The newest snapshot of one device straight from the store, also taken into the cache.

        Raises:
            StoreError: the store could not be read.
        """
        snapshot = await self._store.latest(serial)
        if snapshot is None:
            return self.get(serial)
        self.set_failing_since(serial, await self._store.failing_since(serial))
        self.apply(snapshot)
        return self.get(serial)

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.snapshots_held.set(len(self._by_serial))


async def run_cache_refresh(
    cache: SnapshotCache,
    *,
    wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
    metrics: Metrics | None = None,
) -> None:
    """Refresh ``cache`` forever, every ``cache.refresh_interval_s``; store errors are logged and counted, not raised.

    Run it as a task in a cleanup_ctx and cancel it on shutdown; tests pass their own ``wait``.
    """
    while True:
        await wait(cache.refresh_interval_s)
        try:
            changed = await cache.refresh()
        except StoreError as exc:
            _log.warning("snapshot_cache.refresh_failed", error=str(exc))
            if metrics is not None:
                metrics.store_errors.labels(operation="cache_refresh").inc()
            continue
        if changed:
            _log.debug("snapshot_cache.refreshed", changed=changed, held=len(cache))


_R = TypeVar("_R")


async def _follow(
    page: Callable[[int], Awaitable[RecordFeed[_R]]], cursor: int, hold: Callable[[_R], None],
) -> tuple[int, int]:
    """Read a change feed from ``cursor`` to its end, page by page, passing each record to ``hold``; (records applied, new cursor).

    Raises:
        StoreError: a page could not be read (what was applied before stays, and the cursor returned with it is lost,
        so the next call reads those records again: ``hold`` must be idempotent).
    """
    applied = 0
    while True:
        changes = await page(cursor)
        for record in changes.records:
            hold(record)
            applied += 1
        cursor = changes.cursor
        if not changes.more:
            return applied, cursor
