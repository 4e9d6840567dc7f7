"""The one proxy: every client connection, every proxied request, served at the protocol level.

Owns: Lane (per listener: connections, timeouts, shutdown; the worker's upstream pool), LaneConnection (one
client connection), LANE_SWEEP_S.
Must not import: app, gateway.serve (gateway.serve.server builds a Lane per listener; the app's keys give the lane its
config, gate, clock and metrics).

Every accepted connection is served here; its bytes are parsed by ``head.RequestParser`` (which
applies the limits of the HTTP front). For each request, in order:

1. refused by the parser (400, 414, 431, 505) → the error, and the connection closes;
2. the request id (a trusted proxy's ``X-Request-Id`` when safe, else a new one);
3. ``CONNECT`` → 405; the target canonicalised (``target.canonicalise``, 400 when ambiguous);
4. a path under the reserved prefixes (``/.gatehouse/``) is Gatehouse's own: that one request is
   passed to aiohttp's RequestHandler (``Lane.own``) on the same connection, re-framed from what was
   parsed, and aiohttp closes the connection after answering it (``middleware.request_context``
   marks every response so); a pipelined request after it is not read, and the client sends it again;
5. the route (``RouteTable.match_target``; 404 without one); ``Expect`` other than ``100-continue``
   → 417;
6. the gate: ``admit_now`` decides at once from memory when it can (a verified token or session at
   hand, a device, a policy decision that lets the request through); else ``prepare`` (verify a new
   token) and ``admit_now`` again; else ``admit``, which decides and may answer instead (a deny page,
   a login redirect, a break-glass use recorded first). Any failure inside the gate is a 500 and the
   request is never proxied;
7. allowed: the body limit (``max_body_bytes``; 413 naming it, by ``Content-Length`` before any
   byte goes upstream, or counted as a chunked body streams), ``100 Continue`` when the client asked
   for it (only now, after the decision), then the request goes upstream on a pooled keep-alive
   connection with the header rules of ``proxy.upstream_header_lines``; its body streams as it
   arrives (re-chunked when it came chunked), and the answer streams back.

Framing towards the client: the upstream's ``Content-Length`` is kept; a response that arrived whole
with its head and has no length gets one; otherwise an HTTP/1.1 client gets it chunked and an
HTTP/1.0 client gets it delimited by the connection's close. A HEAD response has no body; 204 and 304
have none either. Interim responses from the upstream (103 Early Hints and the like) are passed to
HTTP/1.1 clients; ``100 Continue`` is Gatehouse's own (it answers ``Expect``). A response whose
upstream breaks off after its head was sent is cut (the client connection is closed), never ended
cleanly. ``Date`` is added when the upstream sent none (RFC 9110 §6.6.1), and ``Server: Gatehouse``
when it sent no ``Server``.

Upgrades: a request asking to switch to a protocol the route lists in ``upgrades`` (WebSocket by
default) is decided like any other; allowed, it goes upstream with its ``Upgrade``; a ``101`` from the
upstream is passed on and the connection becomes a tunnel, bytes both ways until either side closes.
An ``Upgrade`` the route does not list is dropped and the request served as HTTP/1.1. An upstream
that answers an upgrade with anything but 101 is answered as usual, and the connection closes after.

Pipelining: requests are answered in order; while one is in flight the next ones are parsed and held
(at most ``PIPELINE_MAX_BYTES`` buffered before reading from the client pauses).

Timeouts use sweeps, not a timer per request: every LANE_SWEEP_S the exchanges in flight are checked
against their deadline, which means one thing per phase: connecting (``connect_timeout_s``), then
time without progress (``read_timeout_s``): while the request body is still arriving, progress is the
client's (a stall is 408), then the upstream's (a stall is 504). The deadline does not run while
reading from the upstream is paused because the client reads slowly (back-pressure). About once a
second (or each ``header_read_timeout_s`` when shorter) connections are checked against the head
timeout (a connection's first head is due ``header_read_timeout_s`` after it was accepted, whether
or not a byte arrived; a later one from its first byte) and, between requests, the keep-alive timeout.
A tunnel has no read timeout.

Every request ends in ``_complete``, whatever the outcome: ``record.RequestRecorder.completed`` writes
its one ``request.completed`` line and its metric updates, timed at ``metrics.RequestTimer``'s points.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any

import structlog
from aiohttp import web

from gateway.errors import GatewayError
from gateway.proxy.head import Message, Refusal, RequestParser
from gateway.proxy.pool import UpstreamConnection, UpstreamPool, upstream_address
from gateway.gate.admission import Admission
from gateway.keys import CONFIG, GATE, LIVE, METRICS, RECORDER, REQUEST_ID, ROUTE, TARGET
from gateway.metrics import RequestTimer
from gateway.web.pages import error_response, gateway_error_response
from gateway.proxy.rules import CLIENT_CLOSED_REQUEST, HOP_BY_HOP, SERVER_NAME, choose_request_id, upstream_error, upstream_header_lines
from gateway.request import Peer, RequestHead
from gateway.proxy.routing import Route, is_reserved
from gateway.config.settings import ServerSettings
from gateway.proxy.target import Target, canonicalise
from gateway.proxy.limits import HeadTooLarge

LANE_SWEEP_S = 0.1
"""How often exchanges in flight are checked against their deadlines."""
PIPELINE_MAX_BYTES = 64 * 1024
"""Bytes buffered from a client (a body not passed on yet, pipelined requests) before reading from it pauses."""

_log = structlog.get_logger("gateway.request")
_proxy_log = structlog.get_logger("gateway.proxy")
_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP) | {b"x-request-id"}
_NO_BODY_STATUSES = frozenset({204, 304})
_REASONS = {
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long", 417: b"Expectation Failed",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}
_SERVER_LINE = f"Server: {SERVER_NAME}\r\n".encode()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REFUSAL_CODES = {
    400: "bad-request", 414: "uri-too-long", 431: "headers-too-large", 501: "transfer-coding-not-served", 505: "http-version-not-supported",
}

# Phases of a connection's request in service
_IDLE, _DECIDING, _PROXYING, _TUNNEL, _OWN = range(5)


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
    """The proxy of one listener: its client connections, upstream pool and sweeps."""

    def __init__(
        self, app: web.Application, server: ServerSettings, *, own: Callable[[], asyncio.Protocol], pool: UpstreamPool | None = None,
    ) -> None:
        """``own()`` builds aiohttp's RequestHandler for one request to Gatehouse's own endpoints; ``pool`` is the
        worker's one upstream pool, shared by its listeners (a pool of the lane's own when None, closed with it)."""
        self.loop = asyncio.get_running_loop()
        self.app = app
        self.config = app[CONFIG]
        self.metrics = metrics = app[METRICS]
        self.gate = gate = app[GATE]
        self.admit_now: Callable[[Any, RequestHead, Route], Admission | None] | None = getattr(gate, "admit_now", None)
        self.prepare: Callable[[Any, RequestHead], Coroutine[Any, Any, bool]] | None = getattr(gate, "prepare", None)
        self.own = own
        self._own_pool = pool is None
        self.pool = pool if pool is not None else UpstreamPool(self.loop)
        self.connections: set[LaneConnection] = set()
        self.active: set[LaneConnection] = set()
        self.max_line = server.max_header_bytes
        self.max_headers = server.max_header_count
        self.max_head = server.max_head_bytes
        self.keepalive_s = server.keepalive_timeout_s
        self.head_timeout_s = server.header_read_timeout_s
        self.closing = False
        self._drained: asyncio.Future[None] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._slow_every = max(1, round(min(1.0, self.head_timeout_s) / LANE_SWEEP_S))
        self._ticks = 0
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(LANE_SWEEP_S, self._sweep)
        self.tally = metrics.tally
        self.recorder = recorder = app[RECORDER]
        recorder.refresh()  # logging is configured once, before the listeners start
        self.from_memory = metrics.child(metrics.gate_paths, "memory")
        self.awaited = metrics.child(metrics.gate_paths, "awaited")

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
        """``conn`` is closed for good (its last byte written out)."""
        self.connections.discard(conn)
        self.active.discard(conn)
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
        if self._own_pool:
            self.pool.close()
        self.tally.flush()


class LaneConnection(asyncio.Protocol):
    """One client connection: parses its requests and serves them one after the other."""

    __slots__ = (
        "lane", "transport", "peer", "parser", "phase", "head_deadline", "idle_deadline", "read_paused", "write_paused",
        "upstream_paused", "close_after", "_trust_for", "_trusted", "message", "head", "route", "admission", "request_id",
        "path", "timer", "deciding", "upstream", "connecting", "request_bytes", "key", "deadline", "head_sent", "chunked",
        "retried", "bytes_in", "bytes_out", "upstream_status", "body_chunked", "body_sent", "body_done", "expect_continue",
        "upgrading", "bound", "own", "target",
    )

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.parser: RequestParser | None = None
        self.phase = _IDLE
        self.head_deadline: float | None = None
        self.idle_deadline: float | None = None
        self.read_paused = False
        self.write_paused = False
        self.upstream_paused = False
        self.close_after = False
        self._trust_for: object = None
        self._trusted = False
        self.own: asyncio.Protocol | None = None
        """aiohttp's handler, while it serves a request to Gatehouse's own endpoints on this connection."""
        self._reset()

    def _reset(self) -> None:
        """Forget the request in service."""
        self.message: Message | None = None
        self.head: RequestHead | None = None
        self.route: Route | None = None
        self.admission: Admission | None = None
        self.request_id = ""
        self.path = ""
        self.timer: RequestTimer | None = None
        self.deciding: asyncio.Task[tuple[Admission, dict[str, Any]]] | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting: asyncio.Task[UpstreamConnection] | None = None
        self.request_bytes = b""
        self.key: tuple[str, str, int] = ("", "", 0)
        self.deadline = 0.0
        self.head_sent = False
        self.chunked = False
        self.retried = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_status: int | None = None
        self.body_chunked = False
        self.body_sent = 0
        self.body_done = False
        self.expect_continue = False
        self.upgrading: bytes | None = None
        """The ``Upgrade`` value sent upstream, for a request that may switch protocols."""
        self.target: Target | None = None
        self.bound: dict[str, Any] | None = None
        """What the gate bound for the log line (decision, user, device, reason), when it decided on the awaited path."""

    # --- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lane = self.lane
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:  # not a TCP socket
                pass
        self.peer = Peer(transport)
        self.parser = RequestParser(lane.app, self.peer, max_line=lane.max_line, max_headers=lane.max_headers, max_head=lane.max_head)
        lane.connections.add(self)
        self.head_deadline = lane.loop.time() + lane.head_timeout_s  # the first head is due from the start, silent or not
        if lane.closing:
            transport.close()

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == _TUNNEL:
            self.bytes_in += len(data)
            if self.upstream is not None:
                self.upstream.write(data)
            return
        parser = self.parser
        assert parser is not None  # INVARIANT: set in connection_made
        if phase == _OWN and (self.message is None or self.message.ended):
            return  # aiohttp answers one request and closes: what follows is not read
        if phase == _IDLE and self.head_deadline is None and not parser.messages:
            self.head_deadline = self.lane.loop.time() + self.lane.head_timeout_s  # a later head: due from its first byte
        parser.feed(data)
        self._pump()

    def eof_received(self) -> bool | None:
        if self.own is not None:
            return self.own.eof_received()
        if self.phase == _TUNNEL and self.upstream is not None:
            self.upstream.write_eof()
            return True  # the tunnel's other direction may still carry bytes
        return None  # the client closed its side: the connection closes

    def connection_lost(self, exc: BaseException | None) -> None:
        lane = self.lane
        lane.gone(self)
        if self.own is not None:
            own, self.own = self.own, None
            own.connection_lost(exc if isinstance(exc, Exception) or exc is None else None)
            return
        if self.deciding is not None:
            task, self.deciding = self.deciding, None
            task.cancel()
        if self.phase != _IDLE and self.head is not None:
            self._drop_upstream()
            self._complete(101 if self.phase == _TUNNEL else CLIENT_CLOSED_REQUEST)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.own is not None:
            self.own.pause_writing()
        elif self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.own is not None:
            self.own.resume_writing()
        elif self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()
            if self.route is not None and self.phase == _PROXYING:
                self.deadline = self.lane.loop.time() + self.route.read_timeout_s  # the pause was ours, not the upstream's

    # --- the driver ------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Move things on after any event: start the next request, pass body pieces on, pause or resume reading."""
        parser = self.parser
        if parser is None or self.transport is None:
            return
        refused = parser.refused
        if self.phase == _IDLE:
            messages = parser.messages
            if messages and messages[0].head is not None and (refused is None or messages[0].ended):
                self._start(messages[0])
            elif refused is not None:
                self._refuse(refused)
                return
        elif refused is not None and self.message is not None and not self.message.ended:
            self._abandon(refused)  # the body of the request in service cannot be read
            return
        message = self.message
        if message is not None and message.body and (self.phase == _PROXYING or self.phase == _OWN):
            self._pass_body(message)
        elif message is not None and message.ended and not self.body_done and self.phase in (_PROXYING, _OWN):
            self._pass_body(message)
        buffered = sum(m.buffered + (len(m.rest) if m.rest else 0) for m in parser.messages)
        if buffered > PIPELINE_MAX_BYTES or self.upstream_paused or len(parser.messages) > 16:
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
        elif self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _pass_body(self, message: Message) -> None:
        """Send the body pieces at hand to the upstream (or to aiohttp), framed as announced."""
        if self.phase == _OWN:
            sink: Callable[[bytes], None] | None = self.own.data_received if self.own is not None else None
        else:
            upstream = self.upstream
            if upstream is None or self.upstream_paused or upstream.closed:
                return
            sink = upstream.write
        if sink is None:
            return
        out: list[bytes] = []
        if message.body:
            pieces, message.body = message.body, []
            size = message.buffered
            message.buffered = 0
            self.bytes_in += size
            if self.phase == _PROXYING and self.route is not None and self.bytes_in > self.route.max_body_bytes:
                self._body_too_large()
                return
            self.body_sent += size
            if self.body_chunked:
                for piece in pieces:
                    out.append(b"%x\r\n" % len(piece))
                    out.append(piece)
                    out.append(b"\r\n")
            else:
                out.extend(pieces)
            if self.phase == _PROXYING and self.route is not None:
                self.deadline = self.lane.loop.time() + self.route.read_timeout_s  # the client made progress
        if message.ended and not self.body_done:
            self.body_done = True
            if self.body_chunked:
                out.append(b"0\r\n\r\n")
        if out:
            sink(b"".join(out))

    # --- starting a request ----------------------------------------------------------------------
    def _start(self, message: Message) -> None:
        lane = self.lane
        head = message.head
        assert head is not None and self.peer is not None  # INVARIANT: _pump starts only complete heads
        self.message, self.head = message, head
        self.timer = message.timer or RequestTimer()
        self.head_deadline = self.idle_deadline = None
        lane.active.add(self)
        lane.recorder.started()
        live = lane.config.current
        if self._trust_for is not live:
            self._trust_for, self._trusted = live, live.trusts(self.peer.remote)
        incoming = head.headers.get("X-Request-Id")
        self.request_id = choose_request_id(incoming, trusted=incoming is not None and self._trusted)
        if lane.closing:
            self.close_after = True
        if head.method == "CONNECT":
            self.phase = _DECIDING
            self.path = head.raw_path[:256]
            self._answer(error_response(
                head.headers.get("Accept", ""), status=405, code="method-not-allowed", request_id=self.request_id,
                detail="Gatehouse does not open CONNECT tunnels; send the request itself (GET, POST, ...) to the service's address",
            ), close=True)
            return
        try:
            target = canonicalise(head.raw_path, head.headers.getall("Host", ()))
        except GatewayError as exc:
            self.phase = _DECIDING
            self.path = head.raw_path.partition("?")[0][:256]
            self._answer(gateway_error_response(head.headers.get("Accept", ""), exc, request_id=self.request_id))
            return
        self.path = target.path
        self.target = target
        if is_reserved(target.path):
            self._serve_own(message)
            return
        self.phase = _DECIDING
        try:
            route = live.routes.match_target(target)
        except GatewayError as exc:  # a path that matches a more sensitive route only when case is ignored
            self._answer(gateway_error_response(head.headers.get("Accept", ""), exc, request_id=self.request_id))
            return
        if route is None:
            self._answer(error_response(head.headers.get("Accept", ""), status=404, code="no-route", request_id=self.request_id))
            return
        self.route = route
        expect = head.headers.get("Expect")
        if expect is not None:
            if expect.strip().lower() != "100-continue" or len(head.headers.getall("Expect")) > 1:
                self._answer(error_response(
                    head.headers.get("Accept", ""), status=417, code="expectation-failed", request_id=self.request_id,
                    detail=f"`Expect: {expect.strip()[:64]}` cannot be met; the only expectation Gatehouse meets is `100-continue`",
                ), close=True)
                return
            self.expect_continue = head.version == "1.1"
        if head.upgrade:
            self.upgrading = self._allowed_upgrade(head, route)
            if self.upgrading is None:
                assert self.parser is not None
                self.parser.resume()  # served as HTTP/1.1: what followed the head is the next request
        admission = None
        if lane.admit_now is not None:
            try:
                admission = lane.admit_now(lane.app, head, route)
            except Exception:  # the awaited path decides again and answers the failure (never a grant)
                admission = None
        if admission is not None:
            lane.tally.add(lane.from_memory)
            self._admitted(admission)
            return
        lane.tally.add(lane.awaited)
        head[REQUEST_ID] = self.request_id
        head[TARGET] = target
        head[LIVE] = live
        head[ROUTE] = route
        task = lane.loop.create_task(self._decide(head, route))
        self.deciding = task
        task.add_done_callback(self._decided)

    @staticmethod
    def _allowed_upgrade(head: RequestHead, route: Route) -> bytes | None:
        """The ``Upgrade`` value to send upstream: the offered protocols the route allows (None: serve as HTTP/1.1)."""
        offered = [t.strip() for v in head.headers.getall("Upgrade", ()) for t in v.split(",") if t.strip()]
        allowed = [t for t in offered if t.partition("/")[0].lower() in route.upgrades]
        return ", ".join(allowed).encode("latin-1", "replace") if allowed and head.method != "CONNECT" else None

    async def _decide(self, head: RequestHead, route: Route) -> tuple[Admission, dict[str, Any]]:
        """The awaited decision: verify what ``admit_now`` lacked, else the gate's full ``admit`` (which may answer)."""
        lane = self.lane
        structlog.contextvars.bind_contextvars(request_id=self.request_id)  # this task's own context
        if lane.prepare is not None and lane.admit_now is not None:
            if await lane.prepare(lane.app, head):
                try:
                    admission = lane.admit_now(lane.app, head, route)
                except Exception:
                    admission = None
                if admission is not None:
                    return admission, {}
        admission = await lane.gate.admit(head, route)
        return admission, structlog.contextvars.get_contextvars()

    def _decided(self, task: asyncio.Task[tuple[Admission, dict[str, Any]]]) -> None:
        if self.deciding is not task:
            return  # the client went away meanwhile
        self.deciding = None
        head = self.head
        assert head is not None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            accept = head.headers.get("Accept", "")
            if isinstance(exc, GatewayError):
                self._answer(gateway_error_response(accept, exc, request_id=self.request_id))
            else:
                _log.error("request.failed", request_id=self.request_id, exc_info=exc)
                self._answer(error_response(accept, status=500, code="internal-error", request_id=self.request_id))
            return
        admission, self.bound = task.result()
        self._admitted(admission)

    def _admitted(self, admission: Admission) -> None:
        self.admission = admission
        head, route = self.head, self.route
        assert head is not None and route is not None
        if admission.response is not None:
            self._answer(admission.response)
            return
        if head.content_length is not None and head.content_length > route.max_body_bytes:
            self._answer(self._too_large_page(), close=True)
            return
        lane = self.lane
        peer = head.peer
        target = self.target
        assert target is not None  # INVARIANT: set before routing
        lines = upstream_header_lines(
            head.raw_headers, peer=peer.remote, trusted=self._trusted, scheme=peer.scheme, host=target.host,
            request_id=self.request_id, inject=admission.inject, strip=admission.strip, drop_cookies=admission.drop_cookies,
        )
        self.key, base = upstream_address(route.upstream)
        lines.insert(0, head.method.encode("ascii") + b" " + base + target.forward_target.encode("utf-8", "surrogateescape") + b" HTTP/1.1\r\n")
        if head.chunked:
            self.body_chunked = True
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if self.upgrading is not None:
            lines.append(b"Connection: upgrade\r\nUpgrade: " + self.upgrading + b"\r\n")
        lines.append(b"\r\n")
        self.request_bytes = b"".join(lines)
        if not head.has_body:
            self.body_done = True
        if self.expect_continue and not self.body_done and self.message is not None and not self.message.body and self.transport is not None:
            self.transport.write(_CONTINUE)  # only now: the request is allowed
        self.phase = _PROXYING
        assert self.timer is not None
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
        assert self.route is not None and self.head is not None
        self.upstream = conn
        self.upstream_paused = False
        self.deadline = self.lane.loop.time() + self.route.read_timeout_s
        conn.send(self, self.request_bytes, reused=reused, head_only=self.head.method == "HEAD")
        if self.write_paused and conn.transport is not None:
            conn.transport.pause_reading()
        self._pump()  # the body at hand goes now

    # --- Gatehouse's own endpoints ---------------------------------------------------------------
    def _serve_own(self, message: Message) -> None:
        """Give this one request to aiohttp on this connection; aiohttp answers it and closes the connection."""
        lane = self.lane
        head = message.head
        transport = self.transport
        assert head is not None and transport is not None
        lane.tally.add(lane.metrics.in_flight, -1.0)  # aiohttp's middleware records it (the same RequestRecorder)
        lane.active.discard(self)
        self.phase = _OWN
        handler = lane.own()
        self.own = handler
        handler.connection_made(transport)
        if self.write_paused:
            handler.pause_writing()
        parts = [head.method.encode("ascii"), b" ", head.raw_path.encode("utf-8", "surrogateescape"), b" HTTP/", head.version.encode(), b"\r\n"]
        parts += [name + b": " + value + b"\r\n" for name, value in head.raw_headers]
        parts.append(b"\r\n")
        self.body_chunked = head.chunked
        self.body_done = not head.has_body
        handler.data_received(b"".join(parts))
        if message.rest:  # bytes after a protocol switch: aiohttp reads them as it would have
            handler.data_received(message.rest)
            message.rest = None

    # --- upstream callbacks ----------------------------------------------------------------------
    def upstream_writable(self, conn: UpstreamConnection, writable: bool) -> None:
        if conn is not self.upstream:
            return
        self.upstream_paused = not writable
        if writable and self.phase == _TUNNEL:
            if self.read_paused and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
            return
        if not writable and self.phase == _TUNNEL:
            if not self.read_paused and self.transport is not None:
                self.read_paused = True
                self.transport.pause_reading()
            return
        self._pump()

    def upstream_tunnel(self, conn: UpstreamConnection, data: bytes) -> None:
        if conn is not self.upstream or self.transport is None:
            return
        if data:
            self.bytes_out += len(data)
            self.transport.write(data)
            return
        # the upstream closed its side: so does Gatehouse, once what is queued is written out
        self.upstream = None
        conn.close()
        self.close_after = True
        self._complete(101)

    def upstream_progress(self, conn: UpstreamConnection) -> None:
        if conn is not self.upstream:
            return
        route = self.route
        transport = self.transport
        head = self.head
        assert route is not None and transport is not None and head is not None
        lane = self.lane
        self.deadline = lane.loop.time() + route.read_timeout_s
        out: list[bytes] = []
        if conn.interim:
            if head.version == "1.1" and not self.head_sent:
                for status, reason, headers in conn.interim:
                    out.append(b"HTTP/1.1 %d %s\r\n" % (status, reason))
                    out += [name + b": " + value + b"\r\n" for name, value, lower in headers if lower not in _HOP_BYTES]
                    out.append(b"\r\n")
            conn.interim.clear()
        if not self.head_sent:
            if not conn.head_ready:
                if out:
                    transport.write(b"".join(out))
                return
            if conn.switched and self.upgrading is None:
                self.upstream = None
                conn.close()
                self._fail("protocol")
                return
            assert self.timer is not None
            lane.tally.observe(lane.recorder.series(route.id, "2xx")[2], self.timer.upstream_took())
            self.upstream_status = conn.status if not conn.switched else 101
            out.append(self._response_head(conn))
            self.head_sent = True
            if conn.switched:
                self._begin_tunnel(conn, out)
                return
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
            if not self.body_done:  # answered before the whole request was sent: neither connection can go on
                conn.keep_alive = False
                self.close_after = True
            if self.upgrading is not None:
                self.close_after = True  # the client may have started speaking the new protocol
            conn.release()
            self._complete(conn.status)

    def _begin_tunnel(self, conn: UpstreamConnection, out: list[bytes]) -> None:
        """The upstream switched protocols: pass its 101 on, then bytes both ways."""
        transport = self.transport
        message = self.message
        assert transport is not None and message is not None
        transport.write(b"".join(out))
        self.phase = _TUNNEL
        self.lane.active.discard(self)  # a tunnel has no deadline; a shutdown still waits for it, then cuts it
        if message.rest:
            self.bytes_in += len(message.rest)
            conn.write(message.rest)
            message.rest = None
        if self.read_paused and not self.upstream_paused:
            self.read_paused = False
            transport.resume_reading()

    def _response_head(self, conn: UpstreamConnection) -> bytes:
        head = self.head
        assert head is not None
        parts = [b"HTTP/1.1 %d %s\r\n" % (101 if conn.switched else conn.status, conn.reason)]
        named = conn.connection_named
        upgrade = b""
        for name, value, lower in conn.headers:
            if lower == b"upgrade":
                upgrade = value
            if lower in _HOP_BYTES or lower in named or lower.startswith(b"proxy-"):
                continue
            parts.append(name + b": " + value + b"\r\n")
        if conn.switched:
            parts.append(b"Connection: upgrade\r\nUpgrade: " + (upgrade or self.upgrading or b"") + b"\r\n")
        elif conn.status not in _NO_BODY_STATUSES and head.method != "HEAD" and not conn.has_length:
            if conn.complete:
                parts.append(b"Content-Length: %d\r\n" % sum(len(c) for c in conn.chunks))
            elif head.version == "1.1":
                self.chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.close_after = True  # HTTP/1.0: the body ends with the connection
        if not conn.has_date:
            parts.append(_DATE.line())
        if not conn.has_server:
            parts.append(_SERVER_LINE)
        parts.append(b"X-Request-Id: " + self.request_id.encode() + b"\r\n")
        if not conn.switched and (not head.keep_alive or self.lane.closing or self.close_after or self.upgrading is not None):
            self.close_after = True
            parts.append(b"Connection: close\r\n")
        elif head.version == "1.0" and not conn.switched:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None:
        if conn is not self.upstream:
            return
        self.upstream = None
        if error == "closed" and conn.reused and not conn.received and not self.retried and not self.head_sent and self.body_sent == 0:
            self.retried = True  # the idle connection had been closed by the upstream: once more, on a new one
            self.body_done = not (self.head is not None and self.head.has_body)
            self._connect()
            return
        self._fail("protocol", conn.refused)

    # --- endings ---------------------------------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        """Called by the lane's sweep for a request in flight: time out connect, a stalled upload, or the upstream."""
        if self.phase != _PROXYING or self.route is None or now < self.deadline:
            return
        if self.write_paused and self.upstream is not None:
            return  # not reading from the upstream: the client is slow, the upstream is not late
        client_stalled = (
            self.connecting is None and self.upstream is not None and not self.upstream_paused and not self.body_done
            and not self.upstream.head_ready
        )
        if self.connecting is not None:
            task, self.connecting = self.connecting, None
            task.cancel()
        elif self.upstream is not None:
            conn, self.upstream = self.upstream, None
            conn.close()
        else:
            return
        if client_stalled:
            self._answer(error_response(
                self._accept(), status=408, code="request-timeout", request_id=self.request_id,
                detail=f"the request body stopped arriving for {self.route.read_timeout_s:g} s (the route's read_timeout_s)",
            ), close=True)
            return
        self._fail("timeout")

    def check_idle(self, now: float) -> None:
        """Called by the lane's sweep about once a second: keep-alive and head timeouts."""
        transport = self.transport
        if self.phase != _IDLE or transport is None:
            return
        if self.head_deadline is not None and now >= self.head_deadline:
            _log.info("connection.head_timeout", peer=str(transport.get_extra_info("peername")))
            transport.close()
        elif self.idle_deadline is not None and now >= self.idle_deadline and not (self.parser and self.parser.messages):
            transport.close()

    def close_when_idle(self) -> None:
        """Shutdown: close now when no request is in flight, else after its response."""
        self.close_after = True
        if self.phase == _IDLE and self.transport is not None:
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

    def _accept(self) -> str:
        return self.head.headers.get("Accept", "") if self.head is not None else ""

    def _too_large_page(self) -> web.Response:
        route = self.route
        assert route is not None
        return error_response(
            self._accept(), status=413, code="body-too-large", request_id=self.request_id,
            detail=f"route `{route.id}` accepts request bodies of at most {route.max_body_bytes} bytes (its max_body_bytes)",
        )

    def _body_too_large(self) -> None:
        """A chunked body went over the route's limit while it streamed."""
        self._drop_upstream()
        if self.head_sent:
            self._cut(413)
            return
        self._answer(self._too_large_page(), close=True)

    def _fail(self, kind: str, refused: HeadTooLarge | None = None) -> None:
        """The upstream failed (``connect``, ``timeout`` or ``protocol``): an error page, or a cut response."""
        route = self.route
        assert route is not None
        self.lane.metrics.upstream_errors.labels(route=route.id, kind=kind).inc()
        if self.head_sent:
            _proxy_log.warning("upstream.aborted", route=route.id, kind=kind)
            self._cut(self.upstream_status or 502)
            return
        error = upstream_error(kind, route, refused)
        self._answer(gateway_error_response(self._accept(), error, request_id=self.request_id))

    def _cut(self, status: int) -> None:
        """End a response whose head was sent without a clean end: the client sees it truncated."""
        self.close_after = True
        if self.transport is not None:
            self.transport.abort()
        self._complete(status)

    def _refuse(self, refusal: Refusal) -> None:
        """The parser refused the stream: answer, then close."""
        lane = self.lane
        self.phase = _DECIDING
        self.timer = RequestTimer()
        self.request_id = choose_request_id(None, trusted=False)
        lane.active.add(self)
        lane.recorder.started()
        self.path = "-"
        _log.info("request.malformed", status=refusal.status, reason=refusal.text)
        self._answer(error_response(
            "", status=refusal.status, code=_REFUSAL_CODES.get(refusal.status, "bad-request"), detail=refusal.text,
            request_id=self.request_id,
        ), close=True)

    def _abandon(self, refusal: Refusal) -> None:
        """The parser refused the body of the request in service: give it up, answer when nothing was sent yet, and close."""
        _log.info("request.malformed", status=refusal.status, reason=refusal.text)
        self.close_after = True
        if self.deciding is not None:
            task, self.deciding = self.deciding, None
            task.cancel()
        self._drop_upstream()
        if self.phase == _OWN or self.head_sent:
            if self.transport is not None:
                self.transport.abort()
            if self.phase != _OWN:
                self._complete(refusal.status)
            return
        self._answer(error_response(
            self._accept(), status=refusal.status, code=_REFUSAL_CODES.get(refusal.status, "bad-request"), detail=refusal.text,
            request_id=self.request_id,
        ), close=True)

    def _answer(self, response: web.StreamResponse, *, close: bool = False) -> None:
        """Send one of Gatehouse's own answers (an error, a deny page, a login redirect) for the request in service."""
        transport = self.transport
        head = self.head
        if close or (self.message is not None and not self.message.ended) or (head is not None and head.upgrade):
            self.close_after = True  # what the client still sends is not read
        if transport is None or transport.is_closing():
            self._complete(response.status)
            return
        body = response.body if isinstance(response, web.Response) and isinstance(response.body, (bytes, bytearray)) else b""
        parts = [b"HTTP/1.1 %d %s\r\n" % (response.status, _REASONS.get(response.status) or response.reason.encode("latin-1", "replace"))]
        for name, value in response.headers.items():
            if name.lower() in ("content-length", "connection", "transfer-encoding", "x-request-id", "server", "date"):
                continue
            parts.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        for morsel in response.cookies.values():
            parts.append(b"Set-Cookie: " + morsel.OutputString().encode("utf-8", "surrogateescape") + b"\r\n")
        parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.append(b"X-Request-Id: " + self.request_id.encode() + b"\r\n")
        parts.append(_DATE.line())
        parts.append(_SERVER_LINE)
        if self.close_after or self.lane.closing or (head is not None and not head.keep_alive):
            self.close_after = True
            parts.append(b"Connection: close\r\n")
        elif head is not None and head.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if head is None or head.method != "HEAD":
            parts.append(bytes(body))
            self.bytes_out = len(body)
        if self.timer is not None:
            self.timer.stop()  # the answer is ready to send
        transport.write(b"".join(parts))
        self._complete(response.status)

    def _complete(self, status: int) -> None:
        """Account for the request (metrics, log line), then serve what the client sent next."""
        lane = self.lane
        head = self.head
        if head is None and self.timer is None:
            return
        timer = self.timer or RequestTimer()
        route = self.route
        admission = self.admission
        bound = self.bound
        grant_id = None
        if bound:
            decision, user, device, reason = bound.get("decision"), bound.get("user"), bound.get("device"), bound.get("reason")
            grant_id = bound.get("grant_id")
        elif admission is not None:
            decision, user, device, reason = admission.decision, admission.user, admission.device, admission.reason
        else:
            decision = user = device = reason = None
        lane.recorder.completed(
            request_id=self.request_id, method=head.method if head is not None else "-", path=self.path,
            route=route.id if route is not None else None, tier=route.tier if route is not None else None,
            decision=decision, user=user, device=device, reason=reason, status=status, upstream_status=self.upstream_status,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out, duration=timer.stop(), grant_id=grant_id,
        )
        parser = self.parser
        message = self.message
        if parser is not None and message is not None and parser.messages and parser.messages[0] is message:
            parser.messages.popleft()
        phase = self.phase
        self._reset()
        self.phase = _IDLE
        lane.finished(self)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.close_after or phase == _TUNNEL:
            transport.close()
            return
        if lane.keepalive_s > 0:
            self.idle_deadline = lane.loop.time() + lane.keepalive_s
        if parser is not None and parser.messages and parser.messages[0].head is None:
            self.head_deadline = lane.loop.time() + lane.head_timeout_s  # the next head has started arriving
        self._pump()
