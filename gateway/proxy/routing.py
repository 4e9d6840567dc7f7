"""Which route a request belongs to, decided on the canonical host and path.

Owns: Route, RouteTable (``match_target``: the one route match of the proxy and "check again").
Must not import: aiohttp, app, gateway.gate.admission (pure; built once per configuration, read per request).

Matching rules:

- Host first, then path. Among the routes whose host AND path prefix both match, the most specific
  host wins (exact ``wiki.corp.example`` before one-label wildcard ``*.corp.example`` before a route
  without host), then the longest path prefix. A host that has routes of its own therefore still
  falls through to wildcard and any-host routes for paths none of its own prefixes cover.
- A route host with a port (``wiki.corp:8443``) matches only that port; without a port it matches
  the host on any port. A wildcard matches exactly one label: ``*.corp.example`` matches
  ``a.corp.example`` but neither ``corp.example`` nor ``a.b.corp.example``.
- Path prefixes match on segment boundaries: ``/billing`` matches ``/billing`` and ``/billing/x`` but
  NOT ``/billingx``; ``/billing/`` matches ``/billing/`` and ``/billing/x`` but not ``/billing``.
- Prefixes are case-sensitive (``/Billing`` is not ``/billing``, as most upstreams see it), unless the
  route sets ``case_insensitive_path``. When a case-sensitive and a case-insensitive prefix of the same
  length both match, the case-sensitive one wins.
- Whatever ``case_insensitive_path`` says, a path that an upstream ignoring case (IIS, .NET, macOS
  and Windows file systems) would read under another route is refused with 400
  (``BadRequestTarget``): with the same host precedence, if some prefix matches the path when case is
  ignored, the route chosen must be one with the longest such prefix. So with ``/`` (low) and
  ``/secure`` (high), ``/SECURE/x`` is refused instead of going to the low route; two routes whose
  prefixes differ only in case still each get their own spelling.
- Prefixes match the canonical path, in which only unreserved characters are decoded: a prefix with
  non-ASCII characters never matches; write prefixes in ASCII.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from gateway.errors import BadRequestTarget
from gateway.config.settings import RouteSettings
from gateway.proxy.target import Target


@dataclass(frozen=True, slots=True)
class Route:
    """One protected service, resolved from its RouteSettings."""

    id: str
    host: str | None
    path_prefix: str
    upstream: str
    """Base URL without trailing slash; the request path is appended to it."""
    tier: str
    mode: Literal["enforce", "monitor"]
    case_insensitive_path: bool
    max_body_bytes: int
    connect_timeout_s: float
    read_timeout_s: float
    require_owner: bool
    upgrades: frozenset[str] = frozenset({"websocket"})
    """Lower-cased ``Upgrade`` protocol names tunnelled on this route."""

    @classmethod
    def from_settings(cls, settings: RouteSettings, *, default_max_body_bytes: int) -> Route:
        """Resolve one route's settings, filling in server-wide defaults."""
        return cls(
            id=settings.id,
            host=settings.host,
            path_prefix=settings.path_prefix,
            upstream=settings.upstream,
            tier=settings.tier,
            mode=settings.mode,
            case_insensitive_path=settings.case_insensitive_path,
            max_body_bytes=default_max_body_bytes if settings.max_body_bytes is None else settings.max_body_bytes,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            require_owner=settings.require_owner,
            upgrades=frozenset(settings.upgrades),
        )


_Entry = tuple[str, bool, Route]  # (prefix as compared, case-insensitive, route)
_Folded = tuple[str, Route]  # (lower-cased prefix, route)
_Bucket = tuple[tuple[_Entry, ...], tuple[_Folded, ...], bool]
"""One host's routes: entries as matched, entries with every prefix lower-cased, and whether any prefix has upper case."""


def _prefix_matches(prefix: str, path: str) -> bool:
    if not path.startswith(prefix):
        return False
    return len(path) == len(prefix) or prefix.endswith("/") or path[len(prefix)] == "/"


def _first_match(entries: tuple[_Entry, ...], path: str, lowered: str) -> Route | None:
    for prefix, insensitive, route in entries:
        if _prefix_matches(prefix, lowered if insensitive else path):
            return route
    return None


def _ordered(routes: Iterable[Route]) -> _Bucket:
    routes = tuple(routes)
    entries = [
        (r.path_prefix.lower() if r.case_insensitive_path else r.path_prefix, r.case_insensitive_path, r) for r in routes
    ]
    # INVARIANT: longest prefix first; case-sensitive before case-insensitive at equal length.
    entries.sort(key=lambda e: (-len(e[0]), e[1]))
    folded = sorted(((r.path_prefix.lower(), r) for r in routes), key=lambda e: -len(e[0]))
    return tuple(entries), tuple(folded), any(r.path_prefix != r.path_prefix.lower() for r in routes)


def _match_in(bucket: _Bucket, path: str, lowered: str) -> Route | None:
    """The bucket's route for the path, or None when no prefix in it matches even ignoring case.

    Raises:
        BadRequestTarget: a longer prefix matches the path only when letter case is ignored.
    """
    entries, folded, mixed_case = bucket
    if lowered == path and not mixed_case:  # nothing here can differ by case: the plain match is the answer
        return _first_match(entries, path, lowered)
    widest = next((entry for entry in folded if _prefix_matches(entry[0], lowered)), None)
    if widest is None:
        return None
    route = _first_match(entries, path, lowered)
    if route is None or len(route.path_prefix.lower()) != len(widest[0]):
        raise BadRequestTarget(
            f"the path `{path}` matches the prefix `{widest[1].path_prefix}` only when letter case is ignored, "
            "as some upstreams do; send the path in the prefix's case"
        )
    return route


class RouteTable:
    """All routes, indexed per host so that match() is a few dict lookups and prefix checks."""

    __slots__ = ("_exact", "_wildcard", "_any", "routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        exact: dict[str, list[Route]] = {}
        wildcard: dict[str, list[Route]] = {}
        any_host: list[Route] = []
        for route in self.routes:
            if route.host is None:
                any_host.append(route)
            elif route.host.startswith("*."):
                wildcard.setdefault(route.host[1:], []).append(route)
            else:
                exact.setdefault(route.host, []).append(route)
        self._exact = {host: _ordered(rs) for host, rs in exact.items()}
        self._wildcard = {suffix: _ordered(rs) for suffix, rs in wildcard.items()}
        self._any = _ordered(any_host)

    @classmethod
    def from_settings(cls, routes: Iterable[RouteSettings], *, default_max_body_bytes: int = 100 * 1024 * 1024) -> RouteTable:
        """Build the table from configured routes."""
        return cls(Route.from_settings(r, default_max_body_bytes=default_max_body_bytes) for r in routes)

    def match_target(self, target: Target) -> Route | None:
        """The route for a canonical target, matched on its host WITH its port: what the proxy and "check again" both call.

        Raises:
            BadRequestTarget: the path would match a longer prefix if letter case were ignored.
        """
        return self.match(target.host, target.path)

    def match(self, host: str, canonical_path: str) -> Route | None:
        """The route for a lower-cased host (with optional port) and canonical path, or None.

        Raises:
            BadRequestTarget: the path would match a longer prefix if letter case were ignored.
        """
        lowered = canonical_path.lower()
        hostname, port = _split_port(host)
        candidates: list[_Bucket] = []
        if port is not None and (entries := self._exact.get(host)) is not None:
            candidates.append(entries)
        if (entries := self._exact.get(hostname)) is not None:
            candidates.append(entries)
        label, dot, parent = hostname.partition(".")
        if dot and label:
            for suffix in (f".{parent}{':' + port if port else ''}", f".{parent}") if port else (f".{parent}",):
                if (entries := self._wildcard.get(suffix)) is not None:
                    candidates.append(entries)
        candidates.append(self._any)
        for bucket in candidates:
            route = _match_in(bucket, canonical_path, lowered)
            if route is not None:
                return route
        return None


def _split_port(host: str) -> tuple[str, str | None]:
    if host.endswith("]") or ":" not in host:
        return host, None
    name, _, port = host.rpartition(":")
    return name, port


RESERVED_PREFIXES = ("/.gatehouse/", "/.well-known/gatehouse/")
"""Paths that belong to Gatehouse on every host and are never proxied, in any letter case (``/.GateHouse/x`` too)."""
_RESERVED_BARE = frozenset(p[:-1] for p in RESERVED_PREFIXES)


def is_reserved(path: str) -> bool:
    """True for paths under a reserved prefix (or the bare prefixes themselves), in any letter case."""
    if not path.startswith("/."):
        return False
    lowered = path.lower()
    return lowered.startswith(RESERVED_PREFIXES) or lowered in _RESERVED_BARE
