"""The benchmark's comparison targets behave: the bare pass-through proxy forwards, the auth service verifies and caches.

Real sockets on 127.0.0.1 (aiohttp test servers), no wrk and no nginx needed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import RawTestServer, TestServer
from proxy_targets import authsvc, passthrough, relay, upstream
from proxy_targets.tokens import AUDIENCE, ISSUER, BenchKeys, make_keys, mint_token
from yarl import URL


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> BenchKeys:
    """One benchmark key pair for the module."""
    return make_keys(tmp_path_factory.mktemp("keys"))


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.path == "/missing":
        return web.Response(status=404, text="nothing here", headers={"X-Upstream": "yes"})
    if request.path == "/chunked":
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(3):
            await response.write(f"part-{i};".encode())
        await response.write_eof()
        return response
    return web.json_response(
        {
            "method": request.method,
            "path_qs": request.rel_url.raw_path_qs,
            "body": body.decode(),
            "x_test": request.headers.get("X-Test"),
        }
    )


@pytest.fixture
async def echo_server(aiohttp_server) -> TestServer:  # type: ignore[no-untyped-def]
    """An upstream that echoes what it received."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return await aiohttp_server(app)


@pytest.fixture
async def proxy(aiohttp_server, echo_server: TestServer) -> TestServer:  # type: ignore[no-untyped-def]
    """The bare pass-through proxy in front of the echo upstream."""
    return await aiohttp_server(passthrough.create_app(str(echo_server.make_url("")).rstrip("/")))


class TestPassthrough:
    async def test_forwards_method_path_query_headers_and_body(self, proxy: TestServer) -> None:
        """A POST reaches the upstream with its path, raw query, header and body, and the answer comes back."""
        async with ClientSession() as session:
            url = URL(str(proxy.make_url("")).rstrip("/") + "/a/b?x=1&y=%2F", encoded=True)
            async with session.post(url, data=b"hello", headers={"X-Test": "t1"}) as resp:
                status, body = resp.status, await resp.json()

        assert 200 == status
        assert {"method": "POST", "path_qs": "/a/b?x=1&y=%2F", "body": "hello", "x_test": "t1"} == body

    async def test_passes_upstream_status_and_headers(self, proxy: TestServer) -> None:
        """An upstream 404 and its own headers reach the client unchanged."""
        async with ClientSession() as session, session.get(proxy.make_url("/missing")) as resp:
            status, text, header = resp.status, await resp.text(), resp.headers.get("X-Upstream")

        assert (404, "nothing here", "yes") == (status, text, header)

    async def test_streams_a_chunked_response(self, proxy: TestServer) -> None:
        """A chunked upstream body arrives whole."""
        async with ClientSession() as session, session.get(proxy.make_url("/chunked")) as resp:
            text = await resp.text()

        assert "part-0;part-1;part-2;" == text

    async def test_forwards_to_the_bench_upstream(self, aiohttp_raw_server, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
        """Through the proxy, the benchmark upstream's low-level handler answers its 100-byte body."""
        origin: RawTestServer = await aiohttp_raw_server(upstream.create_handler())
        front = await aiohttp_server(passthrough.create_app(str(origin.make_url("")).rstrip("/")))

        async with ClientSession() as session, session.get(front.make_url("/anything")) as resp:
            status, body = resp.status, await resp.read()

        assert (200, upstream.BODY) == (status, body)
        assert 100 == len(body)


class TestRelay:
    async def test_relays_requests_to_the_bench_upstream_on_one_connection(self, aiohttp_raw_server) -> None:  # type: ignore[no-untyped-def]
        """The floor relay answers each request with the upstream's 100-byte reply, several on one connection."""
        import asyncio

        origin: RawTestServer = await aiohttp_raw_server(upstream.create_handler())
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: relay.ClientSide("127.0.0.1", origin.port), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            bodies = []
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                bodies.append(await reader.readexactly(length))
            writer.close()
        finally:
            server.close()

        assert [upstream.BODY] * 3 == bodies


@pytest.fixture
async def auth(aiohttp_server, keys: BenchKeys) -> TestServer:  # type: ignore[no-untyped-def]
    """The caching JWT auth service, trusting the benchmark key."""
    return await aiohttp_server(authsvc.create_app(keys.public_pem.read_bytes(), issuer=ISSUER, audience=AUDIENCE))


async def ask(server: TestServer, token: str | None) -> tuple[int, str | None, str | None]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with ClientSession() as session, session.get(server.make_url("/verify"), headers=headers) as resp:
        return resp.status, resp.headers.get("X-Auth-User"), resp.headers.get("X-Auth-Cache")


class TestAuthService:
    async def test_valid_token_is_accepted_then_served_from_cache(self, auth: TestServer, keys: BenchKeys) -> None:
        """A valid ES256 token is verified once; the second request with it is a cache hit."""
        token = mint_token(keys, user="alice@bench.example", device="C02X")

        first = await ask(auth, token)
        second = await ask(auth, token)

        assert (200, "alice@bench.example", "miss") == first
        assert (200, "alice@bench.example", "hit") == second
        assert 1 == auth.app[authsvc.CACHE].verifications

    async def test_token_from_another_key_is_rejected(self, auth: TestServer, tmp_path: Path) -> None:
        """A token signed by a key the service does not trust is refused, and not cached."""
        token = mint_token(make_keys(tmp_path / "other"), user="mallory@bench.example", device="C02X")

        status = [(await ask(auth, token))[0] for _ in range(2)]

        assert [401, 401] == status
        assert 2 == auth.app[authsvc.CACHE].verifications

    @pytest.mark.parametrize(
        "change",
        [{"audience": "someone-else"}, {"issuer": "https://evil.invalid"}, {"now": time.time() - 7200, "lifetime_s": 60}],
        ids=["audience", "issuer", "expired"],
    )
    async def test_wrong_claims_are_rejected(self, auth: TestServer, keys: BenchKeys, change: dict[str, object]) -> None:
        """A token for another audience or issuer, or an expired one, is refused."""
        token = mint_token(keys, user="alice@bench.example", device="C02X", **change)  # type: ignore[arg-type]

        status, _, _ = await ask(auth, token)

        assert 401 == status

    async def test_missing_or_malformed_header_is_rejected(self, auth: TestServer) -> None:
        """No token, or a token that is not a JWT, is refused."""
        results = [(await ask(auth, None))[0], (await ask(auth, "not-a-jwt"))[0]]

        assert [401, 401] == results

    async def test_cached_token_is_verified_again_after_it_expires(self, aiohttp_server, keys: BenchKeys) -> None:  # type: ignore[no-untyped-def]
        """Past the token's expiry the cache no longer answers: the token goes through verification again."""
        now = [time.time()]
        server = await aiohttp_server(
            authsvc.create_app(keys.public_pem.read_bytes(), issuer=ISSUER, audience=AUDIENCE, clock=lambda: now[0])
        )
        token = mint_token(keys, user="alice@bench.example", device="C02X", lifetime_s=120)
        await ask(server, token)

        now[0] += 3600
        status, _, cache = await ask(server, token)

        assert (200, "miss") == (status, cache)
        assert 2 == server.app[authsvc.CACHE].verifications
