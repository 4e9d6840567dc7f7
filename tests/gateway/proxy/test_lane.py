"""The proxy's listener on real sockets: what it forwards, how it frames answers, what it refuses, how it fails.

Every test drives the production listener (through ``make_gateway``) with raw sockets or fresh
client connections. The behaviours of issue #17's one proxy (methods, bodies, Expect, 1xx, HTTP/1.0,
upgrades) are pinned in ``test_one_proxy.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
from datetime import timedelta
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import trustme
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.metrics import Metrics
from tests.gateway.conftest import MakeGateway, RawUpstream, Recorder, Respond, raw_exchange
from gateway.keys import POLICY as POLICY_HOLDER
from tests.gateway.fullstack import POLICY, Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item
from tests.gateway.proxy.test_rules import _rss_bytes
from tests.serving import GatehouseTestServer


def gate_paths(registry: CollectorRegistry, path: str) -> float:
    """Routed requests the gate decided from memory (``memory``) or on its awaited path (``awaited``)."""
    return registry.get_sample_value("gatehouse_gate_paths_total", {"path": path}) or 0.0


def _route(upstream: str, **extra: object) -> dict[str, object]:
    return {"id": "app", "upstream": upstream, "tier": "low", **extra}


def fresh_session() -> aiohttp.ClientSession:
    """A client that opens a new connection per request (so each request is the first of its connection)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), auto_decompress=False)


def scripted(answer: Callable[[bytes, int], bytes | None], *, close: bool = False) -> Respond:
    """A RawUpstream responder from ``answer(head, index of the connection)``: the bytes to send, or None to hang up without a word."""
    seen: dict[int, int] = {}

    async def respond(head: bytes, writer: asyncio.StreamWriter) -> bool:
        index = seen.setdefault(id(writer), len(seen))
        reply = answer(head, index)
        if reply is None:
            return False
        writer.write(reply)
        await writer.drain()
        return not close

    return respond


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[..., Any]]:
    started: list[RawUpstream] = []

    async def make(answer: Callable[[bytes, int], bytes | None], *, close: bool = False) -> tuple[RawUpstream, str]:
        upstream = RawUpstream(scripted(answer, close=close))
        started.append(upstream)
        return upstream, await upstream.start()

    yield make
    for upstream in started:
        await upstream.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from ``reader``: status, headers (lower-case names), de-chunked body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, headers, body


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: svc", *extra]) + "\r\n\r\n").encode()


class TestForwarding:
    async def test_a_plain_get_is_forwarded_with_the_proxys_headers(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A plain GET is forwarded with the proxy's headers and answered with its request id."""
        gw = await make_gateway([_route(upstream_url)])

        status, head, body = await raw_exchange(gw.port, get("/a?b=1", "Connection: close", "X-Gatehouse-User: forged"))

        assert 200 == status
        assert b'"raw_path":"/a?b=1"' in body
        assert [] == recorder.header(0, "X-Gatehouse-User")
        assert ["127.0.0.1"] == recorder.header(0, "X-Forwarded-For")
        request_id = recorder.header(0, "X-Request-Id")[0]
        assert f"X-Request-Id: {request_id}".encode() in head
        assert b"Connection: close" in head

    async def test_keep_alive_and_pipelining_on_one_connection(self, make_gateway: MakeGateway, raw_upstream: Any) -> None:
        """Three pipelined GETs in one write are answered in order, over one reused upstream connection."""
        upstream, url = await raw_upstream(lambda head, _: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(head.split()[1]), head.split()[1]))
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/one") + get("/two") + get("/three"))
        answers = [await read_response(reader) for _ in range(3)]
        writer.close()

        assert [b"/one", b"/two", b"/three"] == [body for _, _, body in answers]
        assert 1 == upstream.connections

    async def test_head_arriving_byte_by_byte(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """A head split into single bytes is put together and served."""
        gw = await make_gateway([_route(upstream_url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        for byte in get("/slowly"):
            writer.write(bytes([byte]))
            await writer.drain()
        status, _, body = await read_response(reader)
        writer.close()

        assert 200 == status
        assert b"/slowly" in body

    @pytest.mark.parametrize(
        ("upstream_reply", "expected_body", "framing"),
        [
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde", "content-length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwxyz", b"wxyz", "content-length"),
            (b"HTTP/1.1 204 No Content\r\n\r\n", b"", None),
        ],
        ids=["chunked-whole", "length", "no-content"],
    )
    async def test_response_framing(
        self, make_gateway: MakeGateway, raw_upstream: Any, upstream_reply: bytes, expected_body: bytes, framing: str | None,
    ) -> None:
        """Whatever framing the upstream used, the client gets a correctly framed body (1xx: test_one_proxy.py)."""
        _, url = await raw_upstream(lambda head, _: upstream_reply)
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/x"))
        status, headers, body = await read_response(reader)
        writer.close()

        assert expected_body == body
        assert status in (200, 204)
        assert "transfer-encoding" not in headers
        assert (framing in headers) if framing else ("content-length" not in headers)

    async def test_body_delimited_by_close_reaches_the_client_in_full(self, make_gateway: MakeGateway, raw_upstream: Any) -> None:
        """An HTTP/1.0-style upstream ends its body by closing; the client gets the whole body, chunked."""

        _, url = await raw_upstream(lambda head, _: b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 100_000, close=True)
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/x"))
        status, headers, body = await read_response(reader)
        writer.close()

        assert (200, 100_000) == (status, len(body))
        assert "chunked" == headers.get("transfer-encoding")  # the end is known only when the upstream closes

    async def test_upstream_hop_by_hop_headers_never_reach_the_client(self, make_gateway: MakeGateway, raw_upstream: Any) -> None:
        """Connection, the headers it names, Keep-Alive and the upstream's own request id are dropped."""
        _, url = await raw_upstream(lambda head, _: (
            b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
            b"X-Request-Id: upstreams\r\nX-Kept: yes\r\nContent-Length: 0\r\n\r\n"
        ))
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/x"))
        _, headers, _ = await read_response(reader)
        writer.close()

        assert "yes" == headers["x-kept"]
        assert not {"x-secret", "keep-alive"} & set(headers)
        assert "upstreams" != headers["x-request-id"]
        assert "date" in headers

    async def test_large_download_streams_in_bounded_memory(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """512 MiB through the proxy to a client reading at its own pace: flow control keeps memory flat."""
        size = 512 * 1024 * 1024
        gw = await make_gateway([_route(upstream_url)])
        gc.collect()
        before = _rss_bytes()
        peak = before
        received = 0
        async with fresh_session() as session, session.get(f"http://127.0.0.1:{gw.port}/big?n={size}") as response:
            async for chunk in response.content.iter_chunked(1024 * 1024):
                received += len(chunk)
                peak = max(peak, _rss_bytes())

        assert (200, size) == (response.status, received)
        assert peak - before < 64 * 1024 * 1024


class TestOnOneConnection:
    async def test_post_after_get_on_one_connection(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A POST after a GET is forwarded with every byte of its body; the connection goes on serving after it."""
        gw = await make_gateway([_route(upstream_url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/first"))
        first = await read_response(reader)
        writer.write(b"POST /second HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello" + get("/third"))
        second = await read_response(reader)
        third = await read_response(reader)
        writer.close()

        assert [200, 200, 200] == [first[0], second[0], third[0]]
        assert ["GET", "POST", "GET"] == [seen.method for seen in recorder.seen]
        assert 5 == recorder.seen[1].body_bytes

    @pytest.mark.parametrize(
        ("request_bytes", "status"),
        [
            (b"GET /a%2Fb HTTP/1.1\r\nHost: svc\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET /.gatehouse/healthz HTTP/1.1\r\nHost: svc\r\n\r\n", 200),
            (b"GET /x HTTP/1.1\r\nHost: svc\r\nX-Long: " + b"v" * 9000 + b"\r\n\r\n", 431),
            (b"GARBAGE\r\n\r\n", 400),
        ],
        ids=["encoded-slash", "two-hosts", "reserved", "long-header", "malformed"],
    )
    async def test_refusals_and_gatehouses_own_pages(
        self, make_gateway: MakeGateway, upstream_url: str, request_bytes: bytes, status: int,
    ) -> None:
        """Ambiguous or malformed requests are refused with 400; Gatehouse's own pages are answered by Gatehouse."""
        gw = await make_gateway([_route(upstream_url)], max_header_bytes=8190)

        got, _, _ = await raw_exchange(gw.port, request_bytes, read_until_close=False)

        assert status == got

    async def test_websocket_upgrade_is_relayed(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """A WebSocket after the upgrade: a text frame goes up and its echo comes back."""
        gw = await make_gateway([_route(upstream_url)])
        async with fresh_session() as session, session.ws_connect(f"http://127.0.0.1:{gw.port}/ws") as ws:
            await ws.send_str("hi")
            reply = await ws.receive_str()

        assert "echo:hi" == reply


class TestFailures:
    async def test_refused_connect_is_a_502_page_with_the_request_id(self, make_gateway: MakeGateway, metrics: Metrics) -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        gw = await make_gateway([_route(f"http://127.0.0.1:{port}")])

        status, head, body = await raw_exchange(gw.port, get("/x", "Accept: application/json", "Connection: close"))

        assert 502 == status
        assert b'"upstream-connect"' in body
        assert b"X-Request-Id: " in head
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "connect"})

    async def test_an_upstream_certificate_nobody_vouches_for_is_refused(self, make_gateway: MakeGateway, metrics: Metrics) -> None:
        """TLS to upstreams is verified: a certificate from an unknown CA ends in 502, and nothing is sent."""
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        received: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                received.append(await reader.read(1024))
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        try:
            gw = await make_gateway([_route(f"https://127.0.0.1:{port}")])
            status, _, body = await raw_exchange(gw.port, get("/x", "Accept: application/json", "Connection: close"))
        finally:
            server.close()

        assert 502 == status
        assert b'"upstream-connect"' in body
        assert b"GET" not in b"".join(received)

    async def test_read_timeout_is_504(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        gw = await make_gateway([_route(upstream_url, read_timeout_s=0.2)])

        status, _, body = await raw_exchange(gw.port, get("/hang", "Accept: text/html", "Connection: close"))

        assert 504 == status
        assert b"did not answer in time" in body

    async def test_a_request_body_that_stops_arriving_is_408(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A client that sends part of its body and then nothing more is the client's timeout (408), not the upstream's (504)."""
        gw = await make_gateway([_route(upstream_url, read_timeout_s=0.2)])
        head = b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: 10\r\nAccept: application/json\r\n\r\nabc"

        status, head_bytes, body = await raw_exchange(gw.port, head)

        assert 408 == status
        assert b"Connection: close" in head_bytes
        assert b"stopped arriving" in body and b"read_timeout_s" in body

    async def test_malformed_upstream_response_is_502(self, make_gateway: MakeGateway, raw_upstream: Any, metrics: Metrics) -> None:
        _, url = await raw_upstream(lambda head, _: b"HTTP/1.1 abc nonsense\r\n\r\n")
        gw = await make_gateway([_route(url)])

        status, _, _ = await raw_exchange(gw.port, get("/x", "Connection: close"))

        assert 502 == status
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "protocol"})

    async def test_idle_connection_closed_by_the_upstream_is_retried_once(self, make_gateway: MakeGateway, raw_upstream: Any, metrics: Metrics) -> None:
        """The upstream drops each connection after one answer (without saying so); the next GET is sent again on a new one."""
        per_connection: dict[int, int] = {}

        def answer(head: bytes, index: int) -> bytes | None:
            per_connection[index] = per_connection.get(index, 0) + 1
            if index == 0 and per_connection[index] == 2:
                return None  # reads the second request, then hangs up without a word
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

        upstream, url = await raw_upstream(answer)
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/x"))
        first = await read_response(reader)
        writer.write(get("/x"))
        second = await read_response(reader)
        writer.close()

        assert [(200, b"ok"), (200, b"ok")] == [(first[0], first[2]), (second[0], second[2])]
        assert 2 == upstream.connections
        assert metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "protocol"}) is None

    async def test_upstream_breaking_off_mid_body_cuts_the_client_response(self, make_gateway: MakeGateway, upstream_url: str, metrics: Metrics) -> None:
        gw = await make_gateway([_route(upstream_url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/break"))
        with pytest.raises(asyncio.IncompleteReadError):
            await read_response(reader)
        writer.close()

        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "protocol"})

    async def test_client_leaving_mid_response_is_counted_and_frees_the_upstream(self, make_gateway: MakeGateway, upstream_url: str, metrics: Metrics) -> None:
        gw = await make_gateway([_route(upstream_url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get(f"/big?n={256 * 1024 * 1024}"))
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()
        async with asyncio.timeout(10):
            while not (client_errors := metrics.registry.get_sample_value("gatehouse_requests_total", {"route": "app", "code_class": "4xx"})):
                await asyncio.sleep(0.01)  # polls until the request is counted; no timeout is waited out

        assert 1.0 == client_errors

    async def test_head_timeout_closes_a_slow_head(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        gw = await make_gateway([_route(upstream_url)], header_read_timeout_s=0.3)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(b"GET /x HTTP/1.1\r\nHost: sv")
        closed = await asyncio.wait_for(reader.read(), 5)
        writer.close()

        assert b"" == closed


class TestShutdown:
    async def test_request_in_flight_finishes_idle_connections_close(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        gw = await make_gateway([_route(upstream_url)], shutdown_grace_s=10)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", gw.port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", gw.port)
        busy_writer.write(get("/slow"))
        await recorder.arrived.wait()

        stopping = asyncio.ensure_future(gw.server.lane.shutdown(10))  # type: ignore[attr-defined]
        idle_closed = await asyncio.wait_for(idle_reader.read(), 5)
        recorder.release.set()
        status, headers, _ = await read_response(busy_reader)
        await stopping
        busy_writer.close()
        idle_writer.close()

        assert (b"", 200, "close") == (idle_closed, status, headers.get("connection"))


FullStack = tuple[str, Keys, MovableClock, CollectorRegistry, web.Application]


@pytest.fixture
async def gatehouse(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[FullStack]:
    """A full Gatehouse on Gatehouse's own listener, in front of an upstream that echoes the verified email."""

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"user": request.headers.get("X-Gatehouse-Email")})

    up_app = web.Application()
    up_app.router.add_route("*", "/{tail:.*}", handle)
    upstream = await aiohttp_server(up_app)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    registry = CollectorRegistry()
    settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=str(upstream.make_url("")).rstrip("/"))
    server = GatehouseTestServer(create_app(settings, clock=clock, metrics=Metrics(registry)))
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", keys, clock, registry, server.app
    await server.close()


async def status_of(base: str, path: str, token: str) -> int:
    async with fresh_session() as session, session.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}) as r:
        return r.status


async def ingest(base: str, item: dict[str, Any]) -> None:
    async with fresh_session() as session, session.post(f"{base}/.gatehouse/api/v1/snapshots", json={"snapshots": [item]}, headers=ingest_headers()) as r:
        assert 200 == r.status, await r.text()


class TestWithTheGate:
    async def test_a_new_tokens_first_request_is_allowed_and_an_unknown_device_denied(self, gatehouse: FullStack) -> None:
        """A token not yet verified is verified on its first request, which is allowed with the verified email; an unknown device is denied."""
        base, keys, clock, _, _ = gatehouse
        await ingest(base, mac_item("C02ALICE0001", at=clock()))
        token = keys.token("alice@example.com", device="C02ALICE0001", now=clock())
        async with fresh_session() as session, session.get(f"{base}/public/x", headers={"Authorization": f"Bearer {token}"}) as allowed:
            allowed_body = await allowed.json()

        denied = await status_of(base, "/public/x", keys.token("bob@example.com", device="C02UNKNOWN01", now=clock()))

        assert (200, "alice@example.com") == (allowed.status, allowed_body["user"])
        assert 403 == denied


class TestLogLine:
    async def test_one_line_with_user_device_decision_route_and_tier_never_the_query(self, gatehouse: FullStack) -> None:
        """One request.completed per request of a kept token, with user, device, decision, route and tier, never the query."""
        base, keys, clock, _, _ = gatehouse
        await ingest(base, mac_item("C02LOGS0001", at=clock()))
        token = keys.token("alice@example.com", device="C02LOGS0001", now=clock())
        await status_of(base, "/public/", token)  # verifies the token: the next request is decided at once

        with structlog.testing.capture_logs() as logs:
            async with fresh_session() as session, session.get(f"{base}/public/page?token=s3cret", headers={"Authorization": f"Bearer {token}"}) as r:
                await r.read()

        completed = [e for e in logs if e["event"] == "request.completed"]
        assert 1 == len(completed)
        assert {
            "method": "GET", "path": "/public/page", "route": "public", "tier": "low", "decision": "allow",
            "user": "alice@example.com", "device": "C02LOGS0001", "status": 200, "upstream_status": 200, "bytes_in": 0,
            "request_id": r.headers["X-Request-Id"],
        }.items() <= completed[0].items()
        assert completed[0]["bytes_out"] > 0
        assert all("s3cret" not in str(value) for event in logs for value in event.values())


class TestRememberedAdmissions:
    """The gate keeps an allowed request's Admission; each input change must make it decide again."""

    async def test_a_new_failing_snapshot_denies_the_next_request(self, gatehouse: FullStack) -> None:
        base, keys, clock, registry, _ = gatehouse
        await ingest(base, mac_item("C02MEMO0001", at=clock()))
        token = keys.token("alice@example.com", device="C02MEMO0001", now=clock())
        first, second = await status_of(base, "/public/", token), await status_of(base, "/public/", token)

        clock.advance(timedelta(seconds=1))  # a snapshot with the same collection time is the same snapshot (idempotent ingest)
        await ingest(base, mac_item("C02MEMO0001", at=clock(), disk_encrypted=False))
        after = await status_of(base, "/public/", token)

        assert (200, 200, 403) == (first, second, after)
        assert 2.0 == registry.get_sample_value("gatehouse_decisions_total", {"tier": "low", "outcome": "allow", "reason": "ok"})

    async def test_a_kept_admission_counts_every_metric_a_decision_counts(self, gatehouse: FullStack) -> None:
        """Each request given a kept admission counts its decision, snapshot age and decision time, as the first did."""
        base, keys, clock, registry, _ = gatehouse
        await ingest(base, mac_item("C02MEMO0009", at=clock()))
        token = keys.token("alice@example.com", device="C02MEMO0009", now=clock())

        statuses = [await status_of(base, "/admin/", token) for _ in range(3)]

        assert [200, 200, 200] == statuses
        assert (2.0, 1.0) == (gate_paths(registry, "memory"), gate_paths(registry, "awaited"))  # the first verified its token
        assert 3.0 == registry.get_sample_value("gatehouse_decisions_total", {"tier": "high", "outcome": "allow", "reason": "ok"})
        assert 3.0 == registry.get_sample_value("gatehouse_snapshot_age_seconds_count")
        assert 3.0 == registry.get_sample_value("gatehouse_decision_duration_seconds_count")

    async def test_a_monitored_request_counts_its_failing_checks_and_would_deny_each_time(self, gatehouse: FullStack) -> None:
        """A monitor-mode request is never kept: each one counts the decision, every failing check and would-deny."""
        base, keys, clock, registry, _ = gatehouse
        await ingest(base, mac_item("C02MEMO0010", at=clock(), disk_encrypted=False))
        token = keys.token("alice@example.com", device="C02MEMO0010", now=clock())

        statuses = [await status_of(base, "/shadow/", token) for _ in range(2)]

        assert [200, 200] == statuses
        assert (1.0, 1.0) == (gate_paths(registry, "memory"), gate_paths(registry, "awaited"))
        assert 2.0 == registry.get_sample_value("gatehouse_decisions_total", {"tier": "high", "outcome": "would-deny", "reason": "checks-failed"})
        assert 2.0 == registry.get_sample_value("gatehouse_failing_checks_total", {"tier": "high", "check": "disk_encryption"})
        assert 2.0 == registry.get_sample_value("gatehouse_would_deny_total", {"route": "shadow", "reason": "checks-failed"})

    async def test_time_passing_the_decisions_validity_denies(self, gatehouse: FullStack) -> None:
        base, keys, clock, _, _ = gatehouse
        await ingest(base, mac_item("C02MEMO0002", at=clock()))
        token = keys.token("alice@example.com", device="C02MEMO0002", now=clock())
        before = [await status_of(base, "/admin/", token) for _ in range(2)]

        clock.advance(timedelta(minutes=15, seconds=1))
        after = await status_of(base, "/admin/", token)

        assert ([200, 200], 403) == (before, after)

    async def test_a_stricter_policy_applies_to_the_next_request(self, gatehouse: FullStack, tmp_path: Path) -> None:
        base, keys, clock, _, app = gatehouse
        await ingest(base, mac_item("C02MEMO0003", at=clock(), os_version="14.5"))
        token = keys.token("alice@example.com", device="C02MEMO0003", now=clock())
        before = await status_of(base, "/public/", token)
        stricter = tmp_path / "stricter.yaml"
        stricter.write_text(POLICY.read_text().replace('darwin: "13.0"', 'darwin: "15.0"', 1))

        assert app[POLICY_HOLDER].reload(stricter)
        after = await status_of(base, "/public/", token)

        assert (200, 403) == (before, after)

    async def test_another_route_is_decided_for_its_own_tier(self, gatehouse: FullStack) -> None:
        base, keys, clock, _, _ = gatehouse
        await ingest(base, mac_item("C02MEMO0004", at=clock(), sip_enabled=False))
        token = keys.token("alice@example.com", device="C02MEMO0004", now=clock())

        low, high = await status_of(base, "/public/", token), await status_of(base, "/admin/", token)

        assert (200, 403) == (low, high)


class TestLimits:
    async def test_an_endless_upstream_head_is_a_502_not_a_buffer(self, make_gateway: MakeGateway, raw_upstream: Any, metrics: Metrics) -> None:
        """An upstream sending header lines past 64 KiB without ending its head gets 502; nothing grows without bound."""
        _, url = await raw_upstream(lambda head, _: b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"f" * 100 + b"\r\n" * 1 + (b"X-More: " + b"m" * 1000 + b"\r\n") * 80)
        gw = await make_gateway([_route(url)])

        status, _, _ = await raw_exchange(gw.port, get("/x", "Connection: close"))

        assert 502 == status
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "protocol"})

    async def test_a_long_but_finite_upstream_head_passes(self, make_gateway: MakeGateway, raw_upstream: Any) -> None:
        _, url = await raw_upstream(lambda head, _: b"HTTP/1.1 200 OK\r\n" + (b"X-More: " + b"m" * 1000 + b"\r\n") * 50 + b"Content-Length: 2\r\n\r\nok")
        gw = await make_gateway([_route(url)])

        status, _, body = await raw_exchange(gw.port, get("/x", "Connection: close"))

        assert (200, b"ok") == (status, body)

    async def test_bare_lf_heads_are_refused(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """A head whose lines end in a bare LF is not left waiting for a CRLF CRLF that never comes: it is refused with 400."""
        gw = await make_gateway([_route(upstream_url)])

        status, _, _ = await raw_exchange(gw.port, b"GET /x HTTP/1.1\nHost: svc\nConnection: close\n\n")

        assert 400 == status


class TestServerHeader:
    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_no_version_is_named_and_the_upstreams_own_is_kept(self, make_gateway: MakeGateway, raw_upstream: Any, method: str) -> None:
        """Responses without an upstream `Server` say `Server: Gatehouse`; an upstream's is kept."""
        _, bare = await raw_upstream(lambda head, _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        _, named = await raw_upstream(lambda head, _: b"HTTP/1.1 200 OK\r\nServer: wiki/2\r\nContent-Length: 2\r\n\r\nok")
        gw = await make_gateway([_route(bare, path_prefix="/bare"), _route(named, id="named", path_prefix="/named")])

        servers = []
        for path in ("/bare", "/named", "/.gatehouse/healthz"):
            _, head, _ = await raw_exchange(gw.port, f"{method if path != '/.gatehouse/healthz' else 'GET'} {path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n".encode())
            servers.append([line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"server:")])

        assert [[b"Gatehouse"], [b"wiki/2"], [b"Gatehouse"]] == servers

    @pytest.mark.parametrize("request_bytes", [b"GARBAGE\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: svc\r\nX-Long: " + b"v" * 9000 + b"\r\n\r\n"])
    async def test_refusals_name_no_version_either(self, make_gateway: MakeGateway, upstream_url: str, request_bytes: bytes) -> None:
        gw = await make_gateway([_route(upstream_url)], max_header_bytes=8190)

        status, head, _ = await raw_exchange(gw.port, request_bytes, read_until_close=False)

        assert status in (400, 431)
        assert [b"Server: Gatehouse"] == [line for line in head.split(b"\r\n") if line.lower().startswith(b"server:")]


class TestHeadSizeLimit:
    """`server.max_head_bytes` bounds the whole request head (a session-1 leftover)."""

    @staticmethod
    def head_of(total: int, *, method: str = "GET") -> bytes:
        lines = [f"{method} /x HTTP/1.1", "Host: svc", "Connection: close"]
        while sum(len(line) + 2 for line in lines) + 2 < total - 1000:
            lines.append(f"X-Filler-{len(lines)}: " + "v" * 960)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_a_head_over_the_limit_is_431(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder, method: str) -> None:
        gw = await make_gateway([_route(upstream_url)], max_head_bytes=12_000, max_header_count=100)

        status, head, body = await raw_exchange(gw.port, self.head_of(20_000, method=method))

        assert (431, []) == (status, recorder.seen)
        assert b"the request head is longer than 12000 bytes (server.max_head_bytes)" in body
        assert b"Server: Gatehouse" in head

    async def test_a_head_arriving_in_pieces_is_counted_across_them(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        gw = await make_gateway([_route(upstream_url)], max_head_bytes=12_000, max_header_count=100)
        request = self.head_of(20_000, method="DELETE")
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        with contextlib.suppress(ConnectionError):
            for start in range(0, len(request), 1000):
                writer.write(request[start:start + 1000])
                await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()

        assert answer.startswith(b"HTTP/1.1 431 ")
        assert [] == recorder.seen

    async def test_a_head_under_the_limit_passes(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        gw = await make_gateway([_route(upstream_url)], max_head_bytes=12_000, max_header_count=100)

        status, _, _ = await raw_exchange(gw.port, self.head_of(11_000, method="DELETE"))

        assert (200, 1) == (status, len(recorder.seen))

    async def test_a_body_after_a_small_head_does_not_count(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Head and a 50 KB body in one write: only the head counts against the limit."""
        gw = await make_gateway([_route(upstream_url)], max_head_bytes=4096, max_header_bytes=2048)
        body = b"b" * 50_000
        request = b"POST /x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nContent-Length: 50000\r\n\r\n" + body

        status, _, _ = await raw_exchange(gw.port, request)

        assert (200, 50_000) == (status, recorder.seen[0].body_bytes)

    def test_the_limit_must_leave_room_for_one_line(self) -> None:
        from pydantic import ValidationError

        from gateway.config.settings import ServerSettings

        with pytest.raises(ValidationError, match="raise `max_head_bytes` or lower `max_header_bytes`"):
            ServerSettings(max_head_bytes=4096, max_header_bytes=8190)
