"""The lean upstream exchange on real sockets: pooling, retries, framing and connection reuse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.client_reqrep import ClientRequest
from multidict import CIMultiDict
from yarl import URL

from gateway.upstream import connection_key, send
from tests.gateway.conftest import RawUpstream

async def ok(head: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    return True


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False) as client:
        yield client


async def _get(session: aiohttp.ClientSession, base: str, path: str = "/x", method: str = "GET") -> tuple[int, bytes]:
    response = await send(session, method, base, path, CIMultiDict({"Host": "svc"}), None, connect_timeout=2, read_timeout=2)
    try:
        body = await response.content.read()
        response.release()
    finally:
        response.close()
    return response.status, body


class TestUpstream:
    async def test_connection_key_is_aiohttps(self) -> None:
        """The pool key is the one aiohttp's own ClientRequest computes, so pooled connections are shared."""
        loop = asyncio.get_running_loop()

        plain = ClientRequest("GET", URL("http://127.0.0.1:8080/a?b"), loop=loop, ssl=True)
        tls = ClientRequest("GET", URL("https://svc.corp.example:8443/base/a"), loop=loop, ssl=True)

        assert plain.connection_key == connection_key("http://127.0.0.1:8080")
        assert tls.connection_key == connection_key("https://svc.corp.example:8443/base")

    async def test_keep_alive_connection_is_reused(self, session: aiohttp.ClientSession) -> None:
        """Sequential requests whose responses were read to the end share one connection."""
        upstream = RawUpstream(ok)
        base = await upstream.start()

        results = [await _get(session, base) for _ in range(3)]
        await upstream.close()

        assert [(200, b"ok")] * 3 == results
        assert 1 == upstream.connections

    async def test_request_head_is_sent_as_given(self, session: aiohttp.ClientSession) -> None:
        """The request line carries the raw target; no User-Agent, Accept or other header is added."""
        upstream = RawUpstream(ok)
        base = await upstream.start()

        await _get(session, base, "/a/%C3%A9?q=%2F")
        await upstream.close()

        assert b"GET /a/%C3%A9?q=%2F HTTP/1.1\r\nHost: svc\r\n\r\n" == upstream.heads[0]

    async def test_stale_keep_alive_connection_is_retried_once(self, session: aiohttp.ClientSession) -> None:
        """A GET on a pooled connection the upstream closed without answering is sent again on a new one."""
        answered = 0

        async def close_after_first(head: bytes, writer: asyncio.StreamWriter) -> bool:
            nonlocal answered
            if answered == 1 and upstream.connections == 1:
                return False  # hang up without answering the second request
            answered += 1
            await ok(head, writer)
            return True

        upstream = RawUpstream(close_after_first)
        base = await upstream.start()

        first = await _get(session, base)
        second = await _get(session, base)
        await upstream.close()

        assert ((200, b"ok"), (200, b"ok")) == (first, second)
        assert 2 == upstream.connections

    async def test_post_without_body_is_not_retried(self, session: aiohttp.ClientSession) -> None:
        """A POST whose connection was lost is not sent twice: the error reaches the caller."""
        async def hang_up(head: bytes, writer: asyncio.StreamWriter) -> bool:
            if head.startswith(b"POST"):
                return False
            await ok(head, writer)
            return True

        upstream = RawUpstream(hang_up)
        base = await upstream.start()
        await _get(session, base)

        with pytest.raises(aiohttp.ServerDisconnectedError):
            await _get(session, base, method="POST")
        await upstream.close()

        assert 2 == len(upstream.heads)
        assert b"Content-Length: 0" in upstream.heads[1]

    async def test_body_of_unknown_length_is_sent_chunked(self, session: aiohttp.ClientSession) -> None:
        """A streamed body without Content-Length goes out with chunked framing."""
        upstream = RawUpstream(ok)
        base = await upstream.start()

        async def body() -> AsyncIterator[bytes]:
            yield b"abc"
            yield b"de"

        response = await send(session, "POST", base, "/up", CIMultiDict({"Host": "svc"}), body(), connect_timeout=2, read_timeout=2)
        await response.content.read()
        response.release()
        await upstream.close()

        assert b"transfer-encoding: chunked" in upstream.heads[0].lower()
        assert b"abc\r\nde\r\n\r\n" == upstream.bodies[0]

    async def test_early_answer_while_body_still_sending_closes_the_connection(self, session: aiohttp.ClientSession) -> None:
        """When the upstream answers before the whole body was sent, that connection is never reused."""
        gate = asyncio.Event()

        async def early(head: bytes, writer: asyncio.StreamWriter) -> bool:
            await ok(head, writer)
            return True

        class EarlyUpstream(RawUpstream):
            async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self.connections += 1
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                if head.startswith(b"POST"):
                    await early(head, writer)  # answer at once, read nothing of the body
                    await gate.wait()
                    writer.close()
                    return
                await ok(head, writer)
                writer.close()

        upstream = EarlyUpstream(early)
        base = await upstream.start()

        async def body() -> AsyncIterator[bytes]:
            yield b"first"
            await gate.wait()
            yield b"never sent on a reused connection"

        response = await send(session, "POST", base, "/up", CIMultiDict({"Host": "svc"}), body(), connect_timeout=2, read_timeout=2)
        status = response.status
        await response.content.read()
        response.release()
        gate.set()
        after = await _get(session, base)
        await upstream.close()

        assert (200, (200, b"ok")) == (status, after)
        assert 2 == upstream.connections

    async def test_head_response_has_no_body(self, session: aiohttp.ClientSession) -> None:
        """A HEAD response's Content-Length does not make the parser wait for a body; the connection is reused."""
        async def head_ok(head: bytes, writer: asyncio.StreamWriter) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" if head.startswith(b"HEAD") else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return True

        upstream = RawUpstream(head_ok)
        base = await upstream.start()

        first = await _get(session, base, method="HEAD")
        second = await _get(session, base)
        await upstream.close()

        assert ((200, b""), (200, b"ok")) == (first, second)
        assert 1 == upstream.connections


class TestReadTimeouts:
    async def test_head_not_sent_in_time_times_out(self, session: aiohttp.ClientSession) -> None:
        """A GET whose response head does not arrive within the read timeout fails with a timeout."""
        async def silent(head: bytes, writer: asyncio.StreamWriter) -> bool:
            await asyncio.sleep(2)
            return False

        upstream = RawUpstream(silent)
        base = await upstream.start()

        with pytest.raises(asyncio.TimeoutError):
            await send(session, "GET", base, "/x", CIMultiDict({"Host": "svc"}), None, connect_timeout=2, read_timeout=0.2)
        await upstream.close()

    async def test_interim_responses_keep_a_slow_request_alive(self, session: aiohttp.ClientSession) -> None:
        """Each 1xx interim response restarts the read timeout, as every read does in ClientSession."""
        async def processing(head: bytes, writer: asyncio.StreamWriter) -> bool:
            for _ in range(4):
                await asyncio.sleep(0.1)
                writer.write(b"HTTP/1.1 102 Processing\r\n\r\n")
            await asyncio.sleep(0.1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return True

        upstream = RawUpstream(processing)
        base = await upstream.start()

        response = await send(session, "GET", base, "/x", CIMultiDict({"Host": "svc"}), None, connect_timeout=2, read_timeout=0.25)
        body = await response.content.read()
        response.release()
        await upstream.close()

        assert (200, b"ok") == (response.status, body)

    async def test_body_stalling_after_the_head_times_out(self, session: aiohttp.ClientSession) -> None:
        """A body that stops arriving after the head fails with a timeout while it is read."""
        async def stall(head: bytes, writer: asyncio.StreamWriter) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
            await writer.drain()
            await asyncio.sleep(2)
            return False

        upstream = RawUpstream(stall)
        base = await upstream.start()

        response = await send(session, "GET", base, "/x", CIMultiDict({"Host": "svc"}), None, connect_timeout=2, read_timeout=0.2)
        with pytest.raises(asyncio.TimeoutError):
            await response.content.read()
        response.close()
        await upstream.close()

        assert 200 == response.status


class TestTargets:
    async def test_upstream_base_path_prefixes_the_target(self, session: aiohttp.ClientSession) -> None:
        """An upstream configured with a path (`http://host:port/app`) receives that path before the request's."""
        upstream = RawUpstream(ok)
        base = await upstream.start()

        await _get(session, base + "/app", "/x/%C3%A9?q=1")
        await upstream.close()

        assert upstream.heads[0].startswith(b"GET /app/x/%C3%A9?q=1 HTTP/1.1\r\n")
