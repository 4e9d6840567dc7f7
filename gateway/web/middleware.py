"""The one middleware around every request to Gatehouse's own endpoints: id, target check, log line, metrics, error pages.

Owns: request_context (middleware) and request_context_with (the same, folding in a guard for Gatehouse's pages), add_response_headers (on_response_prepare). The request id rule and SERVER_NAME are the proxy's (``gateway.proxy.rules``).
Must not import: app, gateway.serve.

The proxy (``gateway.proxy``) gives aiohttp one request at a time, on the client's connection;
every answer here closes that connection afterwards (``force_close``), so the next request on it
reaches the proxy again on a new connection. For each request, in order: take the live configuration snapshot (``request[LIVE]``); keep the
``X-Request-Id`` of a trusted peer when it is short and made of safe characters, else generate one;
bind ``request_id`` with structlog contextvars; validate and canonicalise the raw target
(``request[TARGET]``, 400 on anything ambiguous); call the handler; turn a GatewayError or an HTTP
error into a page (HTML or problem+json by ``Accept``); emit ONE ``request.completed`` event; count
the request by route and status class; keep the in-flight gauge. A handler that fails because its
client went away (``proxy.client_left``) is status 499, as in the proxy: no page, no error line.

The line and the metrics are ``gateway.proxy.record.RequestRecorder``'s, the proxy's own: the
``request.completed`` line carries the fields of ``RECORD_FIELDS``: request_id, method, path (canonical path only: never the query, which may hold tokens),
route, tier, decision, user, device, reason, status, upstream_status, bytes_in, bytes_out, duration_s.
Durations follow ``metrics.RequestTimer``'s points, as in the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.http import SERVER_SOFTWARE

from gateway.errors import GatewayError
from gateway.proxy.routing import is_reserved
from gateway.keys import CONFIG, EXCHANGE, LIVE, RECORDER, REQUEST_ID, TARGET
from gateway.web.pages import error_response, gateway_error_response, http_error_response
from gateway.proxy.rules import CLIENT_CLOSED_REQUEST, SERVER_NAME, Exchange, choose_request_id, client_left
from gateway.proxy.target import canonicalise

_log = structlog.get_logger("gateway.request")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_Guard = Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]
GUARDED_PREFIX = "/.gatehouse/"
"""Requests whose path starts with this go through ``request_context_with``'s guard."""


def request_context_with(guard: _Guard | None) -> Middleware:
    """The request_context middleware, handing requests under GUARDED_PREFIX to ``guard(request, handler)``.

    Folds a middleware that only concerns Gatehouse's own pages (``reserved_identity``) into this one
    as a prefix test, so every other request skips its frame; the guard runs inside the request id,
    canonical target, error pages and log line, as the next middleware did.
    """

    @web.middleware
    async def request_context(request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Wrap one request: id, canonical target, error pages, log line, metrics (and the guard, if any)."""
        app = request.config_dict
        recorder = app[RECORDER]
        live = app[CONFIG].current
        request[LIVE] = live
        incoming = request.headers.get("X-Request-Id")
        request_id = choose_request_id(incoming, trusted=incoming is not None and live.trusts(request.remote))
        request[REQUEST_ID] = request_id
        exchange = Exchange()  # its timer starts here: the request's head has been read
        request[EXCHANGE] = exchange
        status = 500
        recorder.started()
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            try:  # one frame for the whole request: the error pages are answered here, not in a helper coroutine
                request[TARGET] = canonicalise(request.raw_path, request.headers.getall("Host", []))
                if guard is not None and request.path.startswith(GUARDED_PREFIX):
                    response = await guard(request, handler)
                else:
                    response = await handler(request)
            except GatewayError as exc:
                response = gateway_error_response(request.headers.get("Accept", ""), exc, request_id=request_id)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = http_error_response(request.headers.get("Accept", ""), exc, request_id=request_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ConnectionResetError) and client_left(request):
                    response = web.Response(status=CLIENT_CLOSED_REQUEST)  # never sent: the client is gone
                else:
                    _log.exception("request.failed", request_id=request_id)
                    response = error_response(request.headers.get("Accept", ""), status=500, code="internal-error", request_id=request_id)
            status = response.status
            if exchange.bytes_out == 0 and exchange.upstream_status is None:
                exchange.bytes_out = response.content_length or 0
            response.force_close()  # the proxy gave aiohttp this one request: the connection ends with its answer
            return response
        except web.HTTPException as exc:  # redirects and the like from other handlers pass through
            status = exc.status
            exc.force_close()
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST  # the client went away (or the grace period of a shutdown ended)
            raise
        finally:
            target = request.get(TARGET)
            bound = structlog.contextvars.get_contextvars() if recorder.log_requests else {}
            recorder.completed(
                request_id=request_id, method=request.method,
                path=target.path if target is not None else request.raw_path.partition("?")[0][:256],
                route=exchange.route, tier=exchange.tier, decision=bound.get("decision"), user=bound.get("user"),
                device=bound.get("device"), reason=bound.get("reason"), status=status, upstream_status=exchange.upstream_status,
                bytes_in=exchange.bytes_in, bytes_out=exchange.bytes_out, duration=exchange.timer.stop(),
                metric_route=exchange.route or ("gatehouse" if target is not None and is_reserved(target.path) else "-"), flush=True,
            )
            structlog.contextvars.reset_contextvars(**tokens)

    return request_context


request_context = request_context_with(None)


async def add_response_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: every response carries the request's id, and a ``Server`` that names no version.

    aiohttp would otherwise send ``Server: Python/<version> aiohttp/<version>`` (its default, set
    before this hook runs, is replaced); an upstream's own ``Server`` header is kept.
    """
    request_id = request.get(REQUEST_ID)
    headers = response.headers
    if request_id is not None and "X-Request-Id" not in headers:
        headers["X-Request-Id"] = request_id
    if headers.get("Server", SERVER_SOFTWARE) == SERVER_SOFTWARE:  # aiohttp set its default before this hook runs
        headers["Server"] = SERVER_NAME
