"""aiohttp handlers of the ingest endpoints: the osquery TLS remote API and the JSON snapshot API.

Owns: add_ingest_routes and the handlers it registers (with an IngestRuntime: gateway.ingest.runtime),
body reading (size limit after decompression, its own gzip decoding, JSON).
Must not import: gateway.app (app.py calls add_ingest_routes).

Handlers read their dependencies from the app: STORE, SNAPSHOT_CACHE, INGEST_SETTINGS, CLOCK,
and optionally METRICS and COMPLIANCE_RECORDER (gateway/keys.py). A 200 is sent only after the
store committed what it acknowledges; a store failure answers 503 so senders retry.

HTTP-level errors (no token, a body too large, not JSON, not decompressible, a store outage) are
the one problem document of ``gateway.web.problem``. What osqueryd reads stays osquery's own:
``{"node_invalid": true}`` for an unknown node, and the per-item results of the snapshot API
(``{"index", "outcome", "errors": [{field, expected}]}``) are answers, not errors of the request.

Wiring in create_app (the store's own cleanup_ctx first)::

    add_ingest_routes(app)
    app.cleanup_ctx.append(ingest_background)
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.ingest import osquery
from gateway.config.ingest import IngestSettings
from gateway.ingest.pipeline import Ingestor, pause_between_chunks, run_history_prune
from gateway.ingest.runtime import IngestRuntime
from gateway.ingest.snapshot_parse import ItemError, parse_snapshot_item, serial_problem
from gateway.ingest.stethoscope import is_stethoscope_item, parse_stethoscope_item
from gateway.keys import (
    CLOCK, COMPLIANCE_RECORDER, INGEST_RUNTIME, INGEST_SETTINGS, METRICS, OSQUERY_ANSWERS, REQUEST_ID, SNAPSHOT_CACHE, STORE,
)
from gateway.store.snapshots import run_cache_refresh
from gateway.store.base import Enrollment, OsqueryConflict, PutOutcome, StoreError
from gateway.web.problem import problem_response
from policy_engine.model import DeviceSnapshot

_log = structlog.get_logger(__name__)

OSQUERY_PREFIX = "/.gatehouse/osquery"
SNAPSHOTS_PATH = "/.gatehouse/api/v1/snapshots"
_NODE_INVALID = orjson.dumps({"node_invalid": True})
_OK = orjson.dumps({"node_invalid": False})
_JSON = "application/json"

def add_ingest_routes(app: web.Application) -> None:
    """Register the osquery and snapshot API endpoints; the app must hold STORE, SNAPSHOT_CACHE, INGEST_SETTINGS and CLOCK."""
    app[INGEST_RUNTIME] = IngestRuntime()
    if OSQUERY_ANSWERS not in app:
        app[OSQUERY_ANSWERS] = {}
    app.router.add_post(f"{OSQUERY_PREFIX}/enroll", handle_enroll)
    app.router.add_post(f"{OSQUERY_PREFIX}/config", handle_config)
    app.router.add_post(f"{OSQUERY_PREFIX}/log", handle_log)
    app.router.add_post(f"{OSQUERY_PREFIX}/distributed/read", handle_distributed_read)
    app.router.add_post(f"{OSQUERY_PREFIX}/distributed/write", handle_distributed_write)
    app.router.add_post(SNAPSHOTS_PATH, handle_snapshots)


# -- helpers ------------------------------------------------------------------------------------


RETRY_AFTER_S = 5
"""What a 503 asks senders to wait before retrying (agents also back off by themselves)."""


def _error(request: web.Request, status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """An HTTP-level error as the one problem document (``gateway.web.problem``); a 503 asks senders to retry."""
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    return problem_response(status, code, detail, request_id=request.get(REQUEST_ID), headers=headers)


def _json(payload: bytes) -> web.Response:
    return web.Response(body=payload, content_type=_JSON)


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


_READ_CHUNK = 64 * 1024
_GZIP = zlib.MAX_WBITS | 16
"""zlib's window bits for a gzip stream (header and trailer checked)."""


def _too_large(request: web.Request, limit: int) -> _Refused:
    return _Refused(
        _error(request, 413, "body-too-large", f"the body is larger than `ingest.max_body_bytes` ({limit} bytes) after decompression; send smaller batches")
    )


def _body_decoder(request: web.Request) -> zlib._Decompress | None:
    """A gzip decoder for a ``Content-Encoding: gzip`` body, None for an identity body.

    The server hands request bodies through as sent (``auto_decompress`` is off, for proxied
    bodies), so the ingest endpoints decode their own.

    Raises:
        _Refused: 415 for any other encoding.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(_GZIP)
    raise _Refused(
        _error(request, 415, "unsupported-encoding", f"`Content-Encoding: {encoding[:40]}` is not supported; send `gzip` or `identity`")
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, decompressed, at most ``limit`` bytes; a gzip bomb never inflates past ``limit + 1`` in memory.

    Raises:
        _Refused: 413 when too large, 415 for an unknown encoding, 400 when not decompressible.
    """
    decoder = _body_decoder(request)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request, limit)
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(_READ_CHUNK):
            if decoder is None:
                body += chunk
            while decoder is not None and chunk:
                if decoder.eof:  # another gzip member follows (RFC 1952 allows several)
                    decoder = zlib.decompressobj(_GZIP)
                # INVARIANT: below max_length the decoder consumes all its input, so nothing is left in unconsumed_tail.
                body += decoder.decompress(chunk, limit + 1 - len(body))
                if len(body) > limit:
                    break
                chunk = decoder.unused_data
            if len(body) > limit:
                raise _too_large(request, limit)
        if decoder is not None and not decoder.eof:
            raise zlib.error("the gzip stream ends early")
    except (zlib.error, ValueError, web.RequestPayloadError, HttpProcessingError) as exc:
        raise _Refused(
            _error(request, 400, "bad-encoding", f"the body could not be read ({exc}); send valid gzip, or no Content-Encoding")
        ) from None
    return bytes(body)


async def _read_json(request: web.Request, limit: int) -> object:
    """The JSON body, at most ``limit`` bytes after decompression.

    Raises:
        _Refused: 413 when too large, 415 for an unknown encoding, 400 when not JSON or not decompressible.
    """
    body = await _read_body(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Refused(_error(request, 400, "bad-json", f"the body is not JSON ({exc}); send a JSON document")) from None


def _ingestor(app: web.Application) -> Ingestor:
    return Ingestor(
        store=app[STORE],
        cache=app.get(SNAPSHOT_CACHE),
        metrics=app.get(METRICS),
        recorder=app.get(COMPLIANCE_RECORDER),
        throttle=app[INGEST_RUNTIME].throttle,
    )


def _now(app: web.Application) -> datetime:
    clock: Callable[[], datetime] = app[CLOCK]
    return clock()


# -- osquery ------------------------------------------------------------------------------------


def _node_key(request: web.Request, body: object) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "nodekey" and value.strip():
        return value.strip()
    if isinstance(body, dict) and isinstance(body.get("node_key"), str) and body["node_key"]:
        return str(body["node_key"])
    return None


async def _enrollment(request: web.Request, body: object) -> Enrollment | None:
    """The active enrollment of the request's node key, or None (unknown, revoked, absent, or a serial
    enrolled before today's serial rule that it fails: the agent enrolls again and is refused)."""
    node_key = _node_key(request, body)
    if node_key is None:
        return None
    enrollment = await request.app[STORE].enrollment_by_node_key(node_key)
    if enrollment is None or not enrollment.active or serial_problem(enrollment.serial) is not None:
        return None
    return enrollment


async def _osquery_body(request: web.Request) -> object:
    return await _read_json(request, request.app[INGEST_SETTINGS].max_body_bytes)


async def handle_enroll(request: web.Request) -> web.StreamResponse:
    """osquery enroll: check the secret and serial, answer a fresh node key or ``node_invalid``."""
    app = request.app
    settings = app[INGEST_SETTINGS]
    metrics = app.get(METRICS)
    try:
        body = await _osquery_body(request)
        enroll = osquery.parse_enroll(body)
    except _Refused as refused:
        return refused.response
    except osquery.OsqueryRequestError as exc:
        _log.warning("osquery.enroll_refused", reason="bad-serial", detail=str(exc))
        if metrics is not None:
            metrics.enrollments.labels(outcome="bad-serial").inc()
        return _json(_NODE_INVALID)
    if not any(secret.matches(enroll.enroll_secret) for secret in settings.osquery_enroll_secrets):
        _log.warning("osquery.enroll_refused", reason="bad-secret")
        if metrics is not None:
            metrics.enrollments.labels(outcome="bad-secret").inc()
        return _json(_NODE_INVALID)
    node_key = osquery.new_node_key()
    try:
        await _note_conflict(app, enroll, now=_now(app))
        await app[STORE].create_enrollment(
            node_key=node_key,
            serial=enroll.serial,
            host_identifier=enroll.host_identifier,
            details=enroll.details,
            now=_now(app),
        )
    except StoreError as exc:
        _log.error("osquery.enroll_failed", error=str(exc))
        if metrics is not None:
            metrics.enrollments.labels(outcome="store-error").inc()
            metrics.store_errors.labels(operation="create_enrollment").inc()
        return _error(request, 503, "store-unavailable", "the store is unavailable; the agent will retry")
    _log.info("osquery.enrolled", platform=enroll.details.platform)
    if metrics is not None:
        metrics.enrollments.labels(outcome="enrolled").inc()
    return _json(orjson.dumps({"node_key": node_key, "node_invalid": False}))


async def _note_conflict(app: web.Application, enroll: osquery.EnrollRequest, *, now: datetime) -> None:
    """Flag a node enrolling a serial whose active node has another host identifier (the newcomer takes over its reports).

    Raises:
        StoreError: the store could not be read or written.
    """
    store = app[STORE]
    others = [e for e in await store.active_enrollments(enroll.serial) if e.host_identifier != enroll.host_identifier]
    if not others:
        return
    previous = others[-1].host_identifier
    _log.warning("osquery.enroll_conflict", serial=enroll.serial, previous_host=previous, new_host=enroll.host_identifier)
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.osquery_enroll_conflicts.inc()
    await store.record_osquery_conflict(OsqueryConflict(enroll.serial, previous, enroll.host_identifier, now))


async def handle_config(request: web.Request) -> web.StreamResponse:
    """osquery config: the posture pack with decorators and intervals."""
    try:
        body = await _osquery_body(request)
        if await _enrollment(request, body) is None:
            return _json(_NODE_INVALID)
    except _Refused as refused:
        return refused.response
    except StoreError:
        return _error(request, 503, "store-unavailable", "the store is unavailable; the agent will retry")
    return _json(osquery.config_document(request.app[INGEST_SETTINGS]))


async def handle_log(request: web.Request) -> web.StreamResponse:
    """osquery logger: result logs become the device's snapshot; status logs are logged."""
    app = request.app
    try:
        body = await _osquery_body(request)
        enrollment = await _enrollment(request, body)
    except _Refused as refused:
        return refused.response
    except StoreError:
        return _error(request, 503, "store-unavailable", "the store is unavailable; the agent will retry")
    if enrollment is None:
        return _json(_NODE_INVALID)
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return _error(request, 400, "bad-log", "a log request needs `log_type` and a `data` list")
    log_type = body.get("log_type")
    if log_type == "status":
        _log_status(body["data"], enrollment)
        return _json(_OK)
    if log_type != "result":
        return _json(_OK)
    now = _now(app)
    skew = timedelta(seconds=app[INGEST_SETTINGS].max_future_skew_s)
    items: list[osquery.ResultItem] = []
    for done, raw in enumerate(body["data"], start=1):
        await pause_between_chunks(done)
        try:
            item = osquery.normalize_result(raw, now=now, max_future_skew=skew)
        except osquery.OsqueryRequestError as exc:
            # The agent cannot fix a bad line by retrying it: acknowledge and count it.
            _log.warning("osquery.result_refused", detail=str(exc))
            _ingestor(app).rejected("osquery")
            continue
        if item.serial and item.serial != enrollment.serial:
            _log.warning("osquery.serial_mismatch", enrolled=enrollment.serial, decorated=item.serial)
        items.append(item)
    try:
        await _apply_osquery_items(app, enrollment, items, now=now)
    except StoreError as exc:
        _log.error("osquery.log_failed", error=str(exc))
        return _error(request, 503, "store-unavailable", "the store is unavailable; the agent will retry")
    return _json(_OK)


def _log_status(lines: list[object], enrollment: Enrollment) -> None:
    for line in lines:
        if not isinstance(line, dict):
            continue
        severity = line.get("severity")
        try:
            level = int(severity) if isinstance(severity, (int, str)) else 0
        except ValueError:
            level = 0
        if level >= 1:
            _log.warning(
                "osquery.agent_reported",
                severity=("info", "warning", "error", "fatal")[min(level, 3)],
                message=str(line.get("message", ""))[:500],
                file=str(line.get("filename", ""))[:100],
                host=enrollment.host_identifier,
            )


async def _apply_osquery_items(
    app: web.Application, enrollment: Enrollment, items: list[osquery.ResultItem], *, now: datetime
) -> None:
    async with app[INGEST_RUNTIME].device_lock(enrollment.serial):
        await _ingestor(app).ingest_osquery(enrollment, items, now=now)


async def handle_distributed_read(request: web.Request) -> web.StreamResponse:
    """osquery distributed read: queries queued for this device (a "check again" refresh), with ``accelerate``."""
    app = request.app
    try:
        body = await _osquery_body(request)
        enrollment = await _enrollment(request, body)
        if enrollment is None:
            return _json(_NODE_INVALID)
        pending = await app[STORE].pending_queries(enrollment.serial)
    except _Refused as refused:
        return refused.response
    except StoreError:
        return _error(request, 503, "store-unavailable", "the store is unavailable; the agent will retry")
    answer: dict[str, object] = {"queries": {q.query_id: q.sql for q in pending}, "node_invalid": False}
    accelerate = app[INGEST_SETTINGS].osquery_intervals.accelerate_s
    if pending and accelerate:
        answer["accelerate"] = accelerate
    return _json(orjson.dumps(answer))


async def handle_distributed_write(request: web.Request) -> web.StreamResponse:
    """osquery distributed write: answers to queued queries update the device's snapshot at once."""
    app = request.app
    store = app[STORE]
    try:
        body = await _osquery_body(request)
        enrollment = await _enrollment(request, body)
        if enrollment is None:
            return _json(_NODE_INVALID)
        if not isinstance(body, dict):
            return _error(request, 400, "bad-write", "a distributed write needs `queries` and `statuses` objects")
        now = _now(app)
        pending = await store.pending_queries(enrollment.serial)
        handlers = app[OSQUERY_ANSWERS]
        reserved = [(q, h) for q in pending for p, h in handlers.items() if q.query_name.startswith(p)]
        reserved_ids = {q.query_id for q, _ in reserved}
        items, answered = osquery.distributed_results([q for q in pending if q.query_id not in reserved_ids], body, now=now)
        await _apply_osquery_items(app, enrollment, items, now=now)
        await store.complete_pending_queries(enrollment.serial, answered)
        for query, handler in reserved:
            rows = osquery.reserved_answer(query, body)
            if rows is not False:
                await handler(app, enrollment, query, rows, now)
    except _Refused as refused:
        return refused.response
    except osquery.OsqueryRequestError as exc:
        return _error(request, 400, "bad-write", str(exc))
    except StoreError:
        return _error(request, 503, "store-unavailable", "the store is unavailable; the agent will retry")
    return _json(_OK)


# -- JSON snapshot API --------------------------------------------------------------------------


def ingest_caller_authorized(request: web.Request, settings: IngestSettings) -> bool:
    """True when the request carries ``Authorization: Bearer`` with one of ``ingest.api_tokens`` (the snapshot and owner APIs)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    return any(secret.matches(token) for secret in settings.api_tokens)


async def handle_snapshots(request: web.Request) -> web.StreamResponse:
    """``POST /.gatehouse/api/v1/snapshots``: a batch of snapshots (ours or Stethoscope's), per-item outcomes."""
    app = request.app
    settings = app[INGEST_SETTINGS]
    if not ingest_caller_authorized(request, settings):
        return _error(request, 401, "unauthenticated", "send `Authorization: Bearer <ingest token>` with a token from `ingest.api_tokens`",
                      headers={"WWW-Authenticate": 'Bearer realm="gatehouse-ingest"'})
    try:
        body = await _read_json(request, settings.max_body_bytes)
    except _Refused as refused:
        return refused.response
    if is_stethoscope_item(body):
        raw_items: object = [body]
    elif isinstance(body, dict):
        raw_items = body.get("snapshots")
    else:
        raw_items = body
    if not isinstance(raw_items, list):
        return _error(request, 400, "bad-batch", 'the body holds no list of snapshots; send `{"snapshots": [...]}` or a JSON array of snapshot items')
    if len(raw_items) > settings.max_batch_items:
        return _error(request, 413, "batch-too-large", f"the batch has {len(raw_items)} items; send at most {settings.max_batch_items} per request")
    now = _now(app)
    skew = timedelta(seconds=settings.max_future_skew_s)
    results: list[dict[str, object]] = [{} for _ in raw_items]
    good: list[tuple[int, DeviceSnapshot]] = []
    ingestor = _ingestor(app)
    for index, item in enumerate(raw_items):
        await pause_between_chunks(index + 1)
        where = f"snapshots[{index}]"
        try:
            if is_stethoscope_item(item):
                reading = parse_stethoscope_item(item, where=where, received_at=now, max_future_skew=skew)
                ingestor.disagreed(reading.snapshot.serial, reading.disagreements)
                snapshot = reading.snapshot
            else:
                snapshot = parse_snapshot_item(item, where=where, received_at=now, max_future_skew=skew)
        except ItemError as exc:
            results[index] = {"index": index, "outcome": "rejected", "errors": [p.as_dict() for p in exc.problems]}
            source = "stethoscope" if is_stethoscope_item(item) else "api"
            ingestor.rejected(source)
            continue
        good.append((index, snapshot))
    try:
        outcomes = await ingestor.ingest([s for _, s in good])
    except StoreError as exc:
        _log.error("ingest.store_failed", error=str(exc))
        return _error(request, 503, "store-unavailable", "nothing from this request was stored; retry later")
    stored = 0
    for (index, snapshot), outcome in zip(good, outcomes, strict=True):
        stored += outcome is PutOutcome.STORED
        results[index] = {"index": index, "serial": snapshot.serial, "outcome": outcome.value}
    rejected = sum(1 for r in results if r.get("outcome") == "rejected")
    _log.info("ingest.batch_received", items=len(raw_items), stored=stored, rejected=rejected)
    return _json(orjson.dumps({"results": results, "stored": stored, "rejected": rejected}))


# -- background work and "check again" ------------------------------------------------------------


async def ingest_background(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: load the snapshot cache, then keep it refreshed and the history pruned until shutdown.

    Needs STORE, SNAPSHOT_CACHE, INGEST_SETTINGS and CLOCK; the store itself is opened and closed by
    the app's own cleanup_ctx, registered before this one.

    Raises:
        OsqueryRequestError: the configured osquery pack cannot be loaded (checked before serving).
        StoreError: the cache could not be loaded.
    """
    cache = app[SNAPSHOT_CACHE]
    settings = app[INGEST_SETTINGS]
    osquery.config_document(settings)
    await cache.load()
    tasks = [
        asyncio.create_task(run_cache_refresh(cache, metrics=app.get(METRICS)), name="snapshot-cache-refresh"),
        asyncio.create_task(
            run_history_prune(app[STORE], retention_days=settings.history_retention_days, clock=app[CLOCK]),
            name="history-prune",
        ),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def request_osquery_refresh(app: web.Application, serial: str) -> int | None:
    """Ask the device's osquery agent for fresh posture results ("check again").

    Queues the platform's posture queries for the agent's next distributed read (with
    ``accelerate``). Returns the seconds the user may have to wait for them, or None when the
    device does not report through osquery. Queries already waiting are not queued twice.

    Raises:
        StoreError: the queries could not be queued.
    """
    snapshot = app[SNAPSHOT_CACHE].get(serial)
    if snapshot is None or snapshot.source != "osquery":
        return None
    settings = app[INGEST_SETTINGS]
    store = app[STORE]
    if not await store.pending_queries(serial):
        queries = osquery.refresh_queries(serial, snapshot.platform, osquery.pack_for(settings), now=_now(app))
        await store.add_pending_queries(queries)
    return settings.osquery_intervals.distributed_interval_s
