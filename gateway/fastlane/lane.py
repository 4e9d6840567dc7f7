"""The fast lane: client connections served at the protocol level, handed to aiohttp for anything else.

Owns: Lane (per gateway: connections, the upstream pool, timeouts, shutdown), LaneConnection (one
client connection), LANE_SWEEP_S.
Must not import: app, server (server.py builds a Lane per gateway and one LaneConnection per accepted
connection; the app's keys give the lane its config, gate, clock and metrics).

Every accepted connection starts here. For each request head the lane decides, before any side
effect, whether it can serve the request itself: a plain ``GET`` (see ``head.py``), a valid
canonical target (``target.canonicalise``) outside the reserved prefixes, a route, and a gate that
admits it at once (``Gate.admit_now``: a cached verified token or a session, a device, a policy
decision that lets the request through). Then the request goes upstream on a pooled keep-alive
connection and the answer streams back, with the same header rules (``proxy.upstream_header_lines``,
hop-by-hop removal both ways), request id, metrics (timed at ``metrics.RequestTimer``'s points) and
``request.completed`` line (the same fields, ``reason`` included) as the full path.

Anything else (another method, a body, an upgrade, a malformed or oversized head, a reserved path,
no route, no cached identity, a denial, break-glass, a gate without ``admit_now``) is handed over:
the connection's transport is given to aiohttp's RequestHandler with the bytes of the request from
its first byte, and aiohttp serves that connection from then on (the full path: error pages, login,
deny pages, bodies, WebSockets). A handover happens only between requests, so no byte is seen by
both. ``gatehouse_lane_requests_total{lane}`` counts requests served here and handovers.

Timeouts use sweeps, not a timer per request: every LANE_SWEEP_S the exchanges in flight are
checked against their connect and read deadlines. The read timeout means what it means on the full
path (aiohttp's ``sock_read``): time without upstream progress while Gatehouse is able to read. The
deadline moves with every upstream read, and it does not run while reading from the upstream is
paused because the client reads slowly (back-pressure); it starts afresh when reading resumes.
About once a second (or each ``header_read_timeout_s`` when shorter) connections are checked
against the head timeout (a connection's first head is due ``header_read_timeout_s`` after it was
accepted, whether or not a byte arrived; a later one from its first byte) and, between requests, the
keep-alive timeout. A handover keeps the head's deadline.

Framing towards the client: the upstream's ``Content-Length`` is kept; a response that arrived
whole with its head and has no length gets one; otherwise the body is sent chunked. A response whose
upstream breaks off after its head was sent is cut (the client connection is closed), never ended
cleanly. ``Date`` is added when the upstream sent none (RFC 9110 §6.6.1), and ``Server: Gatehouse``
when it sent no ``Server`` (as on the full path: no software version is ever named); nothing else
is added (the full path's aiohttp also adds, for a body without a type,
``Content-Type: application/octet-stream``; the lane leaves the type as the upstream sent it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any

import structlog
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict

from gateway.errors import GatewayError
from gateway.fastlane.head import HeadParser, Peer, RequestHead
from gateway.fastlane.pool import UpstreamConnection, UpstreamPool, upstream_address
from gateway.handlers import Admission, is_reserved
from gateway.keys import CONFIG, GATE, METRICS
from gateway.metrics import RequestTimer
from gateway.middleware import SERVER_NAME, choose_request_id, info_enabled
from gateway.pages import gateway_error_response
from gateway.proxy import CLIENT_CLOSED_REQUEST, HOP_BY_HOP, upstream_error, upstream_header_lines
from gateway.upstream_limits import HeadTooLarge
from gateway.routing import Route
from gateway.settings import ServerSettings
from gateway.target import canonicalise

LANE_SWEEP_S = 0.1
"""How often exchanges in flight are checked against their connect and read deadlines."""
HEAD_MAX_BYTES = 16 * 1024
"""A head longer than this (or than ``server.max_head_bytes``) is handed to aiohttp, which applies the configured limits."""
PIPELINE_MAX_BYTES = 64 * 1024
"""Bytes buffered from a client while its request is in flight before reading from it pauses."""

_log = structlog.get_logger("gateway.request")
_proxy_log = structlog.get_logger("gateway.proxy")
_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP) | {b"x-request-id"}
_NO_BODY_STATUSES = frozenset({204, 304})
_CODE_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
_ERROR_REASONS = {502: b"Bad Gateway", 504: b"Gateway Timeout"}
_SERVER_LINE = f"Server: {SERVER_NAME}\r\n".encode()


class _DateHeader:
    """``Date: ...\\r\\n`` for the current second, formatted once per second."""

    __slots__ = ("_second", "_line")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


_DATE = _DateHeader()


class Lane:
    """The fast lane of one gateway: its client connections, upstream pool and sweeps."""

    def __init__(self, app: Any, server: ServerSettings, *, fallback: Callable[[float | None], asyncio.Protocol]) -> None:
        """``fallback(head_deadline)`` builds the aiohttp RequestHandler a connection is handed to, keeping the
        deadline of a head still incomplete (None: the head is whole, or none has started)."""
        self.loop = asyncio.get_running_loop()
        self.app = app
        self.config = app[CONFIG]
        self.metrics = metrics = app[METRICS]
        gate = app[GATE]
        self.admit_now: Callable[[Any, RequestHead, Route], Admission | None] | None = getattr(gate, "admit_now", None)
        self.prepare: Callable[[Any, RequestHead], Coroutine[Any, Any, bool]] | None = getattr(gate, "prepare", None)
        self.fallback = fallback
        self.pool = UpstreamPool(self.loop)
        self.connections: set[LaneConnection] = set()
        self.active: set[LaneConnection] = set()
        self.max_line = server.max_header_bytes
        self.max_field = server.max_header_bytes
        self.max_headers = server.max_header_count
        self.max_head = min(HEAD_MAX_BYTES, server.max_head_bytes)
        """Heads longer than this go to aiohttp, which enforces ``server.max_head_bytes`` (431)."""
        self.keepalive_s = server.keepalive_timeout_s
        self.head_timeout_s = server.header_read_timeout_s
        self.closing = False
        self._drained: asyncio.Future[None] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._slow_every = max(1, round(min(1.0, self.head_timeout_s) / LANE_SWEEP_S))
        self._ticks = 0
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(LANE_SWEEP_S, self._sweep)
        self.tally = metrics.tally
        self.log_requests = info_enabled()
        """Whether ``request.completed`` lines are written (the log level is set once, at start)."""
        self._route_series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self.served = metrics.child(metrics.lane_requests, "fast")
        self.handed = metrics.child(metrics.lane_requests, "handed-over")

    def series(self, route: Route, code_class: str) -> tuple[Any, Any, Any]:
        """The (requests, request_duration, upstream_duration) children for a route and status class."""
        key = (route.id, code_class)
        found = self._route_series.get(key)
        if found is None:
            m = self.metrics
            found = self._route_series[key] = (
                m.child(m.requests, route.id, code_class), m.child(m.request_duration, route.id), m.child(m.upstream_duration, route.id),
            )
        return found

    def connection(self) -> LaneConnection:
        """The protocol for one accepted client connection."""
        return LaneConnection(self)

    def _sweep(self) -> None:
        self._timer = self.loop.call_later(LANE_SWEEP_S, self._sweep)  # first: a failing check must not stop the sweeps
        now = self.loop.time()
        for conn in list(self.active):
            conn.check_deadline(now)
        self._ticks += 1
        if self._ticks % self._slow_every == 0:
            for conn in list(self.connections):
                conn.check_idle(now)
            self.pool.expire(now)
            self.tally.flush()  # with workers the supervisor reads what each worker flushed

    def finished(self, conn: LaneConnection) -> None:
        """``conn`` has no request in flight any more."""
        self.active.discard(conn)

    def gone(self, conn: LaneConnection) -> None:
        """``conn`` is closed for good (its last byte written out) or was handed to aiohttp."""
        self.connections.discard(conn)
        if self._drained is not None and not self.connections and not self._drained.done():
            self._drained.set_result(None)

    async def shutdown(self, grace_s: float) -> None:
        """Close idle connections now, let requests in flight finish and their responses be written out
        for up to ``grace_s``, then cut the rest.

        Idempotent: a second call waits for the first one's shutdown.
        """
        if self._shutdown is None:
            self._shutdown = self.loop.create_task(self._shut_down(grace_s))
        await asyncio.shield(self._shutdown)

    async def _shut_down(self, grace_s: float) -> None:
        self.closing = True
        for conn in list(self.connections):
            conn.close_when_idle()
        if self.connections:  # each closes once its response is written out: transport.close() flushes first
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), grace_s)
            except asyncio.TimeoutError:
                pass
        for conn in list(self.connections):
            conn.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pool.close()
        self.tally.flush()


class LaneConnection(asyncio.Protocol):
    """One client connection: parses heads, serves plain GETs, hands everything else to aiohttp."""

    __slots__ = (
        "lane", "transport", "peer", "parser", "buffer", "head_deadline", "idle_deadline", "read_paused", "write_paused",
        "close_after", "_trust_for", "_trusted", "preparing", "route", "upstream", "connecting", "request_bytes", "key",
        "head", "admission", "request_id", "path", "timer", "deadline", "head_sent", "chunked", "retried",
        "bytes_out", "upstream_status",
    )

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.parser = HeadParser(max_line=lane.max_line, max_field=lane.max_field, max_headers=lane.max_headers)
        self.buffer = b""
        self.head_deadline: float | None = None
        self.idle_deadline: float | None = None
        self.read_paused = False
        self.write_paused = False
        self.close_after = False
        self._trust_for: object = None
        self._trusted = False
        # the request in flight (None between requests)
        self.preparing: asyncio.Task[bool] | None = None
        self.route: Route | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting: asyncio.Task[UpstreamConnection] | None = None
        self.request_bytes = b""
        self.key: tuple[str, str, int] = ("", "", 0)
        self.head: RequestHead | None = None
        self.admission: Admission | None = None
        self.request_id = ""
        self.path = ""
        self.timer: RequestTimer | None = None
        """The request's timing points, from its head having been read (kept while the gate prepares)."""
        self.deadline = 0.0
        self.head_sent = False
        self.chunked = False
        self.retried = False
        self.bytes_out = 0
        self.upstream_status: int | None = None

    # --- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lane = self.lane
        self.transport = transport  # type: ignore[assignment]
        tcp_keepalive(transport)  # type: ignore[arg-type]
        self.peer = Peer(transport)
        lane.connections.add(self)
        self.head_deadline = lane.loop.time() + lane.head_timeout_s  # the first head is due from the start, silent or not
        if lane.closing:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.route is not None or self.preparing is not None:  # busy: keep what follows (pipelining) for later
            self.buffer += data
            if len(self.buffer) > PIPELINE_MAX_BYTES and not self.read_paused and self.transport is not None:
                self.read_paused = True
                self.transport.pause_reading()
            return
        self._next(self.buffer + data if self.buffer else data)

    def eof_received(self) -> bool | None:
        return None  # as aiohttp: the client closed its side, the connection closes

    def connection_lost(self, exc: BaseException | None) -> None:
        lane = self.lane
        lane.gone(self)
        if self.preparing is not None:
            self.preparing.cancel()
            self.preparing = None
            lane.finished(self)
        if self.route is not None:
            self._drop_upstream()
            self._complete(CLIENT_CLOSED_REQUEST)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()
            if self.route is not None:
                self.deadline = self.lane.loop.time() + self.route.read_timeout_s  # the pause was ours, not the upstream's

    # --- requests --------------------------------------------------------------------------------
    def _next(self, buffer: bytes, *, prepared: bool = False) -> None:
        """Start the request at the front of ``buffer`` if its head is complete; keep the rest.

        ``prepared``: the gate's ``prepare`` ran for this request; it is not asked again.
        """
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self.lane.max_head or b"\n\n" in buffer or b"\n\r\n" in buffer:
                self._hand_over(buffer)  # too long for the lane, or lines ended by a bare LF: aiohttp judges
                return
            self.buffer = buffer
            if buffer and self.head_deadline is None:
                self.head_deadline = self.lane.loop.time() + self.lane.head_timeout_s
            return
        end += 4
        if not prepared:
            self.timer = RequestTimer()  # the head has been read
        transport = self.transport
        lane = self.lane
        if end > lane.max_head:
            self._hand_over(buffer)
            return
        assert transport is not None  # INVARIANT: data only arrives on a connected transport
        assert self.peer is not None  # INVARIANT: set with the transport
        head = self.parser.parse(buffer[:end] if end != len(buffer) else buffer, self.peer)
        if lane.closing and not prepared:
            transport.close()  # shutting down: no new requests on this connection
            return
        if head is None or lane.admit_now is None:
            self._hand_over(buffer)
            return
        live = lane.config.current
        try:
            target = canonicalise(head.raw_path, head.headers.getall("Host", ()))
            route = live.routes.match_target(target) if not is_reserved(target.path) else None
        except GatewayError:  # aiohttp's path answers it (400)
            self._hand_over(buffer)
            return
        if route is None:
            self._hand_over(buffer)
            return
        try:
            admission = lane.admit_now(lane.app, head, route)
        except Exception:  # the full path decides again and answers the failure (never a grant)
            admission = None
        if admission is None:
            if prepared or lane.prepare is None:
                self._hand_over(buffer)
                return
            self.buffer = buffer  # from this request's first byte: what follows is appended while preparing
            self.head_deadline = None
            lane.active.add(self)  # a shutdown waits for it like for a request in flight
            task = lane.loop.create_task(lane.prepare(lane.app, head))
            self.preparing = task
            task.add_done_callback(self._prepared)
            return
        self.buffer = buffer[end:]
        self.head_deadline = None
        self.idle_deadline = None
        self._begin(head, target.host, target.path, target.forward_target, route, admission, live)

    def _prepared(self, task: asyncio.Task[bool]) -> None:
        if self.preparing is not task:
            return  # the connection went away meanwhile
        self.preparing = None
        self.lane.finished(self)
        buffer, self.buffer = self.buffer, b""
        ok = not task.cancelled() and task.exception() is None and task.result()
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
        if ok:
            self.parser = HeadParser(max_line=self.lane.max_line, max_field=self.lane.max_field, max_headers=self.lane.max_headers)
            self._next(buffer, prepared=True)
        else:
            self._hand_over(buffer)

    def _hand_over(self, data: bytes) -> None:
        """Give this connection to aiohttp, starting with ``data`` (the current request from its first byte)."""
        lane = self.lane
        lane.tally.add(lane.handed)
        lane.gone(self)
        self.buffer = b""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if lane.closing:  # aiohttp is draining too: a connection it has not seen would outlive the app
            transport.close()
            return
        handler = lane.fallback(self.head_deadline)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.write_paused:
            handler.pause_writing()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        if data:
            handler.data_received(data)

    def _begin(self, head: RequestHead, host: str, path: str, forward_target: str, route: Route, admission: Admission, live: Any) -> None:
        lane = self.lane
        tally = lane.tally
        tally.add(lane.served)
        tally.add(lane.metrics.in_flight)
        lane.active.add(self)
        peer = head.peer
        if self._trust_for is not live:
            self._trust_for, self._trusted = live, live.trusts(peer.remote)
        incoming = head.headers.get("X-Request-Id")
        self.request_id = choose_request_id(incoming, trusted=incoming is not None and self._trusted)
        self.route, self.head, self.admission, self.path = route, head, admission, path
        self.head_sent = self.chunked = self.retried = False
        self.bytes_out = 0
        self.upstream_status = None
        lines = upstream_header_lines(
            head.raw_headers, peer=peer.remote, trusted=self._trusted, scheme=peer.scheme, host=host,
            request_id=self.request_id, inject=admission.inject, strip=admission.strip, drop_cookies=admission.drop_cookies,
        )
        self.key, base = upstream_address(route.upstream)
        lines.insert(0, b"GET " + base + forward_target.encode("utf-8", "surrogateescape") + b" HTTP/1.1\r\n")
        lines.append(b"\r\n")
        self.request_bytes = b"".join(lines)
        assert self.timer is not None  # INVARIANT: set when the head was read
        self.timer.upstream_begins()
        conn = lane.pool.take(self.key)
        if conn is not None:
            self._send(conn, reused=True)
        else:
            self._connect()

    def _connect(self) -> None:
        lane = self.lane
        assert self.route is not None
        self.deadline = lane.loop.time() + self.route.connect_timeout_s
        task = lane.loop.create_task(lane.pool.connect(self.key))
        self.connecting = task
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[UpstreamConnection]) -> None:
        if self.connecting is not task:  # abandoned (timeout, client gone): do not leak the connection
            if not task.cancelled() and task.exception() is None:
                task.result().close()
            return
        self.connecting = None
        if task.cancelled():
            return
        if task.exception() is not None:
            self._fail("connect")
            return
        self._send(task.result(), reused=False)

    def _send(self, conn: UpstreamConnection, *, reused: bool) -> None:
        assert self.route is not None
        self.upstream = conn
        self.deadline = self.lane.loop.time() + self.route.read_timeout_s
        conn.send(self, self.request_bytes, reused=reused)
        if self.write_paused and conn.transport is not None:
            conn.transport.pause_reading()

    # --- upstream callbacks ----------------------------------------------------------------------
    def upstream_progress(self, conn: UpstreamConnection) -> None:
        if conn is not self.upstream:
            return
        route = self.route
        transport = self.transport
        assert route is not None and transport is not None
        lane = self.lane
        self.deadline = lane.loop.time() + route.read_timeout_s
        out: list[bytes] = []
        if not self.head_sent:
            if not conn.head_ready:
                return
            assert self.timer is not None
            lane.tally.observe(lane.series(route, "2xx")[2], self.timer.upstream_took())
            self.upstream_status = conn.status
            out.append(self._response_head(conn))
            self.head_sent = True
        chunks = conn.chunks
        if chunks:
            for chunk in chunks:
                self.bytes_out += len(chunk)
                if self.chunked:
                    out.append(b"%x\r\n" % len(chunk))
                    out.append(chunk)
                    out.append(b"\r\n")
                else:
                    out.append(chunk)
            chunks.clear()
        if conn.complete and self.chunked:
            out.append(b"0\r\n\r\n")
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if conn.complete:
            self.upstream = None
            if self.write_paused and conn.transport is not None:
                conn.transport.resume_reading()
            conn.release()
            self._complete(conn.status)

    def _response_head(self, conn: UpstreamConnection) -> bytes:
        parts = [b"HTTP/1.1 %d %s\r\n" % (conn.status, conn.reason)]
        named = conn.connection_named
        for name, value, lower in conn.headers:
            if lower in _HOP_BYTES or lower in named or lower.startswith(b"proxy-"):
                continue
            parts.append(name + b": " + value + b"\r\n")
        if conn.status not in _NO_BODY_STATUSES and not conn.has_length:
            if conn.complete:
                parts.append(b"Content-Length: %d\r\n" % sum(len(c) for c in conn.chunks))
            else:
                self.chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
        if not conn.has_date:
            parts.append(_DATE.line())
        if not conn.has_server:
            parts.append(_SERVER_LINE)
        parts.append(b"X-Request-Id: " + self.request_id.encode() + b"\r\n")
        assert self.head is not None
        if not self.head.keep_alive or self.lane.closing:
            self.close_after = True
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None:
        if conn is not self.upstream:
            return
        self.upstream = None
        if error == "closed" and conn.reused and not conn.received and not self.retried and not self.head_sent:
            self.retried = True  # the idle connection had been closed by the upstream: once more, on a new one
            self._connect()
            return
        self._fail("protocol", conn.refused)

    # --- endings ---------------------------------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        """Called by the lane's sweep for a request in flight: time out connect or read."""
        if self.route is None or now < self.deadline:
            return
        if self.write_paused and self.upstream is not None:
            return  # not reading from the upstream: the client is slow, the upstream is not late
        if self.connecting is not None:
            task, self.connecting = self.connecting, None
            task.cancel()
        elif self.upstream is not None:
            conn, self.upstream = self.upstream, None
            conn.close()
        else:
            return
        self._fail("timeout")

    def check_idle(self, now: float) -> None:
        """Called by the lane's sweep about once a second: keep-alive and head timeouts."""
        transport = self.transport
        if self.route is not None or self.preparing is not None or transport is None:
            return
        if self.head_deadline is not None and now >= self.head_deadline:
            _log.info("connection.head_timeout", peer=str(transport.get_extra_info("peername")))
            transport.close()
        elif not self.buffer and self.idle_deadline is not None and now >= self.idle_deadline:
            transport.close()

    def close_when_idle(self) -> None:
        """Shutdown: close now when no request is in flight, else after its response."""
        self.close_after = True
        if self.route is None and self.preparing is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Shutdown after the grace period: cut the connection."""
        self._drop_upstream()
        if self.transport is not None:
            self.transport.abort()

    def _drop_upstream(self) -> None:
        if self.connecting is not None:
            task, self.connecting = self.connecting, None
            task.cancel()
        if self.upstream is not None:
            conn, self.upstream = self.upstream, None
            conn.close()

    def _fail(self, kind: str, refused: HeadTooLarge | None = None) -> None:
        """The upstream failed (``connect``, ``timeout`` or ``protocol``): an error page, or a cut response."""
        route = self.route
        transport = self.transport
        assert route is not None and transport is not None
        metrics = self.lane.metrics
        metrics.upstream_errors.labels(route=route.id, kind=kind).inc()
        if self.head_sent:
            _proxy_log.warning("upstream.aborted", route=route.id, kind=kind)
            self.close_after = True
            transport.abort()  # the client sees a truncated response, never a clean end
            self._complete(self.upstream_status or 502)
            return
        error = upstream_error(kind, route, refused)
        assert self.head is not None
        page = gateway_error_response(self.head.headers.get("Accept", ""), error, request_id=self.request_id)
        assert self.timer is not None
        self.timer.stop()  # the page is ready to send
        body = page.body if isinstance(page.body, bytes) else b""
        parts = [b"HTTP/1.1 %d %s\r\n" % (error.status, _ERROR_REASONS.get(error.status, b"Error"))]
        headers = CIMultiDict(page.headers)
        headers["Content-Length"] = str(len(body))
        headers["X-Request-Id"] = self.request_id
        if not self.head.keep_alive or self.lane.closing:
            self.close_after = True
            headers["Connection"] = "close"
        parts += [f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in headers.items()]
        parts.append(_DATE.line())
        parts.append(_SERVER_LINE)
        parts.append(b"\r\n")
        parts.append(body)
        transport.write(b"".join(parts))
        self.bytes_out = len(body)
        self._complete(error.status)

    def _complete(self, status: int) -> None:
        """Account for the request (metrics, log line), then serve what the client sent next."""
        lane = self.lane
        route = self.route
        if route is None:
            return
        tally = lane.tally
        tally.add(lane.metrics.in_flight, -1.0)
        assert self.timer is not None
        duration = self.timer.stop()
        requests, request_duration, _ = lane.series(route, _CODE_CLASSES.get(status // 100) or f"{status // 100}xx")
        tally.add(requests)
        tally.observe(request_duration, duration)
        if lane.log_requests:
            admission = self.admission
            _log.info(
                "request.completed",
                request_id=self.request_id, method="GET", path=self.path, route=route.id, tier=route.tier,
                decision=admission.decision if admission else None, user=admission.user if admission else None,
                device=admission.device if admission else None, reason=admission.reason if admission else None, status=status,
                upstream_status=self.upstream_status,
                bytes_in=0, bytes_out=self.bytes_out, duration_s=round(duration, 6),
            )
        self.route = None
        self.head = None
        self.admission = None
        lane.finished(self)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.close_after:
            transport.close()
            return
        if lane.keepalive_s > 0:
            self.idle_deadline = lane.loop.time() + lane.keepalive_s
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        if self.buffer:
            buffer, self.buffer = self.buffer, b""
            self._next(buffer)
