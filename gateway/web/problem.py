"""The one problem+json builder: every JSON error Gatehouse answers is an RFC 9457 document made here.

Owns: PROBLEM_TYPE_PREFIX (the one problem-type URI scheme), ProblemDetails, FieldError, problem,
problem_response, problem_type, title_for.
Must not import: aiohttp at module level (``ProblemDetails.response`` imports it lazily, so the pure
renderers in gateway.web.views may build documents), decision logic, the clock, files or the network.

The document's members, in this order::

    type        urn:gatehouse:problem:<code>        the one problem-type URI scheme
    title       short and the same for every occurrence of the status (or of a code with its own title)
    status      the HTTP status, repeated
    code        the kebab-case code the type ends with (what scripts branch on, the log line's reason)
    detail      this occurrence: what is wrong and what to do, in the user's terms
    request_id  the request's id, when the request has one (quote it to support)
    errors      [{field, problem, expected[, code]}], when the request had several things wrong
    ...         extension members of the endpoint (the deny page's ``failing``, a sign-in ``reason``…)

Why ``urn:gatehouse:problem:<code>``: the type names a kind of problem, not a place: Gatehouse runs
under each operator's own host name, so an ``https`` type would point at a page that is not there
(RFC 9457 §3.1.1 allows a non-resolvable URI); a URN says it is a name. The code is repeated as
``code`` so that clients need not parse the URI.

The body is sent as ``application/problem+json; charset=utf-8`` with the security headers of every
Gatehouse page (``gateway.web.views.layout.BASE_HEADERS``: no caching, nosniff, a CSP).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import orjson

from gateway.web.views.layout import PROBLEM_JSON, Rendered, respond

if TYPE_CHECKING:
    from aiohttp import web

PROBLEM_TYPE_PREFIX = "urn:gatehouse:problem:"
"""Every problem's ``type`` is this prefix and its ``code``."""

CORE_MEMBERS = frozenset({"type", "title", "status", "code", "detail", "request_id", "errors"})
"""Members the builder writes; an endpoint's extension members never replace them."""

_CODE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

_STATUS_TITLES: Mapping[int, str] = MappingProxyType({
    400: "Bad request",
    401: "Sign-in required",
    403: "Access denied",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Request body too large",
    415: "Unsupported media type",
    428: "Precondition required",
    429: "Too many requests",
    431: "Request headers too large",
    500: "Something went wrong",
    502: "Service unreachable",
    503: "Temporarily unavailable",
    504: "Service did not answer in time",
})

_CODE_TITLES: Mapping[str, str] = MappingProxyType({
    "device-certificate-revoked": "This laptop's device certificate was revoked",
    "device-certificate-expired": "This laptop's device certificate has expired",
})


def problem_type(code: str) -> str:
    """The ``type`` URI of a problem code: ``urn:gatehouse:problem:<code>``."""
    return PROBLEM_TYPE_PREFIX + code


def title_for(status: int, code: str = "") -> str:
    """The short title of a code that has its own, else of the status (``Error`` for a status without one)."""
    return _CODE_TITLES.get(code) or _STATUS_TITLES.get(status, "Error")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One of several things wrong with a request: which field, what is wrong, what is expected there."""

    field: str
    """The member of the request (``duration_s``, ``scope.tier``; empty for the body as a whole)."""
    problem: str
    expected: str
    code: str = ""
    """This item's own code, when the endpoint has one per field (enrollment: ``serial-placeholder``)."""

    def to_dict(self) -> dict[str, str]:
        """The ``errors`` entry: ``{field, problem, expected}`` and ``code`` when there is one."""
        entry = {"field": self.field, "problem": self.problem, "expected": self.expected}
        if self.code:
            entry["code"] = self.code
        return entry

    def sentence(self) -> str:
        """``<problem>; <expected>``, for a page or a log line."""
        return f"{self.problem}; {self.expected}" if self.expected else self.problem


@dataclass(frozen=True, slots=True)
class ProblemDetails:
    """An RFC 9457 problem document as a value; build it with ``problem(...)``."""

    status: int
    code: str
    title: str
    detail: str
    request_id: str | None = None
    errors: tuple[FieldError, ...] = ()
    extra: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    """Extension members, after the core ones (never one of CORE_MEMBERS)."""

    @property
    def type(self) -> str:
        """``urn:gatehouse:problem:<code>``."""
        return problem_type(self.code)

    def document(self) -> dict[str, object]:
        """The document as plain data, members in the order of the module docstring."""
        doc: dict[str, object] = {"type": self.type, "title": self.title, "status": self.status, "code": self.code,
                                  "detail": self.detail}
        if self.request_id:
            doc["request_id"] = self.request_id
        if self.errors:
            doc["errors"] = [e.to_dict() for e in self.errors]
        doc.update(self.extra)
        return doc

    def body(self, *, indent: bool = False) -> bytes:
        """The JSON body (indented for the documents people read in a terminal, such as the denial)."""
        return orjson.dumps(self.document(), option=orjson.OPT_INDENT_2 if indent else 0)

    def rendered(self, headers: Mapping[str, str] | None = None, *, indent: bool = False) -> Rendered:
        """The finished response as data: this status, ``application/problem+json``, the security headers and ``headers``."""
        return respond(self.status, PROBLEM_JSON, self.body(indent=indent), headers)

    def response(self, headers: Mapping[str, str] | None = None, *, indent: bool = False) -> web.Response:
        """The aiohttp response for a handler to return."""
        return self.rendered(headers, indent=indent).response()


def problem(
    status: int, code: str, detail: str, *, title: str | None = None, request_id: str | None = None,
    errors: Sequence[FieldError] = (), extra: Mapping[str, object] | None = None,
) -> ProblemDetails:
    """The problem document for one error: ``status``, kebab-case ``code``, and ``detail`` saying what is wrong and what to do.

    ``title`` defaults to ``title_for(status, code)``; ``errors`` lists each wrong field when there
    are several; ``extra`` adds the endpoint's extension members.

    Raises:
        ValueError: a status that is not an error, a code that is not kebab-case, or an ``extra``
            member that would replace a core one (all mistakes in the caller, never in the request).
    """
    if not 400 <= status <= 599:
        raise ValueError(f"status {status} is not an error status; a problem document needs 400 to 599")
    if not _CODE.fullmatch(code):
        raise ValueError(f"problem code `{code}` is not kebab-case; write lowercase words joined by `-`")
    members = dict(extra or {})
    clash = sorted(CORE_MEMBERS & set(members))
    if clash:
        raise ValueError(f"extension members {', '.join(f'`{m}`' for m in clash)} would replace core members; rename them")
    return ProblemDetails(status=status, code=code, title=title or title_for(status, code), detail=detail,
                          request_id=request_id or None, errors=tuple(errors), extra=MappingProxyType(members))


def problem_response(
    status: int, code: str, detail: str, *, title: str | None = None, request_id: str | None = None,
    errors: Sequence[FieldError] = (), extra: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """``problem(...)`` as the aiohttp response, with ``headers`` added (``WWW-Authenticate``, ``Retry-After``).

    Raises:
        ValueError: as ``problem``.
    """
    return problem(status, code, detail, title=title, request_id=request_id, errors=errors, extra=extra).response(headers)
