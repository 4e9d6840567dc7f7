"""The request middleware: one log line per request, request ids, metrics, error pages."""

from __future__ import annotations

import structlog
from aiohttp import web

from gateway.gate.admission import Admission
from gateway.metrics import Metrics
from gateway.proxy.routing import Route
from tests.gateway.conftest import MakeGateway, Recorder


class _BindingGate:
    async def admit(self, request: web.Request, route: Route) -> Admission:
        structlog.contextvars.bind_contextvars(decision="allow", user="alice@example.com", device="SERIAL1")
        return Admission.allow()


class _BrokenGate:
    async def admit(self, request: web.Request, route: Route) -> Admission:
        raise RuntimeError("boom")


class TestLogLine:
    async def test_one_completed_event_with_every_field_and_no_query(self, make_gateway: MakeGateway, upstream_url: str) -> None:
        """Each request logs exactly one request.completed with the gate's fields and never the query."""
        gw = await make_gateway([{"id": "app", "upstream": upstream_url, "tier": "high"}], gate=_BindingGate())

        with structlog.testing.capture_logs() as logs:
            resp = await gw.post("/x/y?token=s3cret", data=b"12345")
            await resp.read()

        completed = [e for e in logs if e["event"] == "request.completed"]
        assert 1 == len(completed)
        line = completed[0]
        assert {
            "method": "POST", "path": "/x/y", "route": "app", "tier": "high", "decision": "allow",
            "user": "alice@example.com", "device": "SERIAL1", "status": 200, "upstream_status": 200, "bytes_in": 5,
            "request_id": resp.headers["X-Request-Id"],
        }.items() <= line.items()
        assert line["bytes_out"] > 0 and line["duration_s"] >= 0
        assert all("s3cret" not in str(value) for event in logs for value in event.values())

    async def test_gate_failure_is_a_500_page_and_logged(self, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """An exception in the gate answers 500 (never proxies) and is logged as request.failed."""
        gw = await make_gateway([{"id": "app", "upstream": upstream_url, "tier": "low"}], gate=_BrokenGate())

        with structlog.testing.capture_logs() as logs:
            resp = await gw.get("/x", headers={"Accept": "application/json"})

        assert 500 == resp.status
        assert "internal-error" == (await resp.json(content_type=None))["code"]
        assert ["request.failed", "request.completed"] == [e["event"] for e in logs]
        assert [] == recorder.seen


class TestMetrics:
    async def test_requests_counted_by_route_and_code_class(self, make_gateway: MakeGateway, upstream_url: str, metrics: Metrics) -> None:
        """Requests are counted by route id and status class, and the in-flight gauge returns to zero."""
        gw = await make_gateway([{"id": "app", "upstream": upstream_url, "tier": "low", "path_prefix": "/app"}])

        for path in ("/app/1", "/app/2", "/nowhere", "/.gatehouse/healthz"):
            await (await gw.get(path)).read()

        sample = metrics.registry.get_sample_value
        assert 2.0 == sample("gatehouse_requests_total", {"route": "app", "code_class": "2xx"})
        assert 1.0 == sample("gatehouse_requests_total", {"route": "-", "code_class": "4xx"})
        assert 1.0 == sample("gatehouse_requests_total", {"route": "gatehouse", "code_class": "2xx"})
        assert 0.0 == sample("gatehouse_requests_in_flight", {})
        assert 2.0 == sample("gatehouse_upstream_duration_seconds_count", {"route": "app"})


class TestRequestId:
    async def test_every_response_carries_a_request_id(self, make_gateway: MakeGateway) -> None:
        """Gatehouse's own answers carry X-Request-Id too, and ids differ per request."""
        gw = await make_gateway([])

        first = await gw.get("/nothing")
        second = await gw.get("/.gatehouse/healthz")

        assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
        assert 32 == len(first.headers["X-Request-Id"])
