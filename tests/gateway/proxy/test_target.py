"""Canonical request targets: refusal of every ambiguous form, and properties of the canonical path."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequestTarget
from gateway.proxy.target import Target, canonical_path, canonicalise
from tests.gateway.conftest import MakeGateway, Recorder, raw_exchange

_PIECES = st.sampled_from([
    "a", "b", "admin", "public", ".", "..", "", "%41", "%7E", "%2D", "~", "-", "_", "x.y", "...",
    "%C3%A9", "%c3%a9", "%20", "%3A", "%25", "%25zz", ":", "@", "!", "$", "&", "'", "(", ")", "*", "+", ",", "=",
])
_RAW_PATHS = st.lists(st.lists(_PIECES, min_size=0, max_size=3).map("".join), min_size=1, max_size=8).map(lambda segs: "/" + "/".join(segs))
_PREFIXES = st.sampled_from(["/", "/a", "/admin", "/admin/", "/a/b", "/public"])


def _accepted(raw: str) -> Target:
    try:
        return canonicalise(raw, ["svc"])
    except BadRequestTarget:
        assume(False)
        raise


def _normalise(decoded: str) -> str:
    """What an upstream that decodes, removes dot segments and collapses slashes would see."""
    out: list[str] = []
    parts = re.split(r"/+", decoded)[1:]
    for seg in parts:
        if seg == "..":
            if out:
                out.pop()
        elif seg not in (".", ""):
            out.append(seg)
    trailing = parts and parts[-1] in ("", ".", "..")
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def _under(prefix: str, path: str) -> bool:
    return path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


class TestProperties:
    @settings(max_examples=400)
    @given(_RAW_PATHS)
    def test_canonical_form_is_idempotent(self, raw: str) -> None:
        """Canonicalising a canonical path changes nothing."""
        target = _accepted(raw)

        again = canonical_path(target.path)

        assert target.path == again

    @settings(max_examples=400)
    @given(_RAW_PATHS)
    def test_canonical_path_has_no_dot_segments_or_double_slashes(self, raw: str) -> None:
        """No canonical (or forwarded) path holds `.`/`..` segments or `//`."""
        target = _accepted(raw)

        for path in (target.path, target.forward_path):
            assert path.startswith("/")
            assert "//" not in path
            assert not set(path.split("/")) & {".", ".."}

    @settings(max_examples=400)
    @given(_RAW_PATHS, _PREFIXES)
    def test_under_a_prefix_after_canonicalisation_means_really_under_it(self, raw: str, prefix: str) -> None:
        """A path routed under a prefix is under it for an upstream that decodes and normalises too."""
        target = _accepted(raw)
        assume(_under(prefix, target.path))

        upstream_view = _normalise(unquote(target.forward_path))

        assert _under(prefix, upstream_view)
        assert canonical_path(target.forward_path) == target.path

    @given(_RAW_PATHS)
    def test_canonical_structure_is_forwarded_raw(self, raw: str) -> None:
        """A target without dot segments or repeated slashes is forwarded byte for byte."""
        target = _accepted(raw)
        assume(not set(raw.split("/")[1:-1]) & {"", ".", ".."} and raw.split("/")[-1] not in (".", ".."))

        assert raw == target.forward_path


class TestCanonicalise:
    @pytest.mark.parametrize(("raw", "path"), [
        ("/", "/"),
        ("/a/../b", "/b"),
        ("/../../a", "/a"),
        ("//a///b/", "/a/b/"),
        ("/a/./b/.", "/a/b/"),
        ("/%61dmin/%7e%2d", "/admin/~-"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/100%25", "/100%25"),
    ])
    def test_canonical_paths(self, raw: str, path: str) -> None:
        """Unreserved escapes are decoded, others upper-cased, dot segments and repeated slashes removed."""
        assert path == canonicalise(raw, ["svc"]).path

    def test_query_is_kept_raw_and_absent_query_is_distinct(self) -> None:
        """The query is never decoded; `/a?` keeps its empty query."""
        assert "/a?x=%2F&y" == canonicalise("/a?x=%2F&y", ["svc"]).forward_target
        assert "/a?" == canonicalise("/a?", ["svc"]).forward_target
        assert "/a" == canonicalise("/a", ["svc"]).forward_target

    def test_absolute_form_matching_host_is_accepted(self) -> None:
        """An absolute-form target naming the Host is accepted as its path."""
        target = canonicalise("http://Wiki.Corp:8080/x?y", ["wiki.corp:8080"])

        assert ("wiki.corp:8080", "/x", "/x?y") == (target.host, target.path, target.forward_target)

    @pytest.mark.parametrize(("raw", "host"), [
        ("/a%2fb", "svc"), ("/a%2Fb", "svc"), ("/a%5cb", "svc"), ("/%2e%2e/admin", "svc"), ("/a/%2E", "svc"),
        ("/a%252fb", "svc"), ("/a%25%32%66b", "svc"), ("/a\\b", "svc"), ("/a;jsessionid=1", "svc"),
        ("/%c0%af", "svc"), ("/%e0%80%ae", "svc"), ("/%ed%a0%80", "svc"), ("/%c3", "svc"), ("/%c3x", "svc"),
        ("/%ef%bc%8f", "svc"), ("/%00", "svc"), ("/%0a", "svc"), ("/%7f", "svc"), ("/a%zz", "svc"), ("/a%2", "svc"),
        ("/a#b", "svc"), ("/a b", "svc"), ("/a\x00", "svc"), ("/é", "svc"), ("/a<b", "svc"), ("/a[b]", "svc"),
        ("*", "svc"), ("svc:443", "svc"), ("http://other/a", "svc"), ("http://u@svc/a", "svc"), ("ftp://svc/a", "svc"),
        ("/a", "u@svc"), ("/a", "svc."), ("/a", "svc.:80"), ("/a", ""), ("/a", "svc/x"), ("/a", "svc\\x"),
    ])
    def test_ambiguous_targets_are_refused(self, raw: str, host: str) -> None:
        """Anything an upstream could read differently is refused with 400."""
        with pytest.raises(BadRequestTarget) as caught:
            canonicalise(raw, [host])

        assert 400 == caught.value.status

    def test_missing_or_repeated_host_is_refused(self) -> None:
        """Exactly one Host header is required."""
        with pytest.raises(BadRequestTarget):
            canonicalise("/", [])
        with pytest.raises(BadRequestTarget):
            canonicalise("/", ["a", "a"])


_REFUSED_ON_THE_WIRE = [
    b"GET /public/..%2fadmin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /a%5c..%5cadmin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /%2e%2e/admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /a%252e%252e/admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /a\\..\\admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /public;/../admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /%c0%ae%c0%ae/admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /a%00b HTTP/1.1\r\nHost: svc\r\n",
    b"GET /a#/../admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET http://other.example/admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET http://user@svc/admin HTTP/1.1\r\nHost: svc\r\n",
    b"GET /admin HTTP/1.1\r\nHost: user@svc\r\n",
    b"GET /admin HTTP/1.1\r\nHost: svc.\r\n",
    b"GET /admin HTTP/1.0\r\n",
    b"GET /admin HTTP/1.1\r\nHost: svc\r\nHost: other\r\n",
    b"GET /a\x01b HTTP/1.1\r\nHost: svc\r\n",
]  # CONNECT is 405 and never reaches an upstream: tests/gateway/test_one_proxy.py


class TestOnTheWire:
    @pytest.mark.parametrize("head", _REFUSED_ON_THE_WIRE)
    async def test_refused_targets_never_reach_an_upstream(self, head: bytes, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Each ambiguous request gets 400 from Gatehouse and the upstream sees nothing."""
        gw = await make_gateway([{"id": "all", "upstream": upstream_url, "tier": "low"}])

        status, _, _ = await raw_exchange(gw.port, head + b"Connection: close\r\n\r\n")

        assert 400 == status
        assert [] == recorder.seen

    async def test_dot_segments_cannot_escape_a_route(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """`/public/../admin` is routed as `/admin`, which has no route here: 404, upstream untouched."""
        gw = await make_gateway([{"id": "public", "upstream": upstream_url, "tier": "low", "path_prefix": "/public"}])

        status, _, _ = await raw_exchange(gw.port, b"GET /public/../admin HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")

        assert 404 == status
        assert [] == recorder.seen


_WINDOWS_SPELLINGS = ["/secure./x", "/secure%20/x", "/secure.%20./x", "/secure::$DATA/x", "/secure::%24DATA", "/secure::$INDEX_ALLOCATION/x",
                      "/secure/file.aspx::$DATA", "/SECURE~1/x", "/secure/x~1", "/SECURE/x", "/Secure/x"]


class TestSpellingsBackendsNormalise:
    @pytest.mark.parametrize("raw", ["/secure.", "/a./b", "/a%20", "/a%20/b", "/a::$DATA", "/a:%24DATA", "/a%3A%3A%24DATA",
                                     "/a:stream:$DATA", "/SECURE~1", "/secure~12/x", "/PROGRA~1.TXT", "/a/~1"])
    def test_windows_spellings_are_refused(self, raw: str) -> None:
        """A trailing dot or space, an NTFS stream or an 8.3 short name in a segment is refused with 400."""
        with pytest.raises(BadRequestTarget) as caught:
            canonicalise(raw, ["svc"])

        assert 400 == caught.value.status

    @pytest.mark.parametrize("raw", ["/~user/x", "/v1/items:batchGet", "/static/vendors~main~1a2b.js", "/a/app.min.js", "/a..b/c", "/a/b$c"])
    def test_look_alike_plain_paths_are_accepted(self, raw: str) -> None:
        """Tildes, colons and dots that no backend reads as another name still pass."""
        assert raw == canonicalise(raw, ["svc"]).path

    @pytest.mark.parametrize("method", ["GET", "POST"], ids=["get", "post"])
    @pytest.mark.parametrize("raw", _WINDOWS_SPELLINGS)
    async def test_a_spelling_of_a_sensitive_route_never_reaches_the_low_route(
        self, raw: str, method: str, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder,
    ) -> None:
        """A path that IIS/.NET or a case-insensitive upstream reads as `/secure/...` is 400 on both paths, never sent to `/`."""
        gw = await make_gateway([
            {"id": "root", "upstream": upstream_url, "tier": "low"},
            {"id": "secure", "upstream": upstream_url, "tier": "high", "path_prefix": "/secure"},
        ])
        body = b"Content-Length: 2\r\n\r\nhi" if method == "POST" else b"\r\n"

        status, _, answer = await raw_exchange(gw.port, f"{method} {raw} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n".encode() + body)

        assert (400, []) == (status, recorder.seen), answer

    @pytest.mark.parametrize("raw", ["/.GATEHOUSE/", "/.Gatehouse/x", "/.gateHouse", "/.Well-Known/Gatehouse/jwks.json"])
    async def test_reserved_prefix_in_another_case_is_never_proxied(self, raw: str, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """The reserved `/.gatehouse/` prefix belongs to Gatehouse in any letter case: 404, the upstream untouched."""
        gw = await make_gateway([{"id": "root", "upstream": upstream_url, "tier": "low"}])

        status, _, _ = await raw_exchange(gw.port, f"GET {raw} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n".encode())

        assert (404, []) == (status, recorder.seen)
