"""CSRF tokens and origin checks as plain functions (the forms and APIs that use them are tested with their pages)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.web.csrf import CsrfProtector, CsrfRefused, check_origin
from tests.gateway.web.breakglass.support import NOW


class TestProtector:
    def test_token_round_trips_for_its_user(self) -> None:
        """A token checks for the user it was issued to until its maximum age."""
        protector = CsrfProtector(b"k" * 32, max_age=timedelta(hours=1))
        token = protector.issue("alice", now=NOW)

        protector.check_token(token, "alice", now=NOW + timedelta(hours=1))

        with pytest.raises(CsrfRefused):
            protector.check_token(token, "alice", now=NOW + timedelta(hours=1, seconds=1))

    def test_another_secret_refuses_the_token(self) -> None:
        """A token from another process (another random secret) is refused."""
        token = CsrfProtector.with_random_secret().issue("alice", now=NOW)

        with pytest.raises(CsrfRefused) as info:
            CsrfProtector.with_random_secret().check_token(token, "alice", now=NOW)

        assert "csrf-invalid" == info.value.code

    def test_configured_other_origin_is_allowed(self) -> None:
        """An origin listed in `allowed_origins` may post; its path and case do not matter."""
        check_origin({"Origin": "HTTPS://Admin.Corp.Example"}, host="gatehouse.corp.example",
                     allowed_origins=frozenset({"https://admin.corp.example"}))
