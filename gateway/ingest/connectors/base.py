"""What every pull connector shares: the values it produces, its HTTP client, and the runner that polls it.

Owns: Connector (Protocol), ConnectorRecord, Rejected, Page, ConnectorError, VendorHttp (retries: 401
renews the credentials once, 429 waits ``Retry-After``, 5xx and timeouts back off), ConnectorRunner
(one pass = every page, through the Ingestor; the lease; metrics; owners into the inventory).
Must not import: gateway.app, gateway.keys (app.py and ingest/http.py wire runners in).

A pass walks the vendor's pages from the stored cursor. After each page the snapshots are stored
(the same Ingestor as every other source: idempotent on serial + collected_at, the newest
``collected_at`` of any source is the device's snapshot) and the cursor saved with the lease renewed,
so a replica that takes over after a crash continues from the last stored page. When the last page
is done the cursor is reset and ``last_success_at`` set. Failures stop the pass; what was stored
stays, and the next pass starts from the saved cursor.

Time: the runner reads the clock it is given and waits with the ``sleep`` it is given (tests pass
fakes; nothing here waits on its own).
"""

from __future__ import annotations

import email.utils
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
import orjson
import structlog

from gateway.ingest.pipeline import Ingestor
from gateway.metrics import Metrics
from gateway.store.base import ConnectorStateStore, OwnerEdit, OwnerEditMode, OwnerSource, OwnerStore, StoreError
from policy_engine.model import DeviceSnapshot

_log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[object]]
Clock = Callable[[], datetime]

MAX_RETRY_AFTER_S = 300.0
"""The longest a 429's ``Retry-After`` is honoured; a longer one ends the pass (the next one retries)."""


class ConnectorError(RuntimeError):
    """The vendor could not be read (after retries), or answered something Gatehouse cannot use."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status of a refused request (404, 403...), when that is what ended it."""


@dataclass(frozen=True, slots=True)
class ConnectorRecord:
    """One device as the vendor reported it, turned into a snapshot."""

    snapshot: DeviceSnapshot
    ref: str
    """The vendor's id of the device (Fleet host id, Jamf Pro computer id)."""
    assigned_owners: tuple[str, ...] = ()
    """Owners the vendor's administrators assigned (candidates for the owner inventory); the
    snapshot's ``owners`` also holds those the device itself reported."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A vendor record that could not become a snapshot: which device, which field, what was expected."""

    ref: str
    serial: str
    """As reported, possibly empty or a placeholder."""
    field: str
    expected: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of records, and the cursor of the next page (None: the pass is complete)."""

    records: tuple[ConnectorRecord | Rejected, ...]
    next_cursor: str | None


class Connector(Protocol):
    """One external system Gatehouse polls for device health."""

    name: str
    source: str
    """What its snapshots carry as ``source``: ``fleet:<name>``, ``jamf:<name>``."""
    label: str
    """The vendor as users know it: ``Fleet``, ``Jamf Pro``."""
    refresh_hint: str
    """What "check again" tells the user about how soon the vendor's data changes."""

    async def fetch_page(self, cursor: str, *, now: datetime) -> Page:
        """The page at ``cursor`` (``""``: the first page).

        Raises:
            ConnectorError: the vendor could not be read after retries.
        """
        ...

    async def fetch_device(self, serial: str, *, now: datetime) -> ConnectorRecord | Rejected | None:
        """Ask the vendor for one device now (asking it to refresh where it can); None when it does not know the serial.

        Raises:
            ConnectorError: the vendor could not be read after retries.
        """
        ...

    async def close(self) -> None:
        """Release the HTTP session."""
        ...


TokenSource = Callable[[bool], Awaitable[str]]
"""Returns the bearer token to send; called with True after a 401 to get a new one."""


class VendorHttp:
    """JSON over HTTP to one vendor server, with the retry rules every connector shares."""

    def __init__(
        self, base_url: str, *, vendor: str, timeout_s: float, attempts: int, sleep: Sleep,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url
        self._vendor = vendor
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._sleep = sleep
        self._session = session
        self._own_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, *, token: TokenSource | None = None,
        params: Sequence[tuple[str, str]] = (), data: Mapping[str, str] | None = None,
    ) -> object:
        """The JSON body of a 2xx answer (None when empty).

        Raises:
            ConnectorError: a 4xx other than 401/429, a second 401, or 429/5xx/timeouts on every attempt.
        """
        url = f"{self.base_url}{path}"
        renewed = False
        delay = 1.0
        attempt = 0
        while True:
            attempt += 1
            headers = {"Accept": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {await token(renewed)}"
            try:
                async with self._client().request(
                    method, url, params=list(params), data=data, headers=headers, timeout=self._timeout, allow_redirects=False
                ) as response:
                    status = response.status
                    body = await response.read()
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                wait = delay
            else:
                if 200 <= status < 300:
                    try:
                        return orjson.loads(body) if body else None
                    except orjson.JSONDecodeError:
                        raise ConnectorError(f"{self._vendor} answered `{method} {path}` with a body that is not JSON") from None
                if status == 401 and token is not None and not renewed:
                    renewed = True
                    attempt -= 1  # a renewal is not a failed attempt
                    continue
                if status == 401:
                    raise ConnectorError(f"{self._vendor} refused the credentials (401 on `{path}`); check the connector's token or client")
                if status == 429:
                    wait = _retry_after(retry_after, default=delay)
                    if wait > MAX_RETRY_AFTER_S:
                        raise ConnectorError(f"{self._vendor} asked to wait {wait:.0f} s (429 on `{path}`); the next pass retries")
                    problem = "429 too many requests"
                elif status >= 500:
                    problem = f"{status} server error"
                    wait = delay
                else:
                    raise ConnectorError(
                        f"{self._vendor} answered {status} to `{method} {path}`: {body[:200].decode('utf-8', 'replace')}", status=status
                    )
            if attempt >= self._attempts:
                raise ConnectorError(f"{self._vendor} failed `{method} {path}` {attempt} times, last: {problem}")
            _log.info("connector.request_retried", vendor=self._vendor, path=path, problem=problem, wait_s=wait)
            await self._sleep(wait)
            delay = min(delay * 2, 60.0)


def _retry_after(raw: str | None, *, default: float) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if raw is None:
        return default
    text = raw.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return default
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class ConnectorRunner:
    """Polls one connector: passes over every page, one replica at a time, with metrics and readiness."""

    def __init__(
        self, connector: Connector, *, store: ConnectorStateStore, owners: OwnerStore | None, ingestor: Ingestor,
        clock: Clock, sleep: Sleep, holder: str, every_s: float, stale_after_s: float, metrics: Metrics | None = None,
    ) -> None:
        self.connector = connector
        self._store = store
        self._owners = owners
        self._ingestor = ingestor
        self._clock = clock
        self._sleep = sleep
        self._holder = holder
        self._every_s = every_s
        self._stale_after_s = stale_after_s
        self._metrics = metrics
        self.last_success_at: datetime | None = None
        """The last complete pass by any replica, as last read from the store."""

    @property
    def _lease_s(self) -> float:
        # INVARIANT: longer than a page takes, so a working holder renews before it lapses; a dead one is replaced after it.
        return max(self._every_s * 2, 120.0)

    def fresh(self) -> bool:
        """True while the last complete pass is within ``stale_after_s`` (readiness lists it as degraded otherwise)."""
        last = self.last_success_at
        return last is not None and (self._clock() - last).total_seconds() <= self._stale_after_s

    async def sync_once(self) -> str:
        """One pass (or its continuation) if this replica holds the lease; returns the outcome label.

        Raises:
            ConnectorError, StoreError: the pass stopped; what was stored stays.
        """
        name = self.connector.name
        claim = await self._store.claim_connector(name, self._holder, now=self._clock(), lease_s=self._lease_s)
        self._note_success(claim.state.last_success_at)
        if not claim.held:
            return "lease-held-elsewhere"
        cursor = claim.state.cursor
        while True:
            page = await self.connector.fetch_page(cursor, now=self._clock())
            await self.store_records(page.records)
            done = page.next_cursor is None
            now = self._clock()
            last = now if done else claim.state.last_success_at
            kept = await self._store.save_connector_state(
                name, self._holder, cursor="" if done else str(page.next_cursor), last_success_at=last,
                now=now, lease_s=self._lease_s,
            )
            if not kept:
                _log.warning("connector.lease_lost", connector=name)
                return "lease-held-elsewhere"
            if done:
                self._note_success(now)
                return "success"
            cursor = str(page.next_cursor)

    async def store_records(self, records: Sequence[ConnectorRecord | Rejected]) -> None:
        """Store a page's snapshots through the Ingestor, log each rejected record, and update the owner inventory.

        Raises:
            StoreError: the snapshots could not be stored.
        """
        name = self.connector.name
        good = [r for r in records if isinstance(r, ConnectorRecord)]
        for bad in records:
            if isinstance(bad, Rejected):
                _log.warning("connector.record_rejected", connector=name, ref=bad.ref, serial=bad.serial, field=bad.field, expected=bad.expected)
        outcomes = await self._ingestor.ingest([r.snapshot for r in good]) if good else ()
        stored = sum(1 for o in outcomes if o.value == "stored")
        self._count("seen", len(records))
        self._count("stored", stored)
        self._count("rejected", len(records) - len(good))
        self._ingestor.rejected(self.connector.source, len(records) - len(good))
        await self._assign_owners(good)

    async def _assign_owners(self, records: Sequence[ConnectorRecord]) -> None:
        """Owners the vendor's admins assigned become inventory entries, unless someone else set the serial's entry."""
        if self._owners is None:
            return
        by = f"connector:{self.connector.name}"
        edits: list[OwnerEdit] = []
        for record in records:
            if not record.assigned_owners:
                continue
            held = await self._owners.owners(record.snapshot.serial)
            if held is not None and (held.set_by != by or held.owners == record.assigned_owners):
                continue  # INVARIANT: an operator's own entry (CLI, API, import) always wins over a connector
            edits.append(OwnerEdit(record.snapshot.serial, record.assigned_owners, OwnerEditMode.REPLACE, by, self._clock(), OwnerSource.CONNECTOR))
        if edits:
            await self._owners.edit_owners(edits)

    async def refresh_device(self, serial: str) -> DeviceSnapshot | None:
        """Read one device from the vendor now and store it ("check again"); the stored snapshot, or None.

        Raises:
            ConnectorError, StoreError: the vendor or the store failed.
        """
        record = await self.connector.fetch_device(serial, now=self._clock())
        if record is None:
            return None
        await self.store_records([record])
        return record.snapshot if isinstance(record, ConnectorRecord) else None

    async def run(self) -> None:
        """Pass after pass, every ``every_s`` seconds, forever; failures are logged and counted, never raised."""
        name = self.connector.name
        while True:
            try:
                outcome = await self.sync_once()
            except (ConnectorError, StoreError) as exc:
                outcome = "failed"
                _log.warning("connector.sync_failed", connector=name, error=str(exc))
            if self._metrics is not None:
                self._metrics.connector_syncs.labels(connector=name, outcome=outcome).inc()
            if outcome == "success":
                _log.info("connector.synced", connector=name)
            await self._sleep(self._every_s)

    def _note_success(self, at: datetime | None) -> None:
        if at is None:
            return
        self.last_success_at = at
        if self._metrics is not None:
            self._metrics.connector_last_success.labels(connector=self.connector.name).set(at.timestamp())

    def _count(self, outcome: str, n: int) -> None:
        if self._metrics is not None and n:
            self._metrics.connector_records.labels(connector=self.connector.name, outcome=outcome).inc(n)
