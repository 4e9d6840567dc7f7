"""Parsing one client connection's byte stream: request heads, body pieces and ends, in order.

Owns: RequestParser (httptools over a connection's whole stream), Message (one request as it
arrives: its head, the body pieces not yet passed on, whether it ended), Refusal (a request the
parser refuses, with its status and text).
Must not import: app, gateway.serve, gateway.gate.admission (pure parsing; the lane decides what to do with the result).

Every limit of the HTTP front is applied here, once, for every request: ``server.max_header_bytes``
bounds the request line (414 beyond it) and each header line (431), ``server.max_header_count`` the
number of header lines (431), ``server.max_head_bytes`` the whole head (431, counted as the bytes
arrive, so an endless head is refused without being buffered). Anything httptools (llhttp, strict)
refuses is 400 with its reason: bare LF line ends, a ``Content-Length`` next to ``Transfer-Encoding``,
duplicate lengths, invalid characters, an unknown method. HTTP versions other than 1.0 and 1.1 are 505; a
transfer coding other than ``chunked`` alone is 501.

Bodies are framed by httptools (``Content-Length`` or chunked); their pieces wait in the Message
until the lane passes them on (so a pipelined request's head may be parsed while the one before is
in flight). Trailers of a chunked body are read and dropped. A request that switches protocols
(``Upgrade``, or CONNECT) stops the parser: the bytes after its head are kept in ``Message.rest``,
and the lane either tunnels them or, for an upgrade it does not perform, ``resume``s parsing them as
HTTP/1.1.
"""

from __future__ import annotations

from collections import deque

import httptools
from aiohttp import web
from multidict import CIMultiDict

from gateway.metrics import RequestTimer
from gateway.request import Peer, RequestHead


class Refusal(Exception):
    """A request the parser refuses before it reaches the gate: ``status`` and a text naming what is wrong."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Message:
    """One request as it arrives on the connection."""

    __slots__ = ("head", "body", "buffered", "ended", "rest", "timer")

    def __init__(self) -> None:
        self.head: RequestHead | None = None
        """Set once the head is complete."""
        self.body: list[bytes] = []
        """Body pieces received and not yet passed on."""
        self.buffered = 0
        """Bytes in ``body``."""
        self.ended = False
        """The whole request (head and body) has arrived."""
        self.rest: bytes | None = None
        """For a request that switches protocols: the bytes after its head (None for any other request)."""
        self.timer: RequestTimer | None = None
        """The request's timing points, from its head having been read."""


class RequestParser:
    """httptools over one connection: fills ``messages`` (oldest first); ``refused`` once it fails."""

    __slots__ = (
        "messages", "refused", "_parser", "_app", "_peer", "_max_line", "_max_headers", "_max_head", "_url", "_pairs",
        "_current", "_in_head", "_head_seen", "_head_tail", "_stopped",
    )

    def __init__(self, app: web.Application, peer: Peer, *, max_line: int, max_headers: int, max_head: int) -> None:
        self.messages: deque[Message] = deque()
        self.refused: Refusal | None = None
        """Why the stream cannot be read further; the requests before it in ``messages`` stand."""
        self._app = app
        self._peer = peer
        self._max_line = max_line
        self._max_headers = max_headers
        self._max_head = max_head
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._pairs: list[tuple[bytes, bytes]] = []
        self._current: Message | None = None
        self._in_head = True
        self._head_seen = 0
        self._head_tail = b""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """The last message switched protocols: further bytes go to its ``rest``."""
        return self._stopped

    def feed(self, data: bytes) -> None:
        """Parse ``data`` (the next bytes from the client)."""
        if self.refused is not None:
            return
        if self._stopped:
            last = self.messages[-1] if self.messages else None
            if last is not None and last.rest is not None:
                last.rest += data
            return
        if self._in_head and self._head_over_limit(data):
            self.refused = Refusal(431, f"the request head is longer than {self._max_head} bytes (server.max_head_bytes); send fewer or shorter headers")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._stopped = True
            if self.messages:
                self.messages[-1].rest = data[offset:]
        except httptools.HttpParserCallbackError:
            if self.refused is None:  # INVARIANT: our callbacks raise only Refusal, which they record first
                self.refused = Refusal(400, "the request could not be read")
        except httptools.HttpParserError as exc:
            reason = str(exc.args[0]) if exc.args else "malformed request"
            self.refused = Refusal(400, f"malformed request: {reason[:200]}")

    def resume(self) -> None:
        """Parse the bytes after a protocol switch that did not happen as HTTP/1.1 again.

        Called when the lane serves an upgrade request as an ordinary one.
        """
        last = self.messages[-1] if self.messages else None
        rest = last.rest if last is not None else None
        if last is not None:
            last.rest = None
        self._stopped = False
        self._parser = httptools.HttpRequestParser(self)
        self._in_head, self._head_seen, self._head_tail = True, 0, b""
        if rest:
            self.feed(rest)

    def _head_over_limit(self, data: bytes) -> bool:
        """Count ``data`` into the head being read: True when the head cannot end within ``max_head`` bytes."""
        seen = self._head_seen
        self._head_seen = seen + len(data)
        if self._head_seen <= self._max_head:
            self._head_tail = (self._head_tail + data)[-3:]
            return False
        end = (self._head_tail + data[: self._max_head - seen + 1]).find(b"\r\n\r\n")
        return end < 0

    # --- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        message = Message()
        self._current = message
        self.messages.append(message)
        self._url = b""
        self._pairs = []
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_line:
            self.refused = Refusal(414, f"the request target is longer than {self._max_line} bytes (server.max_header_bytes)")
            raise self.refused

    def on_header(self, name: bytes, value: bytes) -> None:
        current = self._current
        if current is None or current.head is not None:
            return  # a trailer of a chunked body: read and dropped
        if len(name) + len(value) + 2 > self._max_line:
            self.refused = Refusal(431, f"the request header `{name.decode('latin-1')[:64]}` is longer than {self._max_line} bytes (server.max_header_bytes)")
            raise self.refused
        self._pairs.append((name, value))
        if len(self._pairs) > self._max_headers:
            self.refused = Refusal(431, f"the request has more than {self._max_headers} header lines (server.max_header_count)")
            raise self.refused

    def on_headers_complete(self) -> None:
        parser = self._parser
        current = self._current
        assert current is not None  # INVARIANT: on_message_begin ran first
        current.timer = RequestTimer()  # the head has been read
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self.refused = Refusal(505, f"HTTP/{version} is not served; send HTTP/1.1 or HTTP/1.0")
            raise self.refused
        pairs = self._pairs
        headers: CIMultiDict[str] = CIMultiDict(
            [(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")) for name, value in pairs]
        )
        lengths = headers.getall("Content-Length", ())
        content_length = int(lengths[0]) if lengths else None  # llhttp refused duplicates, non-digits and mixed framings
        codings = [c.strip().lower() for v in headers.getall("Transfer-Encoding", ()) for c in v.split(",") if c.strip()]
        chunked = bool(codings)
        if codings and codings != ["chunked"]:  # llhttp accepted it, so chunked is last; what comes before it is not ours to undo
            self.refused = Refusal(501, f"transfer coding `{', '.join(codings)}` is not served; send the body with `chunked` alone or a Content-Length")
            raise self.refused
        method = parser.get_method().decode("ascii", "replace")
        current.head = RequestHead(
            method, self._url.decode("utf-8", "surrogateescape"), headers, pairs, self._peer, parser.should_keep_alive(),
            app=self._app, version=version, content_length=content_length, chunked=chunked,
            upgrade=parser.should_upgrade() or method == "CONNECT",
        )
        self._in_head = False
        self._head_seen = 0
        self._head_tail = b""

    def on_body(self, body: bytes) -> None:
        current = self._current
        if current is not None:
            current.body.append(body)
            current.buffered += len(body)

    def on_message_complete(self) -> None:
        current = self._current
        if current is not None:
            current.ended = True
        self._current = None
        self._in_head = True
