"""Request smuggling: every framing two HTTP parsers could read differently is refused before an upstream sees a byte.

Through the production listener (``make_gateway``: ``GatewaySite`` and its proxy). Each hostile
request is refused (400, or 501 for a transfer coding Gatehouse does not undo), the connection is
closed, and the upstream receives nothing; a request smuggled inside another's body never becomes a
request of its own.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.conftest import MakeGateway, Recorder, raw_exchange

_HOSTILE = {
    "cl-and-te": b"POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n",
    "te-and-cl": b"POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n",
    "two-lengths": b"POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n",
    "length-list": b"POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 5, 5\r\n\r\nhello",
    "signed-length": b"POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: +5\r\n\r\nhello",
    "chunked-not-last": b"POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "coding-before-chunked": b"POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "unknown-coding": b"POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "space-before-colon": b"POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "obs-fold": b"POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bad-chunk-size": b"POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"GET /x HTTP/1.1\nHost: svc\n\n",
    "nul-in-value": b"GET /x HTTP/1.1\r\nHost: svc\r\nX-A: a\x00b\r\n\r\n",
    "http-2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


def _route(upstream: str) -> dict[str, object]:
    return {"id": "app", "upstream": upstream, "tier": "low"}


class TestSmuggling:
    @pytest.mark.parametrize("request_bytes", list(_HOSTILE.values()), ids=list(_HOSTILE))
    async def test_ambiguous_framing_is_refused_and_nothing_reaches_the_upstream(
        self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder, request_bytes: bytes,
    ) -> None:
        gw = await make_gateway([_route(upstream_url)])

        status, head, _ = await raw_exchange(gw.port, request_bytes)  # reads until Gatehouse closes the connection

        assert status in (400, 501, 505)
        assert b"Connection: close" in head
        assert [] == recorder.seen

    async def test_a_request_inside_a_body_is_body(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Bytes that look like a request, inside a body Content-Length announces, reach the upstream as that body only."""
        gw = await make_gateway([_route(upstream_url)])
        inner = b"GET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n"
        outer = b"POST /x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner)

        status, _, _ = await raw_exchange(gw.port, outer)

        assert 200 == status
        assert [("POST", len(inner))] == [(seen.method, seen.body_bytes) for seen in recorder.seen]

    async def test_the_request_after_a_refused_one_is_never_read(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """After a refusal the connection closes: a request pipelined behind it is not served."""
        gw = await make_gateway([_route(upstream_url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(_HOSTILE["two-lengths"] + b"GET /after HTTP/1.1\r\nHost: svc\r\n\r\n")

        raw = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()

        assert 1 == raw.count(b"HTTP/1.1 ")
        assert [] == recorder.seen
