"""Local contract servers for the connector tests: Fleet and Jamf Pro, answering as their vendors document.

Neither system can run here. Each server serves the recorded answers of tests/fixtures/fleet and
tests/fixtures/jamf (their READMEs name the source and version) and can be told to fail: a queue of
failures per path (401, 429 with ``Retry-After``, 5xx, a hang past the client's timeout) is played
before the normal answer. ``requests`` records every request (method, path, query).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


@dataclass
class Failure:
    status: int
    retry_after: str | None = None
    hang: bool = False


@dataclass
class VendorState:
    """What the contract server serves and which failures are queued."""

    failures: dict[str, deque[Failure]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    tokens_issued: int = 0
    valid_tokens: set[str] = field(default_factory=set)

    def fail(self, path: str, *failures: Failure) -> None:
        self.failures[path].extend(failures)

    async def played(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.method, request.path, request.query_string))
        queue = self.failures.get(request.path)
        if not queue:
            return None
        failure = queue.popleft()
        if failure.hang:
            await asyncio.Event().wait()  # never answers; the client's timeout ends it
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
        return web.json_response({"message": "failure played by the contract server"}, status=failure.status, headers=headers)


FLEET_TOKEN = "fleet-api-token"


def fleet_app(state: VendorState, hosts: list[dict[str, Any]] | None = None) -> web.Application:
    """Fleet: ``GET /api/v1/fleet/hosts`` (order_key=id, after, per_page), host by identifier, refetch, device mapping."""
    every = hosts if hosts is not None else [h for n in (1, 2, 3) for h in load(f"fleet/hosts-page-{n}.json")["hosts"]]

    def authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {FLEET_TOKEN}"

    async def list_hosts(request: web.Request) -> web.Response:
        if (played := await state.played(request)) is not None:
            return played
        if not authorised(request):
            return web.json_response({"message": "Authentication required"}, status=401)
        per_page = int(request.query.get("per_page", "100"))
        after = int(request.query.get("after", "0") or 0)
        page = [h for h in sorted(every, key=lambda h: h["id"]) if h["id"] > after][:per_page]
        if request.query.get("device_mapping") != "true":
            page = [{k: v for k, v in h.items() if k != "device_mapping"} for h in page]
        return web.json_response({"hosts": page})

    async def by_identifier(request: web.Request) -> web.Response:
        if (played := await state.played(request)) is not None:
            return played
        found = [h for h in every if h["hardware_serial"] == request.match_info["identifier"]]
        if not found:
            return web.json_response({"message": "Resource Not Found", "errors": [{"name": "base", "reason": "Host was not found"}]}, status=404)
        return web.json_response({"host": {k: v for k, v in found[0].items() if k != "device_mapping"}})

    async def refetch(request: web.Request) -> web.Response:
        if (played := await state.played(request)) is not None:
            return played
        return web.Response(status=200)

    async def device_mapping(request: web.Request) -> web.Response:
        if (played := await state.played(request)) is not None:
            return played
        host_id = int(request.match_info["id"])
        host = next(h for h in every if h["id"] == host_id)
        return web.json_response({"host_id": host_id, "device_mapping": host.get("device_mapping") or []})

    app = web.Application()
    app.router.add_get("/api/v1/fleet/hosts", list_hosts)
    app.router.add_get("/api/v1/fleet/hosts/identifier/{identifier}", by_identifier)
    app.router.add_post("/api/v1/fleet/hosts/{id}/refetch", refetch)
    app.router.add_get("/api/v1/fleet/hosts/{id}/device_mapping", device_mapping)
    return app


JAMF_CLIENT = ("gatehouse-client", "jamf-client-secret")


def jamf_app(state: VendorState, computers: list[dict[str, Any]] | None = None) -> web.Application:
    """Jamf Pro: ``POST /api/oauth/token`` and the paged ``GET /api/v1/computers-inventory`` (page, page-size, filter on serial)."""
    every = computers if computers is not None else [
        c for n in (0, 1) for c in load(f"jamf/computers-inventory-page-{n}.json")["results"]
    ]

    async def token(request: web.Request) -> web.Response:
        if (played := await state.played(request)) is not None:
            return played
        form = await request.post()
        if (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != ("client_credentials", *JAMF_CLIENT):
            return web.json_response({"error": "invalid_client"}, status=401)
        state.tokens_issued += 1
        issued = f"token-{state.tokens_issued}"
        state.valid_tokens = {issued}  # a new token replaces the old one
        return web.json_response({**load("jamf/oauth-token.json"), "access_token": issued})

    async def inventory(request: web.Request) -> web.Response:
        if (played := await state.played(request)) is not None:
            return played
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in state.valid_tokens:
            return web.json_response({"httpStatus": 401, "errors": []}, status=401)
        chosen = sorted(every, key=lambda c: int(c["id"]))
        wanted = request.query.get("filter", "")
        if wanted.startswith('hardware.serialNumber=="'):
            serial = wanted.removeprefix('hardware.serialNumber=="').removesuffix('"')
            chosen = [c for c in chosen if c["hardware"]["serialNumber"] == serial]
        page, size = int(request.query.get("page", "0")), int(request.query.get("page-size", "100"))
        return web.json_response({"totalCount": len(chosen), "results": chosen[page * size:(page + 1) * size]})

    app = web.Application()
    app.router.add_post("/api/oauth/token", token)
    app.router.add_get("/api/v1/computers-inventory", inventory)
    return app
