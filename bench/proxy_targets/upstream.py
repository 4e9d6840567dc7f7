"""The benchmark upstream: answers every request with the same 100-byte JSON body, and ``/download`` with 256 KiB.

Owns: BODY, DOWNLOAD, DOWNLOAD_PATH, create_app, create_handler and the upstream process's command line.
Must not import: gateway.

A request body (the POST row's 1 KiB) is read whole before the answer. ``GET /download`` answers
DOWNLOAD (256 KiB of ``application/octet-stream``, built once) for the download row.

It shares the server core with every proxy under test, so its own cost is in every ratio: it is
kept as cheap as aiohttp allows. ``--kind lowlevel`` (the default) is aiohttp's low-level
``web.Server`` with a single handler, no router and no middlewares; ``--kind app`` is an ordinary
``web.Application`` with one catch-all route (about 40% dearer per request on the machine
this was written on; ``python bench/bench_proxy.py --only direct --upstream-kind app`` measures it).
"""

from __future__ import annotations

import argparse
from typing import Sequence

from aiohttp import web

from proxy_targets.serving import LowLevelHandler, serve

BODY = b'{"service":"bench-upstream","ok":true,"items":[1,2,3,4,5,6,7,8],"note":"a small fixed reply body!"}\n'
# INVARIANT: exactly 100 bytes, so every target moves the same payload.
if len(BODY) != 100:
    raise RuntimeError(f"upstream body is {len(BODY)} bytes, not 100")
DOWNLOAD_PATH = "/download"
DOWNLOAD = bytes(range(256)) * 1024  # 256 KiB


def create_handler() -> LowLevelHandler:
    """A low-level handler that answers BODY (status 200, JSON), or DOWNLOAD on ``GET /download``."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.body_exists:
            await request.read()
        if request.raw_path == DOWNLOAD_PATH:
            return web.Response(body=DOWNLOAD, content_type="application/octet-stream")
        return web.Response(body=BODY, content_type="application/json")

    return handle


def create_app() -> web.Application:
    """A web.Application with one catch-all route answering BODY (the slower, ordinary way)."""
    handle = create_handler()

    async def route(request: web.Request) -> web.StreamResponse:
        return await handle(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the upstream until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("lowlevel", "app"), default="lowlevel")
    args = parser.parse_args(argv)
    serve(create_handler() if args.kind == "lowlevel" else create_app(), args.host, args.port)


if __name__ == "__main__":
    main()
