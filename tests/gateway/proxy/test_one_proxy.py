"""One proxy: every HTTP behaviour of a proxied request, pinned through the production listener.

Each test starts a whole Gatehouse with ``gateway.serve.server.start_gateway`` (the listener, handlers and
settings ``gatehouse serve`` uses): the example policy, users signed in with an ES256 JWT, the device
named by a claim of that verified token, and health snapshots ingested through Gatehouse's own API.
A healthy Mac (``HEALTHY``) is allowed on the ``low`` tier, a Mac with its disk unencrypted
(``FAILING``) is denied. Requests go through raw sockets wherever a client library would hide the
bytes; upstreams are real servers on 127.0.0.1 that record what reached them.

Nothing here reads or imports the lane internals (``gateway.proxy``): whichever implementation
forwards requests, these behaviours must hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from gateway.metrics import Metrics
from gateway.serve.server import Gateway, start_gateway
from tests.conftest import LogLines
from tests.gateway.conftest import RawUpstream
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item

ALICE = "alice@example.com"
HEALTHY = "C02ONEPROXY1"
FAILING = "C02ONEPROXY2"
TIMEOUT_S = 10


# ---------------------------------------------------------------- upstreams


@dataclass
class Arrival:
    """One request as the upstream received it: its head as sent, and its body de-chunked."""

    head: bytes
    body: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def method(self) -> str:
        return self.request_line.split(b" ")[0].decode()

    @property
    def target(self) -> str:
        return self.request_line.split(b" ")[1].decode()

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (any letter case), in order."""
        return [v for k, v in _header_lines(self.head) if k == name.lower()]


Answer = Callable[[Arrival, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request on the writer (the reader for what follows a 101); False closes the connection afterwards."""


def summary(arrival: Arrival) -> bytes:
    """200 with ``METHOD target body-length`` as its body (the head alone for HEAD)."""
    text = f"{arrival.method} {arrival.target} {len(arrival.body)}".encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(text)
    return head if arrival.method == "HEAD" else head + text


def replying(make: Callable[[Arrival], bytes]) -> Answer:
    """An Answer that writes ``make(arrival)`` and keeps the connection."""

    async def answer(arrival: Arrival, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(make(arrival))
        await writer.drain()
        return True

    return answer


SUMMARY = replying(summary)
"""The default answer: 200 with ``METHOD target body-length``."""


class Upstream(RawUpstream):
    """The shared raw upstream, answering with an ``Answer`` and showing each request body as it streams.

    ``body_bytes`` counts every body byte received, ``progress`` is set on each piece, so a test can
    see a body stream and can see that no more than a limit ever arrived.
    """

    def __init__(self, answer: Answer = SUMMARY) -> None:
        super().__init__()
        self.answer = answer
        self.arrivals: list[Arrival] = []
        self.body_bytes = 0
        self.partial = bytearray()
        self.progress = asyncio.Event()

    async def until_received(self, size: int) -> None:
        """Wait until ``size`` bytes of the current request's body have arrived."""
        async with asyncio.timeout(TIMEOUT_S):
            while len(self.partial) < size:
                self.progress.clear()
                await self.progress.wait()

    def _got(self, piece: bytes) -> None:
        self.partial += piece
        self.body_bytes += len(piece)
        self.progress.set()

    async def _read_body(self, reader: asyncio.StreamReader, head: bytes) -> bytes:
        self.partial = bytearray()
        return await super()._read_body(reader, head)

    async def _answer(self, head: bytes, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        arrival = Arrival(head, body)
        self.arrivals.append(arrival)
        return await self.answer(arrival, reader, writer)


async def echo_tunnel(arrival: Arrival, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Switch to the protocol asked for, then send back every byte as ``echo:<bytes>`` until the peer closes."""
    token = arrival.header("Upgrade")[0]
    writer.write(f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\r\n".encode())
    await writer.drain()
    while data := await reader.read(64 * 1024):
        writer.write(b"echo:" + data)
        await writer.drain()
    return False


class WsUpstream:
    """An aiohttp upstream: WebSocket at any path (greets, then echoes), records every request's headers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            seen.setdefault(name.lower(), []).append(value)
        self.requests.append(seen)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("welcome")
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        return ws


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[tuple[Upstream, str]]]]:
    """Start raw upstreams: ``await upstreams(answer)`` returns the upstream and its URL."""
    started: list[Upstream] = []

    async def start(answer: Answer = SUMMARY) -> tuple[Upstream, str]:
        upstream = Upstream(answer)
        started.append(upstream)
        return upstream, await upstream.start()

    yield start
    for upstream in started:
        await upstream.close()


@pytest.fixture
async def ws_upstream() -> AsyncIterator[WsUpstream]:
    upstream = WsUpstream()
    await upstream.server.start_server()
    yield upstream
    await upstream.server.close()


# ---------------------------------------------------------------- Gatehouse


@dataclass
class Stack:
    """A running Gatehouse whose route ``app`` (prefix ``/app``, tier ``low``) goes to one upstream."""

    gateway: Gateway
    keys: Keys
    clock: MovableClock
    metrics: Metrics
    connections: list[Connection] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.gateway.addresses[0][1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, device: str = HEALTHY) -> str:
        return self.keys.token(ALICE, device=device, now=self.clock())

    def auth(self, device: str = HEALTHY) -> str:
        """The Authorization header line of alice on ``device``."""
        return f"Authorization: Bearer {self.token(device)}"

    async def connect(self) -> Connection:
        """A new client connection to the listener."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        connection = Connection(reader, writer)
        self.connections.append(connection)
        return connection

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


StartGatehouse = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def gatehouse(tmp_path: Path, metrics: Metrics) -> AsyncIterator[StartGatehouse]:
    """Start a full Gatehouse: ``await gatehouse(upstream_url, **route_settings)``; both Macs have reported."""
    stacks: list[Stack] = []

    async def start(upstream: str, **route: Any) -> Stack:
        keys = Keys(tmp_path / "keys")
        clock = MovableClock()
        settings = gatehouse_settings(
            keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=upstream, server={"shutdown_grace_s": 2},
            extra_routes=[{"id": "app", "path_prefix": "/app", "upstream": upstream, "tier": "low", **route}],
        )
        stack = Stack(await start_gateway(settings, metrics=metrics, clock=clock), keys, clock, metrics)
        stacks.append(stack)
        snapshots = [mac_item(HEALTHY, at=clock()), mac_item(FAILING, at=clock(), disk_encrypted=False)]
        async with aiohttp.ClientSession() as session, session.post(
            f"{stack.base}/.gatehouse/api/v1/snapshots", json={"snapshots": snapshots}, headers=ingest_headers(),
        ) as ingested:
            assert 200 == ingested.status, await ingested.text()
        return stack

    yield start
    for stack in stacks:
        for connection in stack.connections:
            connection.writer.transport.abort()
        await stack.gateway.stop()


# ---------------------------------------------------------------- the client side, in bytes


def _header_lines(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines if line)]


def http(method: str, target: str, *lines: str, body: bytes | None = None, version: str = "HTTP/1.1") -> bytes:
    """A request in bytes: the request line, ``Host``, ``lines``, and ``body`` with its Content-Length."""
    head = [f"{method} {target} {version}", "Host: svc.test", *lines]
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def chunked(*pieces: bytes) -> bytes:
    """``pieces`` in chunked encoding, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@dataclass
class Response:
    status: int
    head: bytes
    body: bytes
    interim: list[bytes]
    """The heads of the 1xx responses that came before this one."""

    def header(self, name: str) -> list[str]:
        return [v for k, v in _header_lines(self.head) if k == name.lower()]

    def has(self, name: str) -> bool:
        return bool(self.header(name))

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> bytes:
        """The next response head, whatever its status."""
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)

    async def response(self, method: str = "GET") -> Response:
        """The next final response (1xx heads collected), its body read by its framing."""
        interim: list[bytes] = []
        while True:
            head = await self.head()
            status = int(head.split(b" ", 2)[1])
            if 100 <= status < 200 and status != 101:
                interim.append(head)
                continue
            break
        lines = dict(_header_lines(head))
        if method == "HEAD" or status in (101, 204, 304):
            body = b""
        elif "chunked" in lines.get("transfer-encoding", "").lower():
            body = await self._dechunk()
        elif "content-length" in lines:
            body = await asyncio.wait_for(self.reader.readexactly(int(lines["content-length"])), TIMEOUT_S)
        else:
            body = await self.rest()
        return Response(status, head, body, interim)

    async def _dechunk(self) -> bytes:
        body = b""
        while True:
            size = int((await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT_S)).split(b";")[0].strip(), 16)
            data = await asyncio.wait_for(self.reader.readexactly(size + 2), TIMEOUT_S)
            if size == 0:
                return body
            body += data[:-2]

    async def rest(self) -> bytes:
        """Everything until the gateway closes the connection."""
        return await asyncio.wait_for(self.reader.read(-1), TIMEOUT_S)

    async def closed(self) -> bool:
        """True when the gateway closes the connection (end of stream, nothing more) within TIMEOUT_S."""
        try:
            return b"" == await asyncio.wait_for(self.reader.read(1), TIMEOUT_S)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def problem(response: Response) -> dict[str, Any]:
    """The problem+json body of a Gatehouse error (fails when it is not one)."""
    assert ["application/problem+json"] == [v.split(";")[0] for v in response.header("Content-Type")], response.head
    document: dict[str, Any] = response.json()
    return document


async def completed(log_lines: LogLines, request_id: str) -> dict[str, Any]:
    """The request.completed line of ``request_id``, once written."""
    async with asyncio.timeout(TIMEOUT_S):
        while not (lines := [line for line in log_lines.events("request.completed") if line.get("request_id") == request_id]):
            await asyncio.sleep(0.01)  # polls for an event; no timeout is waited out
    assert 1 == len(lines)
    return lines[0]


# ---------------------------------------------------------------- 1. methods


BODIES = {"POST": b"a=1&b=2", "PUT": b'{"name": "x"}', "PATCH": b'{"op": "replace"}', "PROPFIND": b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'}


class TestMethods:
    @pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
    async def test_every_method_is_proxied_with_its_target_body_and_identity(
        self, gatehouse: StartGatehouse, upstreams: Any, method: str,
    ) -> None:
        """The upstream sees the method, the target, the body and the verified identity; the client gets its answer."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()
        body = BODIES.get(method)

        await client.send(http(method, "/app/x?q=1", stack.auth(), "X-Gatehouse-Email: mallory@evil.test", body=body))
        answer = await client.response(method)

        [seen] = upstream.arrivals
        sent = f"{method} /app/x?q=1 {len(body or b'')}".encode()
        assert (f"{method} /app/x?q=1 HTTP/1.1", body or b"") == (seen.request_line.decode(), seen.body)
        assert ([ALICE], [HEALTHY]) == (seen.header("X-Gatehouse-Email"), seen.header("X-Gatehouse-Device-Serial"))
        assert 1 == len(seen.header("X-Gatehouse-Jwt-Assertion"))
        assert (200, [str(len(sent))], b"" if method == "HEAD" else sent) == (answer.status, answer.header("Content-Length"), answer.body)

    async def test_connect_is_refused_with_405_and_never_reaches_the_upstream(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """CONNECT is not proxied: 405, a problem+json naming the method; the upstream is never contacted."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("CONNECT", "svc.test:443", stack.auth(), "Accept: application/json"))
        answer = await client.response()

        assert 405 == answer.status
        assert (405, True) == (problem(answer)["status"], "CONNECT" in problem(answer)["detail"])
        assert 0 == upstream.connections


# ---------------------------------------------------------------- 2. and 3. request bodies


class TestRequestBodies:
    async def test_a_content_length_body_streams_to_the_upstream(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """The upstream gets the first part of a body before the client sends the rest, with the same length and bytes."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()
        body = bytes(range(256)) * 1024  # 256 KiB whose every byte says where it belongs
        whole = http("POST", "/app/upload", stack.auth(), body=body)
        first = len(whole) - len(body) + 100_000

        await client.send(whole[:first])
        await upstream.until_received(100_000)  # never, if the gateway waited for the whole body
        await client.send(whole[first:])
        answer = await client.response()

        [seen] = upstream.arrivals
        assert (200, b"POST /app/upload 262144") == (answer.status, answer.body)
        assert (["262144"], [], body) == (seen.header("Content-Length"), seen.header("Transfer-Encoding"), seen.body)

    async def test_a_chunked_body_streams_to_the_upstream(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """A chunked body reaches the upstream piece by piece, the same bytes (chunked, or with its final length)."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()
        pieces = [b"first-" * 1000, b"x", b"second-" * 3000, b"third"]

        await client.send(http("POST", "/app/upload", stack.auth(), "Transfer-Encoding: chunked") + chunked(pieces[0])[:-5])
        await upstream.until_received(len(pieces[0]))  # never, if the gateway waited for the whole body
        await client.send(chunked(*pieces[1:]))
        answer = await client.response()

        [seen] = upstream.arrivals
        total = sum(map(len, pieces))
        assert (200, f"POST /app/upload {total}".encode()) == (answer.status, answer.body)
        assert b"".join(pieces) == seen.body
        assert (seen.header("Transfer-Encoding"), seen.header("Content-Length")) in ((["chunked"], []), ([], [str(total)]))

    async def test_a_declared_length_over_the_limit_is_413_without_the_upstream(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """Content-Length over the route's `max_body_bytes`: 413 naming the limit; no connection to the upstream."""
        upstream, url = await upstreams()
        stack = await gatehouse(url, max_body_bytes=1000)
        client = await stack.connect()

        await client.send(http("POST", "/app/upload", stack.auth(), "Accept: application/json", body=b"b" * 1001))
        answer = await client.response()

        assert (413, "body-too-large") == (answer.status, problem(answer)["code"])
        assert "1000 bytes" in problem(answer)["detail"]
        assert 0 == upstream.connections

    async def test_a_chunked_body_going_over_the_limit_is_413_and_the_connection_closes(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """Chunks adding up past `max_body_bytes`: 413 naming the limit, the connection closed; the upstream never gets more than the limit."""
        upstream, url = await upstreams()
        stack = await gatehouse(url, max_body_bytes=1000)
        client = await stack.connect()

        await client.send(http("POST", "/app/upload", stack.auth(), "Accept: application/json", "Transfer-Encoding: chunked") + chunked(*[b"c" * 100] * 20))
        answer = await client.response()

        assert (413, "body-too-large") == (answer.status, problem(answer)["code"])
        assert "1000 bytes" in problem(answer)["detail"]
        assert await client.closed()
        assert upstream.body_bytes <= 1000


# ---------------------------------------------------------------- 4. Expect


class TestExpect:
    async def test_an_allowed_request_gets_100_continue_then_the_upstreams_answer(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """`Expect: 100-continue` on an allowed request: one `100 Continue`, the body sent after it, then the upstream's answer."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("POST", "/app/upload", stack.auth(), "Expect: 100-continue", "Content-Length: 5"))
        interim = await client.head()
        await client.send(b"hello")
        answer = await client.response()

        [seen] = upstream.arrivals
        assert b"HTTP/1.1 100 Continue" == interim.split(b"\r\n", 1)[0]
        assert ([], 200, b"POST /app/upload 5") == (answer.interim, answer.status, answer.body)
        assert (b"hello", []) == (seen.body, seen.header("Expect"))

    @pytest.mark.parametrize(("device", "status"), [(FAILING, 403), (None, 401)], ids=["device-failing-policy", "no-identity"])
    async def test_a_denied_request_gets_the_denial_and_no_100_continue(
        self, gatehouse: StartGatehouse, upstreams: Any, device: str | None, status: int,
    ) -> None:
        """`Expect: 100-continue` on a request the gate refuses: the denial at once, never `100 Continue`; the upstream never contacted."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()
        auth = [stack.auth(device)] if device else []

        await client.send(http("POST", "/app/upload", *auth, "Accept: application/json", "Expect: 100-continue", "Content-Length: 5"))
        first = await client.head()

        assert f"HTTP/1.1 {status} ".encode() == first[: len(f"HTTP/1.1 {status} ")]
        assert 0 == upstream.connections

    async def test_an_unknown_expectation_is_417(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """An `Expect` other than `100-continue` is 417, naming what was sent and what is understood; the upstream never contacted."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("POST", "/app/upload", stack.auth(), "Accept: application/json", "Expect: x-fancy", body=b"hello"))
        answer = await client.response()

        assert 417 == answer.status
        detail = problem(answer)["detail"]
        assert (True, True) == ("x-fancy" in detail, "100-continue" in detail)
        assert 0 == upstream.connections


# ---------------------------------------------------------------- 5.-8. response framing


class TestResponseFraming:
    async def test_head_gets_the_upstreams_headers_and_no_body(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """HEAD: the upstream's headers with its Content-Length, no body; the next request on the connection is answered."""

        def answer(arrival: Arrival) -> bytes:
            if arrival.method == "HEAD":
                return b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\nETag: "v1"\r\n\r\n'
            return summary(arrival)

        _, url = await upstreams(replying(answer))
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("HEAD", "/app/file", stack.auth()))
        head = await client.response("HEAD")
        await client.send(http("GET", "/app/next", stack.auth()))
        after = await client.response()

        assert (200, ["1234"], ['"v1"'], []) == (head.status, head.header("Content-Length"), head.header("ETag"), head.header("Transfer-Encoding"))
        assert (200, b"GET /app/next 0") == (after.status, after.body)

    @pytest.mark.parametrize(
        "reply", [b"HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n", b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n'], ids=["204", "304"],
    )
    async def test_204_and_304_have_no_body_and_the_connection_goes_on(self, gatehouse: StartGatehouse, upstreams: Any, reply: bytes) -> None:
        """204 and 304 from the upstream: no body, no Transfer-Encoding, no invented Content-Length; the next request is answered."""
        _, url = await upstreams(replying(lambda arrival: reply if arrival.target == "/app/first" else summary(arrival)))
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/first", stack.auth(), 'If-None-Match: "v1"'))
        first = await client.response()
        await client.send(http("GET", "/app/next", stack.auth()))
        after = await client.response()

        assert (int(reply[9:12]), [], []) == (first.status, first.header("Transfer-Encoding"), first.header("Content-Length"))
        assert (200, b"GET /app/next 0") == (after.status, after.body)

    async def test_103_early_hints_reach_an_http11_client_before_the_answer(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """A 103 Early Hints from the upstream is passed to an HTTP/1.1 client, with its Link, before the final response."""
        _, url = await upstreams(replying(lambda arrival: (
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )))
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/page", stack.auth()))
        answer = await client.response()

        assert [(b"HTTP/1.1 103 Early Hints", ["</style.css>; rel=preload; as=style"])] == [
            (head.split(b"\r\n", 1)[0], [v for k, v in _header_lines(head) if k == "link"]) for head in answer.interim
        ]
        assert (200, b"ok") == (answer.status, answer.body)

    async def test_no_interim_response_reaches_an_http10_client(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """An HTTP/1.0 client, which cannot read 1xx responses, gets only the final response."""
        _, url = await upstreams(replying(lambda arrival: (
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )))
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/page", stack.auth(), version="HTTP/1.0"))
        answer = await client.response()

        assert ([], 200, b"ok") == (answer.interim, answer.status, answer.body)

    async def test_http10_client_gets_no_chunked_encoding(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """An upstream's chunked answer reaches an HTTP/1.0 client unchunked: the exact bytes, then the connection closes."""
        _, url = await upstreams(replying(lambda arrival: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"hello", b" world")))
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/page", stack.auth(), version="HTTP/1.0"))
        head = await client.head()
        rest = await client.rest()

        assert b" 200 " in head.split(b"\r\n", 1)[0]
        assert [] == [v for k, v in _header_lines(head) if k == "transfer-encoding"]
        assert b"hello world" == rest

    async def test_http10_body_of_unknown_length_ends_with_the_close(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """A body still streaming when its head is sent reaches an HTTP/1.0 client unframed, ended by closing the connection."""
        release = asyncio.Event()

        async def answer(arrival: Arrival, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"first")[:-5])
            await writer.drain()
            await release.wait()
            writer.write(chunked(b"-second" * 10_000))
            await writer.drain()
            return True

        _, url = await upstreams(answer)
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/stream", stack.auth(), version="HTTP/1.0"))
        head = await client.head()
        start = await asyncio.wait_for(client.reader.readexactly(5), TIMEOUT_S)  # before the upstream has finished
        release.set()
        rest = await client.rest()

        assert ([], []) == ([v for k, v in _header_lines(head) if k == "transfer-encoding"], [v for k, v in _header_lines(head) if k == "content-length"])
        assert b"first" + b"-second" * 10_000 == start + rest

    async def test_http10_connection_closes_unless_keep_alive_was_asked_for(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """HTTP/1.0 without `Connection: keep-alive`: the connection closes after the answer."""
        _, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/once", stack.auth(), version="HTTP/1.0"))
        answer = await client.response()

        assert (200, b"GET /app/once 0") == (answer.status, answer.body)
        assert await client.closed()

    async def test_http10_keep_alive_when_asked_for(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """HTTP/1.0 with `Connection: keep-alive`: the answer says keep-alive and the connection serves the next request."""
        _, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/one", stack.auth(), "Connection: keep-alive", version="HTTP/1.0"))
        first = await client.response()
        await client.send(http("GET", "/app/two", stack.auth(), "Connection: keep-alive", version="HTTP/1.0"))
        second = await client.response()

        assert (200, b"GET /app/one 0", ["keep-alive"]) == (first.status, first.body, [v.lower() for v in first.header("Connection")])
        assert (200, b"GET /app/two 0") == (second.status, second.body)


# ---------------------------------------------------------------- 9. pipelining


class TestPipelining:
    async def test_get_post_get_in_one_write_are_answered_in_order(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """A GET, a POST with a body and a GET sent in one write get their three answers, in order."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(
            http("GET", "/app/1", stack.auth()) + http("POST", "/app/2", stack.auth(), body=b"hello") + http("GET", "/app/3", stack.auth()),
        )
        answers = [await client.response() for _ in range(3)]

        assert [(200, b"GET /app/1 0"), (200, b"POST /app/2 5"), (200, b"GET /app/3 0")] == [(a.status, a.body) for a in answers]
        assert [b"", b"hello", b""] == [seen.body for seen in upstream.arrivals]


# ---------------------------------------------------------------- 10. and 11. upgrades


class TestUpgrades:
    async def test_an_allowed_websocket_relays_frames_with_the_verified_identity(self, gatehouse: StartGatehouse, ws_upstream: WsUpstream) -> None:
        """An allowed WebSocket upgrades; frames go both ways; the upstream's handshake carries Gatehouse's identity, never the client's."""
        stack = await gatehouse(str(ws_upstream.server.make_url("")).rstrip("/"))
        forged = {"X-Gatehouse-Email": "mallory@evil.test", "X-Gatehouse-User": "mallory", "X-Gatehouse-Groups": "admins"}

        async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{stack.base}/app/socket", headers={"Authorization": f"Bearer {stack.token()}", **forged},
        ) as ws:
            greeting = await ws.receive_str(timeout=TIMEOUT_S)
            await ws.send_str("hi")
            text = await ws.receive_str(timeout=TIMEOUT_S)
            await ws.send_bytes(b"\x00\x01")
            binary = await ws.receive_bytes(timeout=TIMEOUT_S)

        [handshake] = ws_upstream.requests
        assert ("welcome", "echo:hi", b"echo:\x00\x01") == (greeting, text, binary)
        assert (["websocket"], [ALICE], [HEALTHY]) == (
            [v.lower() for v in handshake["upgrade"]], handshake["x-gatehouse-email"], handshake["x-gatehouse-device-serial"],
        )
        assert [] == [(k, v) for k, values in handshake.items() for v in values if "mallory" in v or "admins" in v]

    async def test_a_denied_device_never_gets_a_websocket(self, gatehouse: StartGatehouse, ws_upstream: WsUpstream) -> None:
        """A WebSocket from a device failing the policy gets the denial, never a 101; the upstream is never contacted."""
        stack = await gatehouse(str(ws_upstream.server.make_url("")).rstrip("/"))

        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{stack.base}/app/socket", headers={"Authorization": f"Bearer {stack.token(FAILING)}"})

        assert 403 == refused.value.status
        assert [] == ws_upstream.requests

    async def test_an_upgrade_the_route_does_not_allow_is_an_ordinary_request(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """`Upgrade: h2c` (routes allow `websocket` only, by default): served as an ordinary request; the upstream sees no upgrade."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/x", stack.auth(), "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"))
        answer = await client.response()
        await client.send(http("GET", "/app/next", stack.auth()))
        after = await client.response()

        seen = upstream.arrivals[0]
        assert [(200, b"GET /app/x 0"), (200, b"GET /app/next 0")] == [(answer.status, answer.body), (after.status, after.body)]
        assert ([], [], []) == (
            seen.header("Upgrade"), seen.header("HTTP2-Settings"), [v for v in seen.header("Connection") if "upgrade" in v.lower()],
        )

    async def test_a_route_without_websocket_serves_the_handshake_as_an_ordinary_request(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """A route with `upgrades: []`: a WebSocket handshake is forwarded as a plain GET, answered as one, never a 101."""
        upstream, url = await upstreams()
        stack = await gatehouse(url, upgrades=[])
        client = await stack.connect()

        await client.send(http(
            "GET", "/app/socket", stack.auth(), "Connection: Upgrade", "Upgrade: websocket",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
        ))
        answer = await client.response()

        [seen] = upstream.arrivals
        assert (200, b"GET /app/socket 0") == (answer.status, answer.body)
        assert ([], []) == (seen.header("Upgrade"), [v for v in seen.header("Connection") if "upgrade" in v.lower()])

    async def test_an_upgrade_the_route_allows_is_tunnelled_after_the_decision(self, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """A token listed in the route's `upgrades` is tunnelled: the upstream's 101, then bytes both ways; the identity went upstream."""
        upstream, url = await upstreams(echo_tunnel)
        stack = await gatehouse(url, upgrades=["websocket", "x-echo"])
        client = await stack.connect()

        await client.send(http("GET", "/app/tunnel", stack.auth(), "Connection: Upgrade", "Upgrade: x-echo"))
        switched = await client.response()
        await client.send(b"ping")
        echoed = await asyncio.wait_for(client.reader.readexactly(9), TIMEOUT_S)

        [seen] = upstream.arrivals
        assert (101, ["x-echo"], b"echo:ping") == (switched.status, switched.header("Upgrade"), echoed)
        assert (["x-echo"], [ALICE], [HEALTHY]) == (seen.header("Upgrade"), seen.header("X-Gatehouse-Email"), seen.header("X-Gatehouse-Device-Serial"))


# ---------------------------------------------------------------- 12. and 13. the request record


class TestRequestRecord:
    async def test_a_posts_line_has_a_gets_fields_and_its_body_length(self, log_lines: LogLines, gatehouse: StartGatehouse, upstreams: Any) -> None:
        """A POST's request.completed line has the same fields as a GET's, bytes_in its body length; the request metrics count both."""
        _, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("GET", "/app/page", stack.auth()))
        got = await client.response()
        await client.send(http("POST", "/app/page", stack.auth(), body=b"p" * 1234))
        posted = await client.response()
        get_line = await completed(log_lines, got.header("X-Request-Id")[0])
        post_line = await completed(log_lines, posted.header("X-Request-Id")[0])

        assert sorted(get_line) == sorted(post_line)
        assert [("GET", 200, 200, 0, "app", "allow", ALICE, HEALTHY), ("POST", 200, 200, 1234, "app", "allow", ALICE, HEALTHY)] == [
            (line["method"], line["status"], line["upstream_status"], line["bytes_in"], line["route"], line["decision"], line["user"], line["device"])
            for line in (get_line, post_line)
        ]
        assert (2.0, 2.0, 2.0) == (
            stack.metric("gatehouse_requests_total", route="app", code_class="2xx"),
            stack.metric("gatehouse_request_duration_seconds_count", route="app"),
            stack.metric("gatehouse_upstream_duration_seconds_count", route="app"),
        )

    async def test_a_client_leaving_mid_upload_is_499_with_no_error_line(
        self, log_lines: LogLines, gatehouse: StartGatehouse, upstreams: Any, caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A client that hangs up halfway through its upload is logged and counted as 499; no warning or error is written."""
        upstream, url = await upstreams()
        stack = await gatehouse(url)
        client = await stack.connect()

        await client.send(http("POST", "/app/upload", stack.auth(), f"Content-Length: {1024 * 1024}") + b"u" * 64 * 1024)
        await upstream.until_received(64 * 1024)
        client.writer.transport.abort()
        line = await completed(log_lines, Arrival(upstream.heads[0], b"").header("X-Request-Id")[0])

        assert ("POST", 499, "app") == (line["method"], line["status"], line["route"])
        assert (1.0, 0.0, 0.0) == (
            stack.metric("gatehouse_requests_total", route="app", code_class="4xx"),
            stack.metric("gatehouse_requests_total", route="app", code_class="5xx"),
            stack.metric("gatehouse_upstream_errors_total", route="app", kind="protocol"),
        )
        assert [] == [e for e in log_lines.events() if e["level"] not in ("debug", "info")]
        assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]
