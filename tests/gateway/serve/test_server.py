"""The server for real: limits, head timeout, TLS listeners, metrics listener, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
import trustme
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.gate.admission import OpenGate
from gateway.keys import RELOAD_HOOKS
from gateway.metrics import Metrics
from gateway.serve.server import Gateway, GatewaySite, serve, start_gateway
from gateway.config.settings import Settings
from tests.gateway.conftest import Recorder, make_settings, raw_exchange
from tests.gateway.fullstack import Keys, gatehouse_config, ingest_headers, mac_item


@pytest.fixture
async def gateway(metrics: Metrics, upstream_url: str) -> AsyncIterator[Gateway]:
    settings = make_settings(
        [{"id": "app", "upstream": upstream_url, "tier": "low"}],
        header_read_timeout_s=0.3, keepalive_timeout_s=30, max_header_count=20, max_header_bytes=2048,
    )
    gw = await start_gateway(settings, metrics=metrics, gate=OpenGate())
    yield gw
    await gw.stop()


class TestLimits:
    async def test_half_sent_head_is_dropped_after_header_timeout(self, gateway: Gateway) -> None:
        """A client that sends half a request head is disconnected after header_read_timeout_s."""
        port = gateway.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET /x HTTP/1.1\r\nHost: svc\r\nX-Slow: ")
        await writer.drain()

        data = await asyncio.wait_for(reader.read(), 10)
        elapsed = time.monotonic() - started
        writer.close()

        assert b"" == data
        assert elapsed < 5  # far below the 30 s keep-alive timeout

    async def test_silent_connection_is_closed_after_header_timeout(self, gateway: Gateway) -> None:
        """A connection that never sends a byte is closed after header_read_timeout_s, not the keep-alive timeout."""
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.addresses[0][1])
        started = time.monotonic()

        data = await asyncio.wait_for(reader.read(), 10)
        elapsed = time.monotonic() - started
        writer.close()

        assert b"" == data
        assert elapsed < 5  # far below the 30 s keep-alive timeout

    async def test_idle_connection_is_closed_after_keepalive_timeout(self, metrics: Metrics, upstream_url: str) -> None:
        """A connection idle after its response is closed after keepalive_timeout_s."""
        settings = make_settings([{"id": "app", "upstream": upstream_url, "tier": "low"}], keepalive_timeout_s=0.3, header_read_timeout_s=30)
        gw = await start_gateway(settings, metrics=metrics, gate=OpenGate())
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.addresses[0][1])
            writer.write(b"GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            started = time.monotonic()
            data = await asyncio.wait_for(reader.read(), 10)
            elapsed = time.monotonic() - started
            writer.close()
        finally:
            await gw.stop()

        assert b"" == data
        assert elapsed < 5  # far below the 30 s head timeout

    async def test_complete_head_is_served_and_connection_kept(self, gateway: Gateway, recorder: Recorder) -> None:
        """Two requests on one kept-alive connection are both answered; the head timer never fires."""
        port = gateway.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        answers = []
        for _ in range(2):
            writer.write(b"GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            answers.append(head.split(b" ")[1])
        writer.close()

        assert [b"200", b"200"] == answers
        assert 2 == len(recorder.seen)

    async def test_too_many_headers_is_431(self, gateway: Gateway, recorder: Recorder) -> None:
        """More headers than max_header_count are refused before any upstream sees them."""
        headers = "".join(f"X-H{i}: v\r\n" for i in range(30))

        with structlog.testing.capture_logs() as logs:
            status, _, _ = await raw_exchange(gateway.addresses[0][1], f"GET /x HTTP/1.1\r\nHost: svc\r\n{headers}\r\n".encode())

        assert 431 == status
        assert [] == recorder.seen
        assert ["request.malformed", "request.completed"] == [e["event"] for e in logs]  # why, then the one line every request gets

    async def test_oversized_header_is_refused(self, gateway: Gateway, recorder: Recorder) -> None:
        """A header line longer than max_header_bytes is refused."""
        status, _, _ = await raw_exchange(gateway.addresses[0][1], b"GET /x HTTP/1.1\r\nHost: svc\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")

        assert status in (400, 431)
        assert [] == recorder.seen


class TestListeners:
    async def test_metrics_on_their_own_listener_only(self, metrics: Metrics, upstream_url: str) -> None:
        """Metrics are served on the metrics address and never on the proxy port."""
        settings = make_settings([]).model_copy(update={"metrics": make_settings([]).metrics.model_copy(update={"address": "127.0.0.1:0"})})
        gw = await start_gateway(settings, metrics=metrics, gate=OpenGate())
        try:
            async with aiohttp.ClientSession() as session:
                proxy_port = gw.addresses[0][1]
                host, port = gw.metrics_address or ("", 0)
                async with session.get(f"http://127.0.0.1:{proxy_port}/metrics") as on_proxy:
                    on_proxy_status = on_proxy.status
                async with session.get(f"http://{host}:{port}/metrics") as scraped:
                    text = await scraped.text()
        finally:
            await gw.stop()

        assert 404 == on_proxy_status
        assert 200 == scraped.status
        assert 'gatehouse_requests_total{code_class="4xx",route="-"} 1.0' in text

    async def test_plain_and_tls_listeners_with_client_certificates(self, tmp_path: Path, metrics: Metrics, upstream_url: str, recorder: Recorder) -> None:
        """One gateway listens on plain HTTP and on TLS requiring a client certificate from the CA."""
        ca = _tls_files(tmp_path)
        device = ca.issue_cert("device-1", common_name="SERIAL123")
        base = make_settings([{"id": "app", "upstream": upstream_url, "tier": "low"}])
        settings = base.model_copy(update={"listeners": (
            base.listeners[0],
            base.listeners[0].model_copy(update={"tls": _tls(tmp_path)}),
        )})
        gw = await start_gateway(settings, metrics=metrics, gate=OpenGate())
        (plain, tls_port) = (gw.addresses[0][1], gw.addresses[1][1])
        with_cert = ssl.create_default_context()
        ca.configure_trust(with_cert)
        device.configure_cert(with_cert)
        without_cert = ssl.create_default_context()
        ca.configure_trust(without_cert)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{plain}/.gatehouse/healthz") as r1:
                    plain_status = r1.status
                async with session.get(f"https://127.0.0.1:{tls_port}/over-tls", ssl=with_cert) as r2:
                    tls_status = r2.status
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(f"https://127.0.0.1:{tls_port}/.gatehouse/healthz", ssl=without_cert) as r3:
                        await r3.read()
        finally:
            await gw.stop()

        assert (200, 200) == (plain_status, tls_status)
        assert ["https"] == recorder.header(0, "X-Forwarded-Proto")


class TestTlsHandshake:
    async def test_certificate_expiry_is_exported_per_listener(self, tmp_path: Path, metrics: Metrics) -> None:
        """Each TLS listener's certificate notAfter is a gauge, labelled with the listener's configured address."""
        not_after = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
        _tls_files(tmp_path, not_after=not_after)
        base = make_settings([])
        settings = base.model_copy(update={"listeners": (base.listeners[0].model_copy(update={"tls": _tls(tmp_path)}),)})

        gw = await start_gateway(settings, metrics=metrics, gate=OpenGate())
        await gw.stop()

        assert not_after.timestamp() == metrics.registry.get_sample_value(
            "gatehouse_tls_certificate_expiry_timestamp_seconds", {"listener": settings.listeners[0].address})

    @pytest.mark.parametrize("handshake", [False, True], ids=["before-the-handshake", "after-the-handshake"])
    async def test_a_silent_client_is_dropped_after_header_timeout(self, tmp_path: Path, metrics: Metrics, handshake: bool) -> None:
        """A client that never starts the TLS handshake, or completes it and then sends nothing, is dropped after header_read_timeout_s."""
        ca = _tls_files(tmp_path)
        client = None
        if handshake:
            client = ssl.create_default_context()
            ca.configure_trust(client)
            ca.issue_cert("device-1", common_name="SERIAL123").configure_cert(client)
        base = make_settings([], header_read_timeout_s=0.3, keepalive_timeout_s=30)
        settings = base.model_copy(update={"listeners": (base.listeners[0].model_copy(update={"tls": _tls(tmp_path)}),)})
        gw = await start_gateway(settings, metrics=metrics, gate=OpenGate())
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.addresses[0][1], ssl=client)
            started = time.monotonic()
            data = await asyncio.wait_for(reader.read(), 10)
            elapsed = time.monotonic() - started
            writer.close()
        finally:
            await gw.stop()

        assert b"" == data
        assert elapsed < 5


def _tls_files(tmp_path: Path, **cert: Any) -> trustme.CA:
    """A CA, and the listener's certificate (for 127.0.0.1), key and client CA written where ``_tls`` reads them."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", **cert)
    server.private_key_pem.write_to_path(tmp_path / "key.pem")
    server.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    return ca


def _tls(tmp_path: Path) -> Any:
    from gateway.config.settings import TlsSettings

    return TlsSettings(cert=tmp_path / "cert.pem", key=tmp_path / "key.pem", client_ca=tmp_path / "ca.pem", client_cert="required")


def _write_config(path: Path, routes: list[dict[str, object]], **extra: object) -> None:
    raw: dict[str, object] = {"listeners": [{"address": "127.0.0.1:0"}], "metrics": {"address": None}, "routes": routes, **extra}
    path.write_text(yaml.safe_dump(raw))


class TestReload:
    async def test_sighup_keeps_old_config_when_invalid_and_switches_when_valid(self, tmp_path: Path, metrics: Metrics, upstream_url: str, recorder: Recorder) -> None:
        """A bad config on SIGHUP is rejected and counted; a good one switches routes for new requests."""
        from gateway.config.settings import load_settings

        config = tmp_path / "gatehouse.yaml"
        _write_config(config, [{"id": "old", "upstream": upstream_url, "tier": "low", "path_prefix": "/old"}])
        started: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(lambda: load_settings(config, {}), stop=stop, on_started=started.set_result, metrics=metrics, gate=OpenGate()))
        gw = await asyncio.wait_for(started, 10)
        hooked: list[str] = []

        async def hook(settings: Settings) -> None:
            hooked.append(settings.routes[0].id)

        gw.app[RELOAD_HOOKS].append(hook)
        base = f"http://127.0.0.1:{gw.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as session:
                with structlog.testing.capture_logs() as logs:
                    config.write_text("routes: [{id: BAD, upstream: nope}]\nlisteners: []\n")
                    os.kill(os.getpid(), signal.SIGHUP)
                    bad_outcome = await asyncio.wait_for(gw.reload_results.get(), 10)
                    async with session.get(f"{base}/old/x") as still_old:
                        still_old_status = still_old.status
                    _write_config(config, [{"id": "new", "upstream": upstream_url, "tier": "low", "path_prefix": "/new"}])
                    os.kill(os.getpid(), signal.SIGHUP)
                    good_outcome = await asyncio.wait_for(gw.reload_results.get(), 10)
                    async with session.get(f"{base}/old/x") as old_gone:
                        old_gone_status = old_gone.status
                    async with session.get(f"{base}/new/x") as new_route:
                        new_status = new_route.status
        finally:
            stop.set()
            exit_code = await asyncio.wait_for(task, 10)

        events = [e["event"] for e in logs]
        assert (False, True) == (bad_outcome, good_outcome)
        assert ["new"] == hooked
        assert (200, 404, 200) == (still_old_status, old_gone_status, new_status)
        assert ["config.reload_failed", "config.reloaded"] == [e for e in events if e.startswith("config.")]
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_config_reloads_total", {"what": "config", "outcome": "failure"})
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_config_reloads_total", {"what": "config", "outcome": "success"})
        assert 0 == exit_code


_CHILD = """
import sys
from gateway.logging import configure_logging
from gateway.serve.workers import run
configure_logging(fmt="json")
sys.exit(run(sys.argv[1], environ={}))
"""


_DOWNLOAD = bytes(range(256)) * (32 * 1024)  # 8 MiB whose every byte says where it belongs
_SLOW_CLIENTS = 6


async def _slow_client(port: int, method: str, ready: asyncio.Event, stopping: asyncio.Event) -> bytes:
    """Ask for /download with a small receive buffer; read the head, then nothing until ``stopping``, then a little per turn."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=32 * 1024)
    try:
        body = b"Content-Length: 0\r\n" if method == "POST" else b""
        writer.write(method.encode() + b" /download HTTP/1.1\r\nHost: svc\r\n" + body + b"\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0]
        ready.set()
        await stopping.wait()
        received = bytearray()
        while chunk := await reader.read(16 * 1024):
            received += chunk
            await asyncio.sleep(0)  # one read per turn of the loop: slower than the gateway can send
        return bytes(received)
    finally:
        writer.close()


class TestShutdown:
    @pytest.mark.parametrize("method", ["GET", "POST"], ids=["get", "post"])
    async def test_stop_writes_out_every_response_in_flight(self, metrics: Metrics, method: str) -> None:
        """Responses still streaming to slow readers when the gateway stops are written out in full before stop() returns."""

        async def download(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Length": str(len(_DOWNLOAD))})
            await response.prepare(request)
            for start in range(0, len(_DOWNLOAD), 256 * 1024):
                await response.write(_DOWNLOAD[start:start + 256 * 1024])
            await response.write_eof()
            return response

        upstream_app = web.Application()
        upstream_app.router.add_route("*", "/download", download)
        upstream = TestServer(upstream_app, host="127.0.0.1")
        await upstream.start_server()
        settings = make_settings([{"id": "app", "upstream": str(upstream.make_url("")).rstrip("/"), "tier": "low"}], shutdown_grace_s=30)
        gw = await start_gateway(settings, metrics=metrics, gate=OpenGate())
        site = next(site for site in gw.runner.sites if isinstance(site, GatewaySite))
        assert site.lane is not None
        stopping = asyncio.Event()
        try:
            readies = [asyncio.Event() for _ in range(_SLOW_CLIENTS)]
            clients = [asyncio.create_task(_slow_client(gw.addresses[0][1], method, ready, stopping)) for ready in readies]
            await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 10)
            lanes, handed = site.lane.connections, gw.runner.server.connections  # type: ignore[union-attr]
            transports = [conn.transport for conn in lanes] + [handler.transport for handler in handed]
            assert _SLOW_CLIENTS == len(transports)
            for transport in transports:  # a slow link: most of a response waits in the gateway, not in the kernel
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            stop = asyncio.create_task(gw.stop())
            while not site.lane.closing:
                await asyncio.sleep(0)  # until stop() has begun
            stopping.set()
            await asyncio.wait_for(stop, 60)
            for transport in transports:
                if transport.get_write_buffer_size():
                    transport.abort()  # what the process's exit after stop() does to whatever is still unsent
            bodies = await asyncio.wait_for(asyncio.gather(*clients), 10)
        finally:
            stopping.set()
            await upstream.close()

        assert [len(_DOWNLOAD)] * _SLOW_CLIENTS == [len(body) for body in bodies]
        assert all(body == _DOWNLOAD for body in bodies)

    async def test_sigterm_drains_in_flight_request_and_exits_0(self, tmp_path: Path, upstream_url: str, recorder: Recorder) -> None:
        """On SIGTERM the full gateway stops accepting, finishes the in-flight request, and exits 0."""
        keys = Keys(tmp_path / "keys")
        raw = gatehouse_config(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=upstream_url, server={"shutdown_grace_s": 10})
        raw["routes"] = [{"id": "app", "upstream": upstream_url, "tier": "low"}]
        config = tmp_path / "gatehouse.yaml"
        config.write_text(yaml.safe_dump(raw))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[3],
        )
        assert child.stdout is not None
        now = datetime.now(UTC)  # the child runs on the real clock; the snapshot must be fresh for it
        try:
            started = await asyncio.wait_for(_read_event(child.stdout, "gateway.started"), 20)
            url = started["listeners"][0]
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/.gatehouse/api/v1/snapshots", json={"snapshots": [mac_item("C02OK", at=now)]}, headers=ingest_headers()) as ingested:
                    assert 200 == ingested.status
                token = keys.token("alice@example.com", device="C02OK", now=now)
                in_flight = asyncio.create_task(session.get(f"{url}/slow", headers={"Authorization": f"Bearer {token}"}))
                await asyncio.wait_for(recorder.arrived.wait(), 10)
                child.send_signal(signal.SIGTERM)
                await asyncio.wait_for(_read_event(child.stdout, "gateway.stopping"), 10)
                with pytest.raises(aiohttp.ClientConnectionError):
                    async with session.get(f"{url}/x") as refused:
                        await refused.read()
                recorder.release.set()
                response = await asyncio.wait_for(in_flight, 10)
                body = await response.read()
                response.release()
            exit_code = await asyncio.wait_for(child.wait(), 15)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()

        assert 200 == response.status
        assert b'"raw_path":"/slow"' in body
        assert 0 == exit_code


async def _read_event(stream: asyncio.StreamReader, name: str) -> dict[str, Any]:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"the gateway exited before logging {name}")
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if event.get("event") == name:
            return dict(event)
