"""Upstream responses through the production listener, for requests with and without a body.

The same upstream answer is fetched with a GET and with a POST (a HEAD, and a GET after a POST on one
connection, where it matters): bodies that end when the upstream closes, the limits on a response
head, the read timeout under a slow client, the request record.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from gateway.metrics import Metrics
from tests.conftest import LogLines
from tests.gateway.conftest import MakeGateway
from tests.gateway.fullstack import mac_item
from tests.gateway.proxy.test_lane import (  # noqa: F401  (gatehouse and raw_upstream are fixtures)
    FullStack, fresh_session, gatehouse, get, ingest, raw_upstream, read_response,
)

CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
BODY = b"z" * 100_000


def _route(upstream: str, **extra: object) -> dict[str, object]:
    return {"id": "app", "upstream": upstream, "tier": "low", **extra}


def post(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: svc", "Content-Length: 0", *extra]) + "\r\n\r\n").encode()


def close_delimited(head: bytes, _: int) -> bytes:
    """A response without a length, ended by closing the connection (no body for HEAD)."""
    return CLOSE_DELIMITED if head.startswith(b"HEAD ") else CLOSE_DELIMITED + BODY


class TestBodyEndedByClose:
    async def test_a_post_and_then_a_get_on_one_connection_get_the_whole_body(
        self, make_gateway: MakeGateway, raw_upstream: Callable[..., Any],
    ) -> None:
        """A body the upstream ends by closing reaches the client in full, for a POST and the GET after it on the same connection."""
        _, url = await raw_upstream(close_delimited, close=True)
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(post("/first"))
        first = await read_response(reader)
        writer.write(get("/second"))
        second = await read_response(reader)
        writer.close()

        assert (200, len(BODY)) == (first[0], len(first[2]))
        assert (200, len(BODY)) == (second[0], len(second[2]))

    async def test_head_gets_no_body_and_the_connection_goes_on(self, make_gateway: MakeGateway, raw_upstream: Callable[..., Any]) -> None:
        """A HEAD answered without a length has no body; the next request on the connection is answered cleanly."""
        _, url = await raw_upstream(close_delimited, close=True)
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(b"HEAD /first HTTP/1.1\r\nHost: svc\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(get("/second"))
        second = await read_response(reader)
        writer.close()

        assert head.startswith(b"HTTP/1.1 200 ")
        assert (200, len(BODY)) == (second[0], len(second[2]))

    async def test_a_get_on_a_new_connection_gets_the_whole_body(self, make_gateway: MakeGateway, raw_upstream: Callable[..., Any]) -> None:
        """A GET as the first request of its connection gets the whole body too."""
        _, url = await raw_upstream(close_delimited, close=True)
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/only"))
        status, _, body = await read_response(reader)
        writer.close()

        assert (200, len(BODY)) == (status, len(body))


GET_AND_POST = pytest.mark.parametrize("method", ["GET", "POST"])
"""A request without a body and one with (an empty) one: one proxy, the same answers."""


def ask(method: str, path: str, *extra: str) -> bytes:
    return get(path, *extra) if method == "GET" else post(path, *extra)


def answer_with(head_lines: bytes) -> Callable[[bytes, int], bytes]:
    return lambda head, _: b"HTTP/1.1 200 OK\r\n" + head_lines + b"Content-Length: 2\r\n\r\nok"


class TestResponseHeadLimits:
    @GET_AND_POST
    @pytest.mark.parametrize(
        "lines",
        [
            b"X-Big: " + b"b" * 9000 + b"\r\n",
            b"".join(b"X-H%03d: v\r\n" % i for i in range(130)),
            b"X-Big: " + b"b" * (16 * 1024 - 7) + b"\r\n",
            b"".join(b"X-H%03d: v\r\n" % i for i in range(255)),
            b"X-Big: " + b"b" * 16000 + b"\r\n" + b"X-Big: " + b"b" * 16000 + b"\r\n" + b"X-Big: " + b"b" * 16000 + b"\r\n",
        ],
        ids=["one-9000-byte-header", "130-headers", "a-16-KiB-line", "256-headers", "a-48-KiB-head"],
    )
    async def test_heads_within_the_limits_pass(
        self, make_gateway: MakeGateway, raw_upstream: Callable[..., Any], method: str, lines: bytes,
    ) -> None:
        """A response head within every limit is forwarded."""
        _, url = await raw_upstream(answer_with(lines))
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(ask(method, "/x"))
        status, _, body = await read_response(reader)
        writer.close()

        assert (200, b"ok") == (status, body)

    @GET_AND_POST
    @pytest.mark.parametrize(
        ("lines", "limit", "text"),
        [
            (b"X-Big: " + b"b" * (16 * 1024 - 6) + b"\r\n", "line", "has a line longer than 16384 bytes"),
            (b"".join(b"X-H%03d: v\r\n" % i for i in range(257)), "headers", "has more than 256 header lines"),
            ((b"X-Big: " + b"b" * 16000 + b"\r\n") * 5, "head", "is longer than 65536 bytes"),
        ],
        ids=["line", "headers", "head"],
    )
    async def test_heads_over_a_limit_are_502(
        self, log_lines: LogLines, make_gateway: MakeGateway, raw_upstream: Callable[..., Any],
        metrics: Metrics, method: str, lines: bytes, limit: str, text: str,
    ) -> None:
        """A response head over a limit is a 502, counted as a protocol error and logged with the limit's text."""
        _, url = await raw_upstream(answer_with(lines))
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(ask(method, "/x", "Accept: application/json"))
        status, _, body = await read_response(reader)
        writer.close()

        assert (502, b'"upstream-protocol"') == (status, b'"upstream-protocol"' if b'"upstream-protocol"' in body else body)
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "protocol"})
        refused = log_lines.events("upstream.refused")
        assert [(limit, f"the upstream's response head {text}")] == [(line["limit"], line["detail"]) for line in refused]


class TestReadTimeoutUnderBackPressure:
    @GET_AND_POST
    async def test_a_slow_client_is_served_in_full(self, make_gateway: MakeGateway, method: str, metrics: Metrics) -> None:
        """The read timeout never fires while the upstream waits for a client that reads slowly: the whole body arrives."""
        total, piece = 32 * 1024 * 1024, 64 * 1024
        sent = 0

        async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sent
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
                block = b"s" * piece
                while sent < total:
                    writer.write(block)
                    await writer.drain()
                    sent += piece
            except ConnectionError:
                pass
            finally:
                writer.close()

        upstream = await asyncio.start_server(respond, "127.0.0.1", 0)
        gw = await make_gateway([_route(f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}", read_timeout_s=0.1)])
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # before connecting: a small window, back-pressure soon
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", gw.port))
        reader, writer = await asyncio.open_connection(sock=client, limit=piece)
        try:
            writer.write(ask(method, "/download", "Connection: close"))
            await asyncio.sleep(0.5)  # five read timeouts without reading: a real wait, as the timeouts run on the loop's clock
            sent_while_paused = sent
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)  # then a large window, to read quickly
            status, _, body = await read_response(reader)
        finally:
            writer.close()
            upstream.close()

        assert sent_while_paused < total  # the upstream was held back by the slow client
        assert (200, total) == (status, len(body))
        assert None is metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "timeout"})


class TestRequestRecord:
    async def test_monitored_requests_log_the_same_fields_with_their_reason_for_get_and_post(
        self, log_lines: LogLines, gatehouse: FullStack,
    ) -> None:
        """A monitor-mode route lets a failing device through; a GET's and a POST's request.completed lines carry the same fields and the would-deny reason."""
        base, keys, clock, _, _ = gatehouse
        await ingest(base, mac_item("C02SHADOW01", at=clock(), sip_enabled=False))
        auth = {"Authorization": f"Bearer {keys.token('alice@example.com', device='C02SHADOW01', now=clock())}"}

        async with fresh_session() as session:
            async with session.get(f"{base}/shadow/x", headers=auth) as got:
                await got.read()
            async with session.post(f"{base}/shadow/x", headers=auth) as posted:
                await posted.read()

        lines = {line["request_id"]: line for line in log_lines.events("request.completed")}
        get_line, post_line = lines[got.headers["X-Request-Id"]], lines[posted.headers["X-Request-Id"]]
        assert (200, 200) == (got.status, posted.status)
        assert sorted(get_line) == sorted(post_line)
        assert ("would-deny", "checks-failed") == (get_line["decision"], get_line["reason"])
        assert ("would-deny", "checks-failed") == (post_line["decision"], post_line["reason"])

    def test_the_duration_metrics_say_where_they_start_and_end(self, metrics: Metrics) -> None:
        """The help of both duration histograms names their start and end points."""
        helps = {m.name: m.documentation for m in metrics.registry.collect()}

        assert "head has been read" in helps["gatehouse_request_duration_seconds"]
        assert "last byte" in helps["gatehouse_request_duration_seconds"]
        assert "starts getting a connection" in helps["gatehouse_upstream_duration_seconds"]
        assert "response head has been read" in helps["gatehouse_upstream_duration_seconds"]
