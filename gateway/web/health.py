"""Liveness and readiness: /.gatehouse/healthz and /.gatehouse/readyz, and the checks behind readiness.

Owns: Readiness, Check, healthz, readyz_handler.
Must not import: gateway.keys, app, gateway.serve (keys.py names Readiness, so this module stays below it: the
readiness handler gets its Readiness as a value, never from an app key).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

Check = Callable[[], bool | Awaitable[bool]]


@dataclass(slots=True)
class Readiness:
    """Named readiness checks behind /.gatehouse/readyz.

    A check is critical (the replica cannot decide requests without it: config, policy, the loaded
    snapshot cache) or degradable (``degrades=True``: the replica still decides correctly from memory
    while it fails, e.g. the store). Readiness is 200 while every critical check passes, listing the
    degradable ones that fail under ``degraded``; ``?strict=1`` counts those as not ready too.
    """

    checks: dict[str, Check] = field(default_factory=dict)
    degradable: set[str] = field(default_factory=set)

    def add(self, name: str, check: Check, *, degrades: bool = False) -> None:
        """Register (or replace) a check; it may be sync or async and must be cheap."""
        self.checks[name] = check
        if degrades:
            self.degradable.add(name)
        else:
            self.degradable.discard(name)

    def remove(self, name: str) -> None:
        """Forget a check."""
        self.checks.pop(name, None)
        self.degradable.discard(name)

    async def evaluate(self) -> dict[str, bool]:
        """Every check's state; a check that raises counts as failing."""
        states: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                value = check()
                if inspect.isawaitable(value):
                    value = await value
                states[name] = bool(value)
            except Exception:  # a broken check means not ready, never a 500
                states[name] = False
        return states


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop runs."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


def readyz_handler(readiness: Readiness) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The readiness handler for ``readiness``: 200 while every critical check passes (degraded ones listed), else 503 naming what is not ready."""

    async def readyz(request: web.Request) -> web.Response:
        states = await readiness.evaluate()
        strict = request.query.get("strict") in ("1", "true")
        failing = sorted(name for name, ok in states.items() if not ok)
        degraded = [] if strict else [name for name in failing if name in readiness.degradable]
        not_ready = [name for name in failing if name not in degraded]
        body = {"ready": not not_ready, "checks": states, "not_ready": not_ready, "degraded": degraded}
        return web.Response(
            status=503 if not_ready else 200, body=orjson.dumps(body), content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return readyz


__all__ = ["Check", "Readiness", "healthz", "readyz_handler"]
