"""One problem+json: the builder's rules, and every producer's error through the production listener has its members."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from yarl import URL

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.web.problem import PROBLEM_TYPE_PREFIX, FieldError, problem
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item

CORE = ["type", "title", "status", "code", "detail", "request_id"]
"""The members every problem document starts with, in this order, when the request has an id."""


class TestBuilder:
    def test_members_come_in_one_order_and_the_type_names_the_code(self) -> None:
        """type, title, status, code, detail, request_id, errors, then the endpoint's own members."""
        doc = problem(400, "bad-owners", "owners: `x` is not an email address; send addresses", request_id="r-1",
                      errors=[FieldError("owners[0]", "`x` is not an email address", "an address such as a@corp.example")],
                      extra={"serial": "C02X"}).document()

        assert [*CORE, "errors", "serial"] == list(doc)
        assert ("urn:gatehouse:problem:bad-owners", "Bad request", 400) == (doc["type"], doc["title"], doc["status"])
        assert [{"field": "owners[0]", "problem": "`x` is not an email address",
                 "expected": "an address such as a@corp.example"}] == doc["errors"]

    def test_an_item_code_is_kept_when_there_is_one(self) -> None:
        """An errors item carries its own code only when the endpoint has codes per field."""
        item = FieldError("serial", "the serial is a placeholder", "the laptop's real serial", code="serial-placeholder")

        assert {"field": "serial", "problem": "the serial is a placeholder", "expected": "the laptop's real serial",
                "code": "serial-placeholder"} == item.to_dict()

    @pytest.mark.parametrize(("status", "code", "extra", "message"), [
        (200, "ok", None, "status 200 is not an error status"),
        (400, "Bad_JSON", None, "problem code `Bad_JSON` is not kebab-case"),
        (400, "bad-json", {"type": "x", "code": "y"}, "extension members `code`, `type` would replace core members"),
    ])
    def test_caller_mistakes_are_refused(self, status: int, code: str, extra: dict[str, object] | None, message: str) -> None:
        """A success status, a code that is not kebab-case or an extension hiding a core member is refused."""
        with pytest.raises(ValueError, match=message):
            problem(status, code, "detail", extra=extra)

    def test_the_response_is_problem_json_with_every_pages_headers(self) -> None:
        """The rendered answer is application/problem+json with no-store, nosniff and the extra headers given."""
        rendered = problem(503, "store-unavailable", "the store is unavailable; retry later").rendered({"Retry-After": "5"})

        assert ("application/problem+json", "no-store", "nosniff", "5") == (
            rendered.content_type, rendered.headers["Cache-Control"], rendered.headers["X-Content-Type-Options"],
            rendered.headers["Retry-After"])


@dataclass
class Stack:
    client: TestClient  # type: ignore[type-arg]
    keys: Keys
    clock: MovableClock

    def bearer(self, device: str | None, user: str = "bob@example.com") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.token(user, device=device, now=self.clock())}", "Accept": "application/json"}


@pytest.fixture
async def stack(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    """A full Gatehouse (the production listener and its proxy) in front of a real upstream, with one unencrypted laptop."""
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"upstream": "ok"})

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(upstream)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=str(server.make_url("")).rstrip("/"))
    client = await aiohttp_client(create_app(settings, clock=clock, metrics=Metrics(CollectorRegistry())))
    stored = await client.post("/.gatehouse/api/v1/snapshots", headers=ingest_headers(), json={"snapshots": [
        mac_item("C02NOLUKS", at=clock(), owner="bob@example.com", disk_encrypted=False)]})
    assert 200 == stored.status, await stored.text()
    yield Stack(client, keys, clock)


Producer = Callable[[Stack], Awaitable[ClientResponse]]


async def _deny(s: Stack) -> ClientResponse:
    return await s.client.get("/wiki/", headers=s.bearer("C02NOLUKS"))


async def _unauthenticated(s: Stack) -> ClientResponse:
    return await s.client.get("/wiki/", headers={"Accept": "application/json"})


async def _no_route(s: Stack) -> ClientResponse:
    return await s.client.get("/nowhere/", headers=s.bearer("C02NOLUKS"))


async def _bad_target(s: Stack) -> ClientResponse:
    url = URL(str(s.client.make_url("")).rstrip("/") + "/admin./x", encoded=True)
    return await s.client.session.get(url, headers=s.bearer("C02NOLUKS"))


async def _handler_http_error(s: Stack) -> ClientResponse:
    return await s.client.get("/.gatehouse/login", headers=s.bearer("C02NOLUKS"))  # no OIDC login here: the handler raises 404


async def _breakglass_refused(s: Stack) -> ClientResponse:
    return await s.client.post("/.gatehouse/api/v1/break-glass", headers={**s.bearer("C02NOLUKS"), "X-Gatehouse-Client": "tests"},
                               json={"route": "admin", "reason": "paged for INC-4711, the laptop is being re-encrypted"})


async def _breakglass_invalid(s: Stack) -> ClientResponse:
    return await s.client.post("/.gatehouse/api/v1/break-glass", headers={**s.bearer("C02NOLUKS"), "X-Gatehouse-Client": "tests"},
                               json={"route": "nowhere", "duration_s": -1, "colour": "red"})


async def _ingest_bad_json(s: Stack) -> ClientResponse:
    return await s.client.post("/.gatehouse/api/v1/snapshots", headers=ingest_headers(), data=b"{not json")


async def _ingest_no_token(s: Stack) -> ClientResponse:
    return await s.client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": []})


async def _owners_bad_serial(s: Stack) -> ClientResponse:
    return await s.client.put("/.gatehouse/api/v1/devices/0/owners", headers=ingest_headers(), json={"owners": ["bob@example.com"]})


async def _enroll_disabled(s: Stack) -> ClientResponse:
    return await s.client.post("/.gatehouse/api/v1/enroll/sessions", json={})


async def _osquery_bad_body(s: Stack) -> ClientResponse:
    return await s.client.post("/.gatehouse/osquery/enroll", data=b"not json", headers={"Content-Type": "application/json"})


async def _osquery_too_large(s: Stack) -> ClientResponse:
    return await s.client.post("/.gatehouse/osquery/log", data=io.BytesIO(b"[" + b" " * (10 * 1024 * 1024) + b"]"),
                               headers={"Content-Type": "application/json"})


PRODUCERS: dict[str, tuple[Producer, int, str]] = {
    "deny": (_deny, 403, "checks-failed"),
    "unauthenticated": (_unauthenticated, 401, "unauthenticated"),
    "no route": (_no_route, 404, "no-route"),
    "bad target": (_bad_target, 400, "bad-request-target"),
    "HTTP error a handler raised": (_handler_http_error, 404, "http-404"),
    "break-glass refusal": (_breakglass_refused, 403, "tier-never"),
    "break-glass invalid request": (_breakglass_invalid, 400, "request-invalid"),
    "ingest bad JSON": (_ingest_bad_json, 400, "bad-json"),
    "ingest without a token": (_ingest_no_token, 401, "unauthenticated"),
    "owners bad serial": (_owners_bad_serial, 400, "bad-serial"),
    "enrollment error": (_enroll_disabled, 404, "enrollment-disabled"),
    "osquery bad body": (_osquery_bad_body, 400, "bad-json"),
    "osquery body too large": (_osquery_too_large, 413, "body-too-large"),
}


@pytest.mark.parametrize("name", list(PRODUCERS))
async def test_every_producer_answers_the_one_problem_document(stack: Stack, name: str) -> None:
    """Each endpoint's error is application/problem+json with the same members in the same order and the one type scheme."""
    produce, status, code = PRODUCERS[name]

    response = await produce(stack)
    doc = orjson.loads(await response.read())

    assert (status, "application/problem+json") == (response.status, response.content_type)
    assert CORE == list(doc)[:len(CORE)]
    assert (PROBLEM_TYPE_PREFIX + code, code, status) == (doc["type"], doc["code"], doc["status"])
    assert response.headers["X-Request-Id"] == doc["request_id"]
    assert doc["title"] and doc["detail"]
    assert all({"field", "problem", "expected"} <= set(item) for item in doc.get("errors", []))


async def test_several_problems_are_listed_as_errors(stack: Stack) -> None:
    """A request with several wrong fields lists each, with what is wrong and what is expected."""
    response = await _breakglass_invalid(stack)

    doc = orjson.loads(await response.read())

    assert ["colour", "reason", "duration_s"] == [e["field"] for e in doc["errors"]]
    assert all(e["problem"] and e["expected"] for e in doc["errors"])


async def test_osquery_still_reads_its_own_answers(stack: Stack) -> None:
    """What osqueryd reads stays osquery's: an unknown node key is told `node_invalid`, not a problem document."""
    response = await stack.client.post("/.gatehouse/osquery/config", json={"node_key": "not-a-node"})

    assert (200, {"node_invalid": True}) == (response.status, await response.json())
