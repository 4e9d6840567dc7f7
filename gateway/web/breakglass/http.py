"""Reading break-glass requests and writing their answers: body limits, JSON, problems, who is asking.

Owns: RequestInvalid, read_form, read_json, json_answer, problem_answer, page_answer, identity_of, host_of,
need_user_json, groups_of, is_staff.
Must not import: the gateway.gate.admission of this package.

Every JSON error is the one problem document of ``gateway.web.problem``: ``code``, ``detail``,
``request_id`` and, when the request had several things wrong, ``errors: [{field, problem, expected}]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from aiohttp import web

from gateway.identity.model import Identity
from gateway.keys import BREAKGLASS_WEB, REQUEST_ID, USER
from gateway.web.views.layout import BASE_HEADERS, Rendered
from gateway.web.breakglass.context import MAX_BODY_BYTES
from gateway.web.problem import FieldError, problem_response


class RequestInvalid(ValueError):
    """The request cannot be turned into a GrantRequest; every problem is listed."""

    def __init__(self, problems: Sequence[FieldError], *, status: int = 400, code: str = "request-invalid") -> None:
        super().__init__("; ".join(p.sentence() for p in problems))
        self.problems = tuple(problems)
        self.status = status
        self.code = code


def json_answer(status: int, doc: object) -> web.Response:
    """A JSON answer with the security headers of every Gatehouse page."""
    headers = dict(BASE_HEADERS)
    headers["Content-Type"] = "application/json; charset=utf-8"
    return web.Response(status=status, headers=headers, body=orjson.dumps(doc) + b"\n")


def problem_answer(request: web.Request, status: int, code: str, detail: str, *, errors: Sequence[FieldError] | None = None,
                   extra: Mapping[str, object] | None = None) -> web.Response:
    """The problem document (``gateway.web.problem``) for a break-glass error, with the request's id."""
    return problem_response(status, code, detail, request_id=request.get(REQUEST_ID), errors=errors or (), extra=extra)


def page_answer(rendered: Rendered) -> web.Response:
    """The aiohttp response of a rendered page."""
    return rendered.response()


def identity_of(request: web.Request) -> Identity | None:
    """The verified user of the request, or None."""
    return request.get(USER)


def host_of(request: web.Request) -> str:
    """The Host the client sent (what the CSRF origin checks compare with)."""
    return request.headers.get("Host", request.host)


async def read_form(request: web.Request) -> dict[str, str]:
    """The form fields of a POST of at most MAX_BODY_BYTES.

    Raises:
        web.HTTPRequestEntityTooLarge: a larger body (the error page names the limit).
    """
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def read_json(request: web.Request) -> dict[str, object]:
    """The JSON object of a POST (an empty body is ``{}``).

    Raises:
        RequestInvalid: 413 beyond MAX_BODY_BYTES, 400 when not JSON or not an object.
    """
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise RequestInvalid([FieldError("", f"the body is larger than {MAX_BODY_BYTES} bytes",
                                         "send a small JSON object")], status=413, code="body-too-large")
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestInvalid([FieldError("", "the body is not valid JSON",
                                         'send an object such as {"route": "billing", "reason": "…", "duration_s": 1800}')]
                             ) from None
    if not isinstance(doc, dict):
        raise RequestInvalid([FieldError("", "the body is not a JSON object", "send a JSON object")])
    return doc


def need_user_json(request: web.Request) -> Identity | web.Response:
    """The verified user, or the 401 problem answer for an API call without one."""
    identity = identity_of(request)
    if identity is None:
        return problem_answer(request, 401, "authentication-required", "sign in first; break-glass needs a verified user")
    return identity


def groups_of(identity: Identity) -> frozenset[str]:
    """The user's groups as a set."""
    return frozenset(identity.groups)


def is_staff(request: web.Request, identity: Identity) -> bool:
    """True for members of the reviewer or approver groups."""
    return bool(groups_of(identity) & request.config_dict[BREAKGLASS_WEB].settings.staff_groups)
