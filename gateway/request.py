"""What Gatehouse reads of one proxied request: the head the proxy parsed, and its connection.

Owns: Peer (the connection's address, scheme and client certificate, read once per connection),
RequestHead (one parsed request head, with the attributes the gate, identity and deny views read of
an aiohttp request), RequestLike (either of the two).
Must not import: any other gateway module (the proxy builds these; the gate and identity read them).

The gate seam (``gateway.gate.admission.Gate``) and the identity code take a ``RequestLike``: the proxy
hands them its RequestHead, Gatehouse's own pages (served by aiohttp) their ``web.Request``. A
RequestHead carries per-request values under the same ``web.RequestKey`` keys an aiohttp request
does (``head[USER] = identity``), so one implementation serves both.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDict

_T = TypeVar("_T")


class Peer:
    """What one connection's transport says about its client, read once for all its requests."""

    __slots__ = ("transport", "remote", "scheme", "_peercert", "_fingerprint", "_read")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote: str | None = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
        """The client's address (an aiohttp request's ``remote``)."""
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self._peercert: dict[str, object] | None = None
        self._fingerprint: str | None = None
        self._read = False

    @property
    def peercert(self) -> dict[str, object] | None:
        """The verified client certificate (``SSLObject.getpeercert()``), decoded on first use only."""
        if not self._read:
            self._read = True
            ssl_object = self.transport.get_extra_info("ssl_object")
            self._peercert = (ssl_object.getpeercert() or None) if ssl_object is not None else None
            der = ssl_object.getpeercert(binary_form=True) if self._peercert is not None else None
            self._fingerprint = hashlib.sha256(der).hexdigest() if der else None
        return self._peercert

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 of the client certificate's DER (lowercase hex), read with ``peercert``."""
        _ = self.peercert
        return self._fingerprint


class RequestHead:
    """A parsed request head: what it asks for, how its body is framed, and the request's values."""

    __slots__ = (
        "method", "raw_path", "version", "headers", "raw_headers", "peer", "keep_alive", "content_length", "chunked",
        "upgrade", "app", "_values", "_cookies",
    )

    def __init__(
        self, method: str, raw_path: str, headers: CIMultiDict[str], raw_headers: list[tuple[bytes, bytes]], peer: Peer,
        keep_alive: bool, *, app: web.Application, version: str = "1.1", content_length: int | None = None, chunked: bool = False,
        upgrade: bool = False,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.version = version
        """``1.1`` or ``1.0``."""
        self.headers = headers
        self.raw_headers = raw_headers
        """The header lines as received (name and value bytes), as aiohttp's ``request.raw_headers``."""
        self.peer = peer
        self.keep_alive = keep_alive
        self.content_length = content_length
        """The body's declared length; None without ``Content-Length``."""
        self.chunked = chunked
        """The body comes in chunked transfer coding."""
        self.upgrade = upgrade
        """The client asked to switch protocols (``Connection: upgrade`` with ``Upgrade``), or sent CONNECT."""
        self.app = app
        self._values: dict[Any, Any] = {}
        self._cookies: Mapping[str, str] | None = None

    @property
    def has_body(self) -> bool:
        """True when a body follows the head."""
        return self.chunked or bool(self.content_length)

    # --- what an aiohttp request offers, for the code that reads either ---------------------------
    @property
    def config_dict(self) -> web.Application:
        return self.app

    @property
    def transport(self) -> asyncio.BaseTransport:
        return self.peer.transport

    @property
    def remote(self) -> str | None:
        return self.peer.remote

    @property
    def scheme(self) -> str:
        return self.peer.scheme

    @property
    def secure(self) -> bool:
        return self.peer.scheme == "https"

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def path(self) -> str:
        """The raw path without the query (the canonical one is the proxy's ``Target.path``)."""
        return self.raw_path.partition("?")[0]

    @property
    def cookies(self) -> Mapping[str, str]:
        """The request's cookies (``name=value`` pairs split at ``;``; a pair without ``=`` is skipped, the first of a name wins)."""
        if self._cookies is None:
            self._cookies = MappingProxyType(parse_cookies(self.headers.getall("Cookie", ())))
        return self._cookies

    def __getitem__(self, key: web.RequestKey[_T]) -> _T:
        value: _T = self._values[key]
        return value

    def __setitem__(self, key: web.RequestKey[_T], value: _T) -> None:
        self._values[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: web.RequestKey[_T], default: _T | None = None) -> _T | None:
        value: _T | None = self._values.get(key, default)
        return value


def parse_cookies(headers: Iterable[str]) -> dict[str, str]:
    """The cookies of ``Cookie`` header values, as browsers send them (RFC 6265 §5.4); a quoted value loses its quotes."""
    found: dict[str, str] = {}
    for header in headers:
        for pair in header.split(";"):
            name, eq, value = pair.partition("=")
            name = name.strip()
            if not eq or not name:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found.setdefault(name, value)
    return found


RequestLike = web.Request | RequestHead
"""What the gate and identity read of a request: an aiohttp request (Gatehouse's pages), or the proxy's parsed head."""
