"""A lean HTTP/1.1 exchange with an upstream over the pooled session's own keep-alive connections.

Owns: send (one request out, its response head back), UpstreamResponse (status, headers, the
streamed body, and giving the connection back), connection_key.
Must not import: app, handlers, proxy (proxy.forward calls this and maps its errors).

``ClientSession.request`` does a lot per request that a proxy does not need: tracing hooks, the
cookie jar, redirects, auth, proxies from the environment, timeout and timer objects, a
ClientRequest and a ClientResponse with their header copies. This sends the same bytes on the
same pooled connections with aiohttp's own pieces only: the session's TCPConnector (the pool, its
keep-alive expiry and closing at shutdown), its ``ResponseHandler`` protocol and
``HttpResponseParser`` (the C parser, body streaming and flow control, the ``sock_read`` timer),
and ``StreamWriter`` (header serialisation and validation, chunked request bodies). The private
calls are the connector's ``_get`` (a pooled connection for a ConnectionKey without building a
ClientRequest; ``tests/gateway/test_upstream.py`` pins the key to the one aiohttp computes) and the
protocol's ``_parser``, put behind a ``HeadMeter`` so that a response head is held to
``gateway.upstream_limits`` (the fast lane's limits too) before aiohttp's parser buffers it.

Semantics kept from ClientSession: a response without a length (neither ``Content-Length`` nor
chunked) has a body that ends when the upstream closes the connection (RFC 9112 §6.3), as the fast
lane reads it too; a connection whose response was not read to its end is closed,
never reused; 1xx interim responses are skipped; a request without a body on a reused connection
that the upstream had closed meanwhile is retried once on a new connection when its method is
idempotent, as RFC 9112 §9.3.1 allows and aiohttp does; errors are aiohttp's (ClientConnectorError,
ConnectionTimeoutError, ServerDisconnectedError, SocketTimeoutError, ClientPayloadError) plus
HttpProcessingError for a malformed response head, and HeadTooLarge for one over the limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import lru_cache

import aiohttp
from aiohttp.client_exceptions import ClientOSError, ConnectionTimeoutError, ServerDisconnectedError, SocketTimeoutError
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest, ConnectionKey
from aiohttp.connector import Connection
from aiohttp.helpers import set_exception
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.upstream_limits import MAX_RESPONSE_HEAD_BYTES, MAX_RESPONSE_HEADERS, HeadMeter, HeadTooLarge

_SSL_SCHEMES = frozenset({"https", "wss"})
_EMPTY_BODY_METHODS = frozenset({"HEAD"})
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_READ_BUFSIZE = 2**16


@lru_cache(maxsize=256)
def connection_key(upstream: str) -> ConnectionKey:
    """The pool key aiohttp's ClientRequest gives a request to ``upstream`` (no proxy, default TLS checks)."""
    url = URL(upstream)
    return ConnectionKey(url.raw_host or "", url.port, url.scheme in _SSL_SCHEMES, True, None, None, None, None)


class UpstreamResponse:
    """The upstream's response head and its body as a stream; ``release`` hands the connection back."""

    __slots__ = ("status", "reason", "headers", "content", "_conn", "_writer")

    def __init__(
        self, status: int, reason: str, headers: CIMultiDictProxy[str], content: StreamReader, conn: Connection,
        writer: asyncio.Task[None] | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self._conn: Connection | None = conn
        self._writer = writer
        """The task still sending the request body, if any (an upstream may answer before reading it all)."""

    def release(self) -> None:
        """Return the connection to the pool when both messages are complete, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        writer, self._writer = self._writer, None
        complete = self.content.is_eof() and self.content.exception() is None
        if writer is not None and not writer.done():
            writer.cancel()
            complete = False
        if complete:
            conn.release()  # the connector still closes it when the protocol says it should
        else:
            conn.close()

    def close(self) -> None:
        """Close the connection: the exchange was abandoned."""
        self._conn, conn = None, self._conn
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
        if conn is not None:
            conn.close()


async def _connect(
    session: aiohttp.ClientSession, upstream: str, url: URL, *, connect_timeout: float | None,
) -> tuple[Connection, bool]:
    connector = session.connector
    if connector is None or session.closed:
        raise aiohttp.ClientConnectionError("the upstream session is closed")
    conn = await connector._get(connection_key(upstream), [])  # the pool's fast path: no request object
    if conn is not None:
        return conn, True
    loop = asyncio.get_running_loop()
    probe = ClientRequest("GET", url, loop=loop, ssl=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_timeout)
    try:
        return await connector.connect(probe, [], timeout), False
    except asyncio.TimeoutError as exc:
        if isinstance(exc, aiohttp.ClientError):
            raise
        raise ConnectionTimeoutError(f"Connection timeout to host {url}") from exc


async def _write_body(writer: StreamWriter, protocol: ResponseHandler, body: AsyncIterator[bytes], conn: Connection) -> None:
    try:
        async for chunk in body:
            await writer.write(chunk)
        await writer.write_eof()
    except OSError as exc:
        set_exception(protocol, ClientOSError(exc.errno, "Can not write request body"), exc)
        _hang_up(protocol)
    except asyncio.CancelledError:
        conn.close()
        raise
    except Exception as exc:
        set_exception(protocol, aiohttp.ClientConnectionError(f"Failed to send the request body: {exc!r}"), exc)
        _hang_up(protocol)
    else:
        protocol.start_timeout()


def _hang_up(protocol: ResponseHandler) -> None:
    """End an exchange whose request body could not be sent: a response already streaming ends with ClientPayloadError."""
    if protocol.transport is not None:
        protocol.transport.close()  # not conn.close(): that would drop the response body without ending it


async def send(
    session: aiohttp.ClientSession,
    method: str,
    upstream: str,
    target: str,
    headers: CIMultiDict[str],
    body: AsyncIterator[bytes] | None,
    *,
    connect_timeout: float | None,
    read_timeout: float | None,
) -> UpstreamResponse:
    """Send one request to ``upstream`` (``scheme://host:port`` and an optional base path) for ``target`` (path and query, raw).

    ``headers`` go out as given (Host included), plus ``Transfer-Encoding: chunked`` for a body of
    unknown length, or ``Content-Length: 0`` for a method other than GET, HEAD, OPTIONS and TRACE
    without one (what ClientSession adds).

    Raises:
        aiohttp.ClientError: connecting failed, timed out, or the exchange broke off before the head.
        asyncio.TimeoutError: the upstream did not answer within ``read_timeout``.
        HttpProcessingError: the upstream's response head is malformed.
        HeadTooLarge: the upstream's response head passed one of ``gateway.upstream_limits``.
    """
    url = URL(upstream + target, encoded=True)
    if body is not None:
        if "Content-Length" not in headers:
            headers["Transfer-Encoding"] = "chunked"
    elif method not in _NO_BODY_METHODS and "Content-Length" not in headers:
        headers["Content-Length"] = "0"
    status_line = f"{method} {url.raw_path_qs} HTTP/1.1"  # the upstream's own base path first, as ClientSession sends it
    loop = asyncio.get_running_loop()
    retry = body is None and method in _IDEMPOTENT
    while True:
        conn, reused = await _connect(session, upstream, url, connect_timeout=connect_timeout)
        try:
            return await _exchange(conn, loop, method, status_line, headers, body, read_timeout)
        except (ClientOSError, ServerDisconnectedError):
            if not (retry and reused):
                raise
            retry = False  # the idle connection had been closed by the upstream: once more, on a new one


async def _exchange(
    conn: Connection,
    loop: asyncio.AbstractEventLoop,
    method: str,
    status_line: str,
    headers: CIMultiDict[str],
    body: AsyncIterator[bytes] | None,
    read_timeout: float | None,
) -> UpstreamResponse:
    protocol = conn.protocol
    if protocol is None:
        raise ServerDisconnectedError()
    writer_task: asyncio.Task[None] | None = None
    head_timer: asyncio.TimerHandle | None = None
    try:
        # Without a body the head is awaited under one timer of ours, re-armed by each interim
        # response; the protocol's own timer (re-armed on every read) only runs for the body,
        # so a small response costs one timer instead of two. With a body the protocol times
        # the wait from the end of the upload, as ClientSession does.
        protocol.set_response_params(
            skip_payload=method in _EMPTY_BODY_METHODS, read_until_eof=True, auto_decompress=False,
            read_timeout=read_timeout if body is not None else None, read_bufsize=_READ_BUFSIZE,
            max_line_size=MAX_RESPONSE_HEAD_BYTES, max_field_size=MAX_RESPONSE_HEAD_BYTES, max_headers=MAX_RESPONSE_HEADERS,
        )  # aiohttp's own limits never bind before the meter's
        metered = protocol._parser = _MeteredParser(protocol._parser)  # type: ignore[assignment]  # a wrapper that forwards feed_data
        writer = StreamWriter(protocol, loop)
        if body is not None and "Transfer-Encoding" in headers:
            writer.enable_chunking()
        await writer.write_headers(status_line, headers)
        if body is None:
            writer.set_eof()
        else:
            writer_task = loop.create_task(_write_body(writer, protocol, body, conn))
        while True:
            if body is None and read_timeout:
                head_timer = loop.call_later(read_timeout, _head_timed_out, protocol)
            try:
                message, payload = await protocol.read()
            except HttpProcessingError:
                if metered.refused is not None:
                    raise metered.refused from None
                raise
            if head_timer is not None:
                head_timer.cancel()
                head_timer = None
            if not (100 <= message.code <= 199) or message.code == 101:
                break
        if body is None and read_timeout and not payload.is_eof():
            protocol.read_timeout = read_timeout
            protocol.start_timeout()
        return UpstreamResponse(message.code, message.reason, message.headers, payload, conn, writer_task)
    except BaseException:
        if head_timer is not None:
            head_timer.cancel()
        if writer_task is not None and not writer_task.done():
            writer_task.cancel()
        conn.close()
        raise


class _MeteredParser:
    """aiohttp's response parser behind a HeadMeter: a head over the limits fails before the parser holds it."""

    __slots__ = ("_parser", "_meter", "refused")

    def __init__(self, parser: object) -> None:
        self._parser = parser
        self._meter = HeadMeter()
        self.refused: HeadTooLarge | None = None

    def feed_data(self, data: bytes) -> object:
        if not self._meter.done:
            try:
                self._meter.feed(data)
            except HeadTooLarge as exc:
                self.refused = exc
                raise  # the protocol closes the connection and fails the read with HttpProcessingError
        return self._parser.feed_data(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._parser, name)


def _head_timed_out(protocol: ResponseHandler) -> None:
    protocol.set_exception(SocketTimeoutError("Timeout on reading data from socket"))
