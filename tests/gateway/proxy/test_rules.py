"""The proxy on real sockets: exact forwarding, streaming, limits, headers, WebSockets, failures."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.gate.admission import Admission
from gateway.metrics import Metrics
from gateway.proxy.rules import upstream_header_lines, without_cookies
from gateway.proxy.routing import Route
from tests.conftest import LogLines
from tests.gateway.conftest import MakeGateway, RawUpstream, Recorder, raw_exchange


def _route(upstream: str, **extra: object) -> dict[str, object]:
    return {"id": "app", "upstream": upstream, "tier": "low", **extra}


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class TestForwarding:
    async def test_upstream_receives_exact_path_and_query(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Path escapes and the query reach the upstream byte for byte, not re-encoded."""
        gw = await make_gateway([_route(upstream_url)])
        target = "/a/%C3%A9/b:c@d!$&'()*+,=/%20x?q=%2F%2e&x=<>\"{}|^`&&=#"
        target = target.rstrip("#")

        status, _, _ = await raw_exchange(gw.port, f"GET {target} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n".encode())

        assert 200 == status
        assert target == recorder.seen[0].raw_path

    async def test_unreserved_escapes_forwarded_as_sent(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """An encoded unreserved character is routed decoded but forwarded as the client spelled it."""
        gw = await make_gateway([_route(upstream_url, path_prefix="/admin", id="admin")])

        status, _, _ = await raw_exchange(gw.port, b"GET /%61dmin/x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")

        assert 200 == status
        assert "/%61dmin/x" == recorder.seen[0].raw_path

    async def test_dot_segments_forwarded_as_routed(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A path with dot segments goes upstream in the structure Gatehouse routed on."""
        gw = await make_gateway([_route(upstream_url, path_prefix="/admin", id="admin")])

        status, _, _ = await raw_exchange(gw.port, b"GET /public/../admin//x?y=1 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")

        assert 200 == status
        assert "/admin/x?y=1" == recorder.seen[0].raw_path

    async def test_host_kept_and_forwarded_headers_set_for_untrusted_peer(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """From an untrusted peer, client X-Forwarded-*/Forwarded are replaced with Gatehouse's own."""
        gw = await make_gateway([_route(upstream_url)])

        resp = await gw.get("/x", headers={
            "Host": "wiki.corp", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil", "Forwarded": "for=6.6.6.6", "X-Request-Id": "forged-id",
        })

        assert 200 == resp.status
        assert ["wiki.corp"] == recorder.header(0, "Host")
        assert ["127.0.0.1"] == recorder.header(0, "X-Forwarded-For")
        assert ["http"] == recorder.header(0, "X-Forwarded-Proto")
        assert ["wiki.corp"] == recorder.header(0, "X-Forwarded-Host")
        assert ['for=127.0.0.1;proto=http;host="wiki.corp"'] == recorder.header(0, "Forwarded")
        assert ["forged-id"] != recorder.header(0, "X-Request-Id")
        assert recorder.header(0, "X-Request-Id") == [resp.headers["X-Request-Id"]]

    async def test_forwarded_headers_appended_for_trusted_peer(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """From a trusted proxy, the chain is kept and extended, and its request id is kept."""
        gw = await make_gateway([_route(upstream_url)], trusted_proxies=["127.0.0.0/8"])

        resp = await gw.get("/x", headers={
            "Host": "wiki.corp", "X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "wiki.example", "Forwarded": "for=10.1.2.3", "X-Request-Id": "abc-123",
        })

        assert 200 == resp.status
        assert ["10.1.2.3, 127.0.0.1"] == recorder.header(0, "X-Forwarded-For")
        assert ["https"] == recorder.header(0, "X-Forwarded-Proto")
        assert ["wiki.example"] == recorder.header(0, "X-Forwarded-Host")
        assert ['for=10.1.2.3, for=127.0.0.1;proto=http;host="wiki.corp"'] == recorder.header(0, "Forwarded")
        assert ["abc-123"] == recorder.header(0, "X-Request-Id")
        assert "abc-123" == resp.headers["X-Request-Id"]

    async def test_unsafe_request_id_from_trusted_peer_is_replaced(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A trusted peer's request id with unsafe characters or excessive length is not kept."""
        gw = await make_gateway([_route(upstream_url)], trusted_proxies=["127.0.0.1"])

        resp = await gw.get("/x", headers={"X-Request-Id": "a" * 200})

        assert 200 == resp.status
        assert 32 == len(recorder.header(0, "X-Request-Id")[0])

    async def test_hop_by_hop_stripped_towards_upstream(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Hop-by-hop headers, and headers named in Connection, never reach the upstream."""
        gw = await make_gateway([_route(upstream_url)])

        resp = await gw.get("/x", headers={
            "Connection": "keep-alive, X-Private, X-Gatehouse-Ok", "X-Private": "1", "Keep-Alive": "timeout=5",
            "TE": "trailers", "Trailer": "X-T", "Proxy-Authorization": "Basic eA==", "Proxy-Foo": "1",
            "Upgrade": "h2c", "X-Kept": "yes",
        })

        assert 200 == resp.status
        sent = {k.lower() for k, _ in recorder.seen[0].headers}
        for name in ("x-private", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-foo", "upgrade", "x-gatehouse-ok"):
            assert name not in sent
        assert ["yes"] == recorder.header(0, "X-Kept")

    async def test_hop_by_hop_stripped_towards_client(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """The upstream's hop-by-hop and Connection-named headers never reach the client."""
        gw = await make_gateway([_route(upstream_url)])

        status, head, body = await raw_exchange(gw.port, b"GET /hop HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")

        lowered = head.lower()
        assert 200 == status
        assert b"x-secret-hop" not in lowered
        assert b"keep-alive:" not in lowered
        assert b"proxy-authenticate" not in lowered
        assert b"trailer:" not in lowered
        assert b"x-kept: yes" in lowered

    async def test_identity_headers_from_client_are_stripped_and_injected(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Client X-Gatehouse-* and extra strip names are dropped; the gate's headers are injected."""

        class Injecting:
            async def admit(self, request: web.Request, route: Route) -> Admission:
                return Admission.allow({"X-Gatehouse-User": "alice@example.com"}, strip=("Cf-Access-Jwt-Assertion",))

        gw = await make_gateway([_route(upstream_url)], gate=Injecting())

        resp = await gw.get("/x", headers={
            "X-Gatehouse-User": "mallory", "X-GATEHOUSE-Device-Serial": "FORGED", "Cf-Access-Jwt-Assertion": "t",
            "Connection": "X-Gatehouse-Groups", "X-Gatehouse-Groups": "admins",
        })

        assert 200 == resp.status
        assert ["alice@example.com"] == recorder.header(0, "X-Gatehouse-User")
        assert [] == recorder.header(0, "X-Gatehouse-Device-Serial")
        assert [] == recorder.header(0, "X-Gatehouse-Groups")
        assert [] == recorder.header(0, "Cf-Access-Jwt-Assertion")

    async def test_gate_refusal_is_sent_and_upstream_not_called(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """When the gate refuses, its response goes to the client and the upstream sees nothing."""

        class Refusing:
            async def admit(self, request: web.Request, route: Route) -> Admission:
                return Admission.refuse(web.Response(status=403, text="no"))

        gw = await make_gateway([_route(upstream_url)], gate=Refusing())

        resp = await gw.get("/x")

        assert 403 == resp.status
        assert [] == recorder.seen

    async def test_repeated_set_cookie_headers_are_kept(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """Upstream response headers reach the client, and the request id is added."""
        gw = await make_gateway([_route(upstream_url)])

        resp = await gw.get("/x")

        assert "a=1" == resp.headers["Set-Cookie"]
        assert resp.headers["X-Request-Id"]


GET_AND_POST = pytest.mark.parametrize("method", ["GET", "POST"])
"""A request without a body and one with a body: one proxy, the same rules."""


def _folded(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


class _InjectingAtOnce:
    """A gate that admits every request at once (``admit_now``) and through ``admit``, injecting a verified user."""

    def _admission(self) -> Admission:
        return Admission.allow({"X-Gatehouse-User": "alice@example.com"}, strip=("Cf-Access-Jwt-Assertion",))

    async def admit(self, request: web.Request, route: Route) -> Admission:
        return self._admission()

    def admit_now(self, app: web.Application, head: object, route: Route) -> Admission:
        return self._admission()

    async def prepare(self, app: web.Application, head: object) -> bool:
        return False


FORWARDING_FAMILY = {
    "Forwarded": "for=6.6.6.6", "X-Forwarded-Prefix": "/admin", "X-Forwarded-Port": "8443", "X-Forwarded-Server": "evil",
    "X-Forwarded-Ssl": "on", "X_Forwarded_For": "6.6.6.6", "X.Forwarded.Host": "evil", "X-Real-IP": "6.6.6.6",
    "X_Real_Ip": "6.6.6.6", "X-Original-URL": "/admin/x", "X.Original.URL": "/admin/x", "X-Original-URI": "/admin/x",
    "X-Rewrite-URL": "/admin/x", "X-Override-URL": "/admin/x", "Front-End-Https": "on", "X-Url-Scheme": "https",
    "X-HTTP-Method-Override": "DELETE", "X_HTTP_Method_Override": "DELETE", "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
}


class TestHeaderSpellings:
    @GET_AND_POST
    async def test_identity_headers_spelled_with_underscores_or_dots_never_reach_the_upstream(
        self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder, method: str,
    ) -> None:
        """A client header that folds (case, `_` and `.` read as `-`) to an identity, stripped or hop-by-hop name is dropped."""
        gw = await make_gateway([_route(upstream_url)], gate=_InjectingAtOnce())

        resp = await gw.request(method, "/x", data=b"body" if method == "POST" else None, headers={
            "X_Gatehouse_User": "mallory@evil.test", "X.Gatehouse.Groups": "admins", "x_gatehouse_device_serial": "FORGED",
            "X-Gatehouse_Email": "mallory@evil.test", "Cf_Access_Jwt_Assertion": "t", "Proxy_Authorization": "Basic eA==",
            "Keep.Alive": "timeout=5", "Connection": "X_Private", "X-Private": "1", "X-Kept_Name": "yes",
        })

        assert 200 == resp.status
        sent = [(_folded(k), v) for k, v in recorder.seen[0].headers]
        assert [("x-gatehouse-user", "alice@example.com")] == [(k, v) for k, v in sent if k.startswith("x-gatehouse-")]
        assert set() == {k for k, _ in sent} & {"cf-access-jwt-assertion", "proxy-authorization", "keep-alive", "x-private"}
        assert ["yes"] == recorder.header(0, "X-Kept_Name")

    @GET_AND_POST
    async def test_forwarding_family_from_an_untrusted_client_is_replaced(
        self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder, method: str,
    ) -> None:
        """From a client that is not a trusted proxy, no forwarding, URL- or method-override header passes; Gatehouse's own are set."""
        gw = await make_gateway([_route(upstream_url)])

        resp = await gw.request(method, "/x", data=b"body" if method == "POST" else None, headers={"Host": "wiki.corp", **FORWARDING_FAMILY})

        assert 200 == resp.status
        family = {_folded(k) for k in FORWARDING_FAMILY}
        sent = [(k, v) for k, v in recorder.seen[0].headers if _folded(k) in family or _folded(k).startswith("x-forwarded-")]
        assert [
            ("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "wiki.corp"),
            ("Forwarded", 'for=127.0.0.1;proto=http;host="wiki.corp"'),
        ] == sent
        assert method == recorder.seen[0].method

    @GET_AND_POST
    async def test_trusted_proxy_keeps_its_forwarding_headers_but_never_url_overrides_or_aliases(
        self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder, method: str,
    ) -> None:
        """A trusted proxy's canonical X-Forwarded-* pass; URL and method overrides and underscore or dot aliases never do."""
        gw = await make_gateway([_route(upstream_url)], trusted_proxies=["127.0.0.0/8"])

        resp = await gw.request(method, "/x", data=b"body" if method == "POST" else None, headers={
            "Host": "wiki.corp", **FORWARDING_FAMILY, "X-Forwarded-For": "10.1.2.3",
        })

        assert 200 == resp.status
        assert ["10.1.2.3, 127.0.0.1"] == recorder.header(0, "X-Forwarded-For")
        assert (["/admin"], ["8443"], ["on"]) == (
            recorder.header(0, "X-Forwarded-Prefix"), recorder.header(0, "X-Forwarded-Port"), recorder.header(0, "Front-End-Https"),
        )
        names = {k for k, _ in recorder.seen[0].headers}
        assert set() == names & {"X_Forwarded_For", "X.Forwarded.Host", "X-Original-URL", "X.Original.URL", "X-Original-URI",
                                 "X-Rewrite-URL", "X-Override-URL", "X-Real-IP", "X_Real_Ip", "X-HTTP-Method-Override",
                                 "X_HTTP_Method_Override", "X-HTTP-Method", "X-Method-Override"}


class TestBodies:
    async def test_post_body_streams_both_ways(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A chunked upload is streamed to the upstream and its echo streamed back."""
        gw = await make_gateway([_route(upstream_url)])

        async def gen() -> AsyncIterator[bytes]:
            for i in range(10):
                yield bytes([65 + i]) * 1000

        resp = await gw.post("/echo", data=gen())
        body = await resp.read()

        assert 200 == resp.status
        assert b"".join(bytes([65 + i]) * 1000 for i in range(10)) == body
        assert 10_000 == recorder.seen[0].body_bytes

    async def test_content_length_over_limit_is_413_without_upstream(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A declared body over the route's limit is refused before any upstream connection."""
        gw = await make_gateway([_route(upstream_url, max_body_bytes=100)])

        resp = await gw.post("/x", data=b"x" * 101, headers={"Accept": "application/json"})

        assert 413 == resp.status
        assert "body-too-large" == (await resp.json(content_type=None))["code"]
        assert [] == recorder.seen

    async def test_chunked_body_over_limit_is_413(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """A chunked body is counted while streaming and refused once it passes the limit."""
        gw = await make_gateway([_route(upstream_url, max_body_bytes=1000)])

        async def gen() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 100

        resp = await gw.post("/x", data=gen())

        assert 413 == resp.status
        assert all(seen.body_bytes <= 1000 for seen in recorder.seen)

    async def test_large_bodies_stream_in_bounded_memory(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """1 GiB up (echoed back) and 1 GiB down pass through with RSS growth well under 64 MiB."""
        gw = await make_gateway([_route(upstream_url, max_body_bytes=1 << 30)])
        size = 1 << 30
        block = b"z" * (1024 * 1024)
        gc.collect()
        before = _rss_bytes()
        peak = before

        async def gen() -> AsyncIterator[bytes]:
            nonlocal peak
            for _ in range(size // len(block)):
                peak = max(peak, _rss_bytes())
                yield block

        upload = await gw.post("/echo", data=gen(), headers={"Content-Length": str(size)})
        echoed = 0
        async for chunk in upload.content.iter_chunked(1024 * 1024):
            echoed += len(chunk)
        download = await gw.get(f"/big?n={size}")
        received = 0
        async for chunk in download.content.iter_chunked(1024 * 1024):
            received += len(chunk)
            peak = max(peak, _rss_bytes())

        assert (200, 200) == (upload.status, download.status)
        assert (size, size, size) == (echoed, received, recorder.seen[0].body_bytes)
        assert peak - before < 64 * 1024 * 1024


class TestFailures:
    async def test_refused_connect_is_502(self, make_gateway: MakeGateway, metrics: Metrics) -> None:
        """A refused upstream connection answers 502 and is counted as a connect error."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        gw = await make_gateway([_route(f"http://127.0.0.1:{port}")])

        resp = await gw.get("/x", headers={"Accept": "application/json"})

        assert 502 == resp.status
        assert "upstream-connect" == (await resp.json(content_type=None))["code"]
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "connect"})

    async def test_connect_timeout_is_504(self, make_gateway: MakeGateway, metrics: Metrics) -> None:
        """An upstream whose accept queue is full (connects hang) gets 504 after the connect timeout."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = [socket.socket() for _ in range(3)]
            for filler in fillers:
                filler.setblocking(False)
                try:
                    filler.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
            gw = await make_gateway([_route(f"http://127.0.0.1:{port}", connect_timeout_s=0.2)])

            resp = await gw.get("/x", headers={"Accept": "application/json"})
            for filler in fillers:
                filler.close()

        assert 504 == resp.status
        assert "upstream-timeout" == (await resp.json(content_type=None))["code"]
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "timeout"})

    async def test_read_timeout_is_504(self, make_gateway: MakeGateway, upstream_url: str, metrics: Metrics) -> None:
        """An upstream that never answers gets 504 after the route's read timeout."""
        gw = await make_gateway([_route(upstream_url, read_timeout_s=0.2)])

        resp = await gw.get("/hang", headers={"Accept": "text/html"})

        assert 504 == resp.status
        assert resp.content_type == "text/html"
        assert "did not answer in time" in await resp.text()
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "timeout"})

    async def test_upstream_breaking_off_mid_body_truncates_the_client_response(self, make_gateway: MakeGateway, upstream_url: str, metrics: Metrics) -> None:
        """When the upstream hangs up mid-body the client sees a broken response, never a clean end."""
        gw = await make_gateway([_route(upstream_url)])

        resp = await gw.get("/break")
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()

        assert 200 == resp.status
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "protocol"})


def _request(method: str, path: str, *, body_bytes: int = 1) -> bytes:
    """A request head (a GET, or a POST announcing ``body_bytes`` of body, none of it sent yet)."""
    length = f"Content-Length: {body_bytes}\r\n" if method == "POST" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: svc\r\n{length}\r\n".encode()


async def _completed(log_lines: LogLines) -> dict[str, Any]:
    """The request.completed line, once written."""
    async with asyncio.timeout(10):
        while not (lines := log_lines.events("request.completed")):
            await asyncio.sleep(0.01)  # polls for an event; no timeout is waited out
    assert 1 == len(lines)
    return lines[0]


def _client_gone(gw: Any) -> bool:
    """True once neither lane holds a connected client connection."""
    return not gw.server.lane.connections and all(h.transport is None for h in gw.server.runner.server.connections)


def _statuses(metrics: Metrics) -> dict[str, float]:
    samples = metrics.registry.get_sample_value
    return {c: samples("gatehouse_requests_total", {"route": "app", "code_class": c}) or 0.0 for c in ("2xx", "4xx", "5xx")}


class TestClientLeaving:
    @GET_AND_POST
    async def test_client_leaving_mid_response_is_499(
        self, log_lines: LogLines, make_gateway: MakeGateway, upstream_url: str, metrics: Metrics, caplog: pytest.LogCaptureFixture, method: str,
    ) -> None:
        """A client that hangs up while its response streams is logged and counted as 499, with or without a request body, with no error."""
        gw = await make_gateway([_route(upstream_url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(_request(method, f"/big?n={256 * 1024 * 1024}") + (b"x" if method == "POST" else b""))
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(64 * 1024)
        writer.transport.abort()
        line = await _completed(log_lines)

        assert (method, 499, 200) == (line["method"], line["status"], line["upstream_status"])
        assert {"2xx": 0.0, "4xx": 1.0, "5xx": 0.0} == _statuses(metrics)
        assert [] == [e for e in log_lines.events() if e["level"] not in ("debug", "info")]
        assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]

    @GET_AND_POST
    async def test_client_leaving_before_the_upstream_answered_is_499(
        self, log_lines: LogLines, make_gateway: MakeGateway, metrics: Metrics, caplog: pytest.LogCaptureFixture, method: str,
    ) -> None:
        """A client that hangs up while the upstream is still working is 499, with or without a request body, not an upstream or server error."""
        arrived, release = asyncio.Event(), asyncio.Event()

        async def respond(head: bytes, writer: asyncio.StreamWriter) -> bool:
            arrived.set()
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")  # a body still streaming
            await writer.drain()
            await asyncio.Event().wait()
            return False

        upstream = RawUpstream(respond)
        gw = await make_gateway([_route(await upstream.start())])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(_request(method, "/slow") + (b"x" if method == "POST" else b""))
            await asyncio.wait_for(arrived.wait(), 10)
            writer.transport.abort()
            async with asyncio.timeout(10):
                while not _client_gone(gw):
                    await asyncio.sleep(0.01)  # until the gateway has seen the client go
            release.set()
            line = await _completed(log_lines)
        finally:
            await upstream.close()

        assert (method, 499) == (line["method"], line["status"])
        assert {"2xx": 0.0, "4xx": 1.0, "5xx": 0.0} == _statuses(metrics)
        assert [] == [e for e in log_lines.events() if e["level"] not in ("debug", "info")]
        assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]

    async def test_client_leaving_mid_upload_is_499(
        self, log_lines: LogLines, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder, metrics: Metrics,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A client that hangs up halfway through its request body is 499, not an upstream failure."""
        gw = await make_gateway([_route(upstream_url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(_request("POST", "/echo", body_bytes=1024 * 1024) + b"x" * 1024)
        await writer.drain()
        async with asyncio.timeout(10):
            while not recorder.seen:
                await asyncio.sleep(0.01)  # until the upload has reached the upstream
        writer.transport.abort()
        line = await _completed(log_lines)

        assert ("POST", 499) == (line["method"], line["status"])
        assert {"2xx": 0.0, "4xx": 1.0, "5xx": 0.0} == _statuses(metrics)
        assert None is metrics.registry.get_sample_value("gatehouse_upstream_errors_total", {"route": "app", "kind": "protocol"})
        assert [] == [e for e in log_lines.events() if e["level"] not in ("debug", "info")]
        assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]


class TestWebSocket:
    async def test_frames_relayed_both_ways(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Text, binary and ping reach the upstream and its answers reach the client."""
        gw = await make_gateway([_route(upstream_url)])

        async with gw.session.ws_connect(gw.make_url("/ws"), protocols=("chat",), autoping=False) as ws:
            await ws.send_str("hi")
            text = await ws.receive(timeout=5)
            await ws.send_bytes(b"\x00\x01")
            binary = await ws.receive(timeout=5)
            await ws.ping(b"p")
            pong = await ws.receive(timeout=5)
            await ws.close(code=4001, message=b"done")

        assert "chat" == ws.protocol
        assert (aiohttp.WSMsgType.TEXT, "echo:hi") == (text.type, text.data)
        assert (aiohttp.WSMsgType.BINARY, b"echo:\x00\x01") == (binary.type, binary.data)
        assert (aiohttp.WSMsgType.PONG, b"p") == (pong.type, pong.data)
        await gw.close()
        assert [4001] == recorder.ws_close_codes

    async def test_upstream_close_code_reaches_client(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """The upstream's close code is relayed to the client."""
        gw = await make_gateway([_route(upstream_url)])

        async with gw.session.ws_connect(gw.make_url("/close/4002")) as ws:
            msg = await ws.receive(timeout=5)

        assert aiohttp.WSMsgType.CLOSE == msg.type
        assert 4002 == msg.data



class TestCookieRemoval:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("a=1; gatehouse_session=x; b=2", "a=1; b=2"),
            ("gatehouse_session=x", ""),
            ("a=1;b=2;gatehouse_session=x;", "a=1; b=2"),
            (" gatehouse_session = x ; a=1", "a=1"),
            ("gatehouse_session_extra=1; a=1", "gatehouse_session_extra=1; a=1"),
        ],
    )
    def test_named_cookies_are_removed_others_kept_in_order(self, header: str, expected: str) -> None:
        assert expected == without_cookies(header, {"gatehouse_session"})

    def test_a_cookie_header_left_empty_is_not_sent(self) -> None:
        lines = upstream_header_lines(
            [(b"Cookie", b"gatehouse_session=x"), (b"Host", b"svc")], peer="10.0.0.1", trusted=False, scheme="http",
            host="svc", request_id="r", drop_cookies={"gatehouse_session"},
        )

        assert b"cookie:" not in b"".join(lines).lower()


_FOLD_REFERENCE = bytes.maketrans(b"_.", b"--")


def _reference_header_lines(
    raw: list[tuple[bytes, bytes]], *, peer: str | None, trusted: bool, scheme: str, host: str, request_id: str,
    inject: dict[str, str], strip: frozenset[str], drop_cookies: frozenset[str],
) -> bytes:
    """The module docstring's header rules applied one header at a time, nothing remembered (the implementation before its memos)."""
    from gateway.proxy.rules import _DROPPED_B, _DROPPED_PREFIXES_B, _FORWARDING_B, _FORWARDING_PREFIX_B, _MERGED_B, _quote_node

    def fold(name: bytes) -> bytes:
        return name.lower().translate(_FOLD_REFERENCE)

    named = frozenset(fold(t.strip()) for n, v in raw if n.lower() == b"connection" for t in v.split(b",")) - {b""}
    stripped = frozenset(fold(n.encode()) for n in strip)
    injected = frozenset(fold(n.encode()) for n in inject)
    cookies = frozenset(c.lower().encode() for c in drop_cookies)
    prior: dict[bytes, list[bytes]] = {}
    out = []
    for name, value in raw:
        lower, folded = name.lower(), fold(name)
        if folded in _DROPPED_B or folded.startswith(_DROPPED_PREFIXES_B) or folded in stripped or folded in named or folded in injected:
            continue
        if folded in _FORWARDING_B or folded.startswith(_FORWARDING_PREFIX_B):
            if not trusted or folded != lower:
                continue
            if folded in _MERGED_B:
                prior.setdefault(folded, []).append(value)
                continue
        if cookies and lower == b"cookie":
            value = b"; ".join(p.strip() for p in value.split(b";") if p.strip() and p.strip().partition(b"=")[0].strip() not in cookies)
            if not value:
                continue
        out.append(name + b": " + value + b"\r\n")
    node = peer or "unknown"
    ours = f"for={_quote_node(node)};proto={scheme};host=\"{host}\""
    proto, fwd_host, forwarded_for, forwarded = scheme, host, node, ours
    if trusted:
        def joined(key: bytes) -> str:
            return ", ".join(v.decode("utf-8", "surrogateescape") for v in prior.get(key, ()))

        proto = prior[b"x-forwarded-proto"][0].decode("utf-8", "surrogateescape") if b"x-forwarded-proto" in prior else scheme
        fwd_host = prior[b"x-forwarded-host"][0].decode("utf-8", "surrogateescape") if b"x-forwarded-host" in prior else host
        forwarded_for = f"{joined(b'x-forwarded-for')}, {node}" if joined(b"x-forwarded-for") else node
        forwarded = f"{joined(b'forwarded')}, {ours}" if joined(b"forwarded") else ours
    tail = (
        f"X-Forwarded-For: {forwarded_for}\r\nX-Forwarded-Proto: {proto}\r\nX-Forwarded-Host: {fwd_host}\r\n"
        f"Forwarded: {forwarded}\r\nX-Request-Id: {request_id}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in inject.items())
    )
    return b"".join(out) + tail.encode("utf-8", "surrogateescape")


_NAMES = st.sampled_from([
    b"Host", b"Accept", b"Cookie", b"cookie", b"Connection", b"connection", b"Keep-Alive", b"Upgrade", b"Transfer-Encoding",
    b"Proxy-Authorization", b"X-Gatehouse-User", b"X_Gatehouse_User", b"x.gatehouse.email", b"Authorization",
    b"X-Forwarded-For", b"x-forwarded-for", b"X_Forwarded_For", b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Forwarded",
    b"X-Forwarded-Port", b"Front-End-Https", b"X-Url-Scheme", b"X-Request-Id", b"X-Real-IP", b"X-Original-URL",
    b"Sec-WebSocket-Key", b"sec_websocket_protocol", b"X-Custom", b"x-custom", b"X-Device-Assertion", b"Expect", b"TE",
])
_VALUES = st.sampled_from([
    b"1", b"a, b", b"keep-alive, X-Custom", b"X-Forwarded-For, forwarded, cookie", b"close, x_custom, Accept", b"upgrade", b"10.0.0.9", b"for=10.0.0.9",
    b"a=1; gatehouse_session=x; b=2", b"gatehouse_session=x", b"https", b"caf\xc3\xa9",
])


class TestHeaderLines:
    @settings(max_examples=400, deadline=None)
    @given(
        raw=st.lists(st.tuples(_NAMES, _VALUES), max_size=12),
        trusted=st.booleans(),
        peer=st.sampled_from([None, "10.0.0.1", "::1"]),
        inject=st.sampled_from([{}, {"X-Gatehouse-User": "u", "X-Gatehouse-Email": "u@x"}, {"X-Custom": "ours"}]),
        strip=st.sampled_from([frozenset(), frozenset({"authorization", "x-device-assertion"})]),
        drop_cookies=st.sampled_from([frozenset(), frozenset({"gatehouse_session"})]),
    )
    def test_same_lines_as_the_rules_one_header_at_a_time(
        self, raw: list[tuple[bytes, bytes]], trusted: bool, peer: str | None, inject: dict[str, str],
        strip: frozenset[str], drop_cookies: frozenset[str],
    ) -> None:
        """The remembered name kinds and forwarding lines give byte for byte what the rules applied afresh give."""
        expected = _reference_header_lines(
            raw, peer=peer, trusted=trusted, scheme="https", host="svc.example", request_id="rid", inject=inject, strip=strip,
            drop_cookies=drop_cookies,
        )

        got = b"".join(upstream_header_lines(
            raw, peer=peer, trusted=trusted, scheme="https", host="svc.example", request_id="rid", inject=inject, strip=strip,
            drop_cookies=drop_cookies,
        ))

        assert expected == got
