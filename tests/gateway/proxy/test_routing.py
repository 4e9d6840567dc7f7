"""Route matching: host precedence, longest prefix, segment boundaries, case sensitivity."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadRequestTarget
from gateway.proxy.routing import RouteTable
from gateway.config.settings import RouteSettings


def _table(*routes: dict[str, Any]) -> RouteTable:
    return RouteTable.from_settings(
        [RouteSettings(upstream="http://127.0.0.1:9", tier="low", **r) for r in routes], default_max_body_bytes=1000,
    )


def _id(table: RouteTable, host: str, path: str) -> str | None:
    route = table.match(host, path)
    return None if route is None else route.id


class TestHosts:
    def test_exact_host_before_wildcard_before_any_host(self) -> None:
        """The most specific host wins when several routes cover the same path."""
        table = _table({"id": "any"}, {"id": "wild", "host": "*.corp.example"}, {"id": "exact", "host": "wiki.corp.example"})

        assert "exact" == _id(table, "wiki.corp.example", "/x")
        assert "wild" == _id(table, "git.corp.example", "/x")
        assert "any" == _id(table, "elsewhere.example", "/x")

    def test_wildcard_matches_exactly_one_label(self) -> None:
        """`*.corp.example` matches `a.corp.example` only, not the apex or deeper names."""
        table = _table({"id": "wild", "host": "*.corp.example"})

        assert "wild" == _id(table, "a.corp.example", "/")
        assert None is _id(table, "corp.example", "/")
        assert None is _id(table, "a.b.corp.example", "/")

    def test_host_without_port_matches_any_port_and_with_port_only_that(self) -> None:
        """A route host's port, when given, must match; without one any port does."""
        table = _table({"id": "plain", "host": "wiki.corp"}, {"id": "tls", "host": "wiki.corp:8443"})

        assert "plain" == _id(table, "wiki.corp:8080", "/")
        assert "tls" == _id(table, "wiki.corp:8443", "/")
        assert "plain" == _id(table, "wiki.corp", "/")

    def test_host_falls_through_to_less_specific_routes_for_uncovered_paths(self) -> None:
        """A host's own routes win where they match; other paths fall through to wildcard/any-host routes."""
        table = _table({"id": "any"}, {"id": "wiki-admin", "host": "wiki.corp", "path_prefix": "/admin"})

        assert "wiki-admin" == _id(table, "wiki.corp", "/admin/x")
        assert "any" == _id(table, "wiki.corp", "/other")

    def test_no_match_is_none(self) -> None:
        """Nothing configured for a host and path means no route (the gateway answers 404)."""
        table = _table({"id": "wiki", "host": "wiki.corp"})

        assert None is _id(table, "git.corp", "/")


class TestPaths:
    def test_longest_prefix_wins(self) -> None:
        """Among matching prefixes the longest wins, whatever the configuration order."""
        table = _table({"id": "root"}, {"id": "billing-admin", "path_prefix": "/billing/admin"}, {"id": "billing", "path_prefix": "/billing"})

        assert "billing-admin" == _id(table, "h", "/billing/admin/users")
        assert "billing" == _id(table, "h", "/billing/invoices")
        assert "root" == _id(table, "h", "/")

    @pytest.mark.parametrize(("path", "expected"), [
        ("/billing", "billing"), ("/billing/", "billing"), ("/billing/x", "billing"), ("/billingx", "root"), ("/billing-v2", "root"),
    ])
    def test_prefix_matches_on_segment_boundaries(self, path: str, expected: str) -> None:
        """`/billing` matches `/billing` and `/billing/x` but not `/billingx`."""
        table = _table({"id": "root"}, {"id": "billing", "path_prefix": "/billing"})

        assert expected == _id(table, "h", path)

    def test_prefix_with_trailing_slash_needs_it(self) -> None:
        """`/billing/` matches `/billing/x` but not `/billing`."""
        table = _table({"id": "root"}, {"id": "billing", "path_prefix": "/billing/"})

        assert "billing" == _id(table, "h", "/billing/x")
        assert "root" == _id(table, "h", "/billing")

    def test_case_sensitive_by_default(self) -> None:
        """Prefixes match case-sensitively unless the route says otherwise; another case of a longer prefix is refused."""
        table = _table({"id": "root"}, {"id": "cs", "path_prefix": "/Admin"}, {"id": "ci", "path_prefix": "/wiki", "case_insensitive_path": True})

        assert "cs" == _id(table, "h", "/Admin/x")
        assert "ci" == _id(table, "h", "/WIKI/Page")
        assert "root" == _id(table, "h", "/Other/Page")
        with pytest.raises(BadRequestTarget):
            table.match("h", "/admin")


class TestCaseSpellings:
    @pytest.mark.parametrize("insensitive", [False, True])
    def test_other_case_of_a_longer_prefix_never_goes_to_a_shorter_route(self, insensitive: bool) -> None:
        """`/SECURE/x` goes to `/secure` (case-insensitive route) or is refused, never to `/`, whatever `case_insensitive_path` says."""
        table = _table({"id": "root"}, {"id": "secure", "path_prefix": "/secure", "case_insensitive_path": insensitive})

        if insensitive:
            assert "secure" == _id(table, "h", "/SECURE/x")
        else:
            with pytest.raises(BadRequestTarget, match="only when letter case is ignored"):
                table.match("h", "/SECURE/x")
        assert "secure" == _id(table, "h", "/secure/x")

    def test_other_case_is_refused_across_host_precedence(self) -> None:
        """A host's own prefix matched only ignoring case is refused rather than falling through to an any-host route."""
        table = _table({"id": "any"}, {"id": "wiki-admin", "host": "wiki.corp", "path_prefix": "/admin"})

        with pytest.raises(BadRequestTarget):
            table.match("wiki.corp", "/Admin/x")
        assert "any" == _id(table, "git.corp", "/Admin/x")

    def test_prefixes_differing_only_in_case_each_keep_their_spelling(self) -> None:
        """Two routes whose prefixes differ only in case each get their own spelling; a third spelling is refused."""
        table = _table({"id": "root"}, {"id": "upper", "path_prefix": "/Docs"}, {"id": "lower", "path_prefix": "/docs"})

        assert ("upper", "lower") == (_id(table, "h", "/Docs/x"), _id(table, "h", "/docs/x"))
        with pytest.raises(BadRequestTarget):
            table.match("h", "/DOCS/x")

    def test_route_resolves_body_limit_default(self) -> None:
        """A route without max_body_bytes gets the server default."""
        table = _table({"id": "a"}, {"id": "b", "path_prefix": "/b", "max_body_bytes": 5})

        assert (1000, 5) == (table.match("h", "/").max_body_bytes, table.match("h", "/b").max_body_bytes)  # type: ignore[union-attr]


@given(st.lists(st.sampled_from(["a", "b", "billing", "admin", "x"]), max_size=5).map(lambda s: "/" + "/".join(s)))
def test_matched_prefix_is_a_segment_prefix_of_the_path(path: str) -> None:
    """Whatever matches, the path is the prefix itself or continues with `/` after it."""
    table = _table({"id": "root"}, {"id": "a", "path_prefix": "/a"}, {"id": "billing", "path_prefix": "/billing"}, {"id": "ab", "path_prefix": "/a/b"})

    route = table.match("h", path)

    assert route is not None
    prefix = route.path_prefix
    assert path == prefix or path.startswith(prefix.rstrip("/") + "/")
