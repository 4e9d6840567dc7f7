"""Upstream responses through the production listener: the fast lane and the full path answer alike.

The same upstream answer is fetched with a GET (served by the fast lane) and with a POST, a HEAD or a
GET on a connection already handed to aiohttp (the full path): bodies that end when the upstream
closes, the limits on a response head, the read timeout under a slow client, the request record.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from gateway.metrics import Metrics
from tests.gateway.conftest import MakeGateway
from tests.gateway.test_fastlane import get, lane_count, raw_upstream, read_response  # noqa: F401  (raw_upstream is a fixture)

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
    async def test_post_and_then_a_get_on_the_handed_connection_get_the_whole_body(
        self, make_gateway: MakeGateway, raw_upstream: Callable[..., Any], metrics: Metrics,
    ) -> None:
        """A body the upstream ends by closing reaches the client in full on the full path, for a POST and the GET after it."""
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
        assert (0.0, 1.0) == (lane_count(metrics, "fast"), lane_count(metrics, "handed-over"))

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

    async def test_get_in_the_fast_lane_gets_the_whole_body(self, make_gateway: MakeGateway, raw_upstream: Callable[..., Any], metrics: Metrics) -> None:
        """The fast lane's answer to the same upstream response, for comparison: the whole body."""
        _, url = await raw_upstream(close_delimited, close=True)
        gw = await make_gateway([_route(url)])
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        writer.write(get("/only"))
        status, _, body = await read_response(reader)
        writer.close()

        assert (200, len(BODY)) == (status, len(body))
        assert 1.0 == lane_count(metrics, "fast")
