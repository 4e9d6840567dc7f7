"""The bare aiohttp pass-through proxy: the floor of what a naive aiohttp proxy costs.

Owns: create_app and the pass-through process's command line.
Must not import: gateway.

One ``web.Application`` with a catch-all route and one ``ClientSession`` (default connector,
keep-alive pool). Each request is forwarded with its method, path, query, headers (less hop-by-hop
ones) and streamed body; the response is streamed back. Only what correctness needs is changed
from the defaults: no cookie jar (a proxy must never keep one user's cookies for another),
no automatic decompression (bodies pass through as sent) and no redirect following. No
identity, policy or tuning: this is the baseline Gatehouse's whole path is held against.
"""

from __future__ import annotations

import argparse
from typing import AsyncIterator, Sequence

from aiohttp import ClientSession, DummyCookieJar, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host"}
)
SESSION = web.AppKey("session", ClientSession)


def _forwardable(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    return out


def create_app(upstream: str) -> web.Application:
    """A proxy forwarding every request to ``upstream`` (``http://host:port``, no path)."""
    base = upstream.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(cookie_jar=DummyCookieJar(), auto_decompress=False) as session:
            app[SESSION] = session
            yield

    async def handle(request: web.Request) -> web.StreamResponse:
        session = request.app[SESSION]
        headers = _forwardable(request.headers)
        data = request.content if request.body_exists else None
        async with session.request(
            request.method, URL(base + request.rel_url.raw_path_qs, encoded=True), headers=headers, data=data, allow_redirects=False
        ) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status, reason=upstream_response.reason)
            response.headers.extend(_forwardable(upstream_response.headers))
            if upstream_response.content_length is not None:
                response.content_length = upstream_response.content_length
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the pass-through proxy until SIGTERM."""
    from proxy_targets.serving import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    args = parser.parse_args(argv)
    serve(create_app(args.upstream), args.host, args.port)


if __name__ == "__main__":
    main()
