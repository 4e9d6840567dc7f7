"""The floor: a uvloop relay with no logic at all, to measure what the event loop and the four socket calls cost.

Owns: the relay process's command line.
Must not import: gateway.

Each client connection gets its own upstream connection. Every read from the client sends one
fixed ``GET /`` to the upstream, and every read from the upstream goes back to the client as it
is. That is correct only for wrk against the bench upstream (one request per read, one response
per read). It is not a proxy: it is the lower bound of a proxy's cost per request in Python on
uvloop. Gatehouse's own CPU per request minus this figure is the work its request path does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Sequence

import uvloop

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


class UpstreamSide(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)


class ClientSide(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(REQUEST)
        else:
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        client = self.transport
        upstream, _ = await asyncio.get_running_loop().create_connection(lambda: UpstreamSide(client), *self.target)
        self.upstream = upstream
        upstream.write(REQUEST)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientSide("127.0.0.1", upstream_port), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the relay until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(_serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
