"""Session and login-state cookies, and the no-open-redirect rule for return URLs."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, strategies as st

from gateway.identity import AuthenticationError, AuthReason, Identity, SessionCodec, safe_return_path
from tests.conftest import NOW

CODEC = SessionCodec("k" * 40, lifetime_s=3600, login_timeout_s=600)
USER = Identity("user-1", "alice@corp.example", ("staff", "a,admins"), "https://idp", "session", NOW + timedelta(hours=1), "SER-1")


def reason(fn) -> AuthReason:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthenticationError) as caught:
        fn()
    return caught.value.reason


class TestSessionCookie:
    def test_round_trip(self) -> None:
        """A session cookie gives back the same user until it expires."""
        cookie = CODEC.encode_session(USER, now=NOW)

        assert USER == CODEC.decode_session(cookie, now=NOW + timedelta(minutes=59))

    def test_expires(self) -> None:
        """After its lifetime the session is expired."""
        cookie = CODEC.encode_session(USER, now=NOW)

        assert AuthReason.EXPIRED == reason(lambda: CODEC.decode_session(cookie, now=NOW + timedelta(hours=1)))

    def test_tampered_cookie_is_invalid(self) -> None:
        """Changing any part of the cookie breaks its signature."""
        header, payload, sig = CODEC.encode_session(USER, now=NOW).split(".")
        forged = f"{header}.{payload[:-2]}AA.{sig}"

        assert AuthReason.INVALID == reason(lambda: CODEC.decode_session(forged, now=NOW))

    def test_another_key_is_invalid(self) -> None:
        """A cookie signed under another session key is refused."""
        other = SessionCodec("o" * 40, lifetime_s=3600)

        assert AuthReason.INVALID == reason(lambda: CODEC.decode_session(other.encode_session(USER, now=NOW), now=NOW))

    def test_login_cookie_is_not_a_session(self) -> None:
        """The login-state cookie can never stand in for a session."""
        _, login_cookie = CODEC.new_login("/", now=NOW)

        assert AuthReason.INVALID == reason(lambda: CODEC.decode_session(login_cookie, now=NOW))

    def test_no_secret_in_the_cookie(self) -> None:
        """The PKCE verifier and nonce are not in the login cookie; they are derived from the state with the key."""
        login, cookie = CODEC.new_login("/", now=NOW)

        assert CODEC.pkce_verifier(login.state) not in cookie
        assert CODEC.nonce(login.state) not in cookie


class TestLoginState:
    def test_matching_state(self) -> None:
        """The callback's state must equal the one bound in this browser's cookie."""
        login, cookie = CODEC.new_login("/docs?x=1", now=NOW)

        assert login == CODEC.check_login(cookie, login.state, now=NOW + timedelta(minutes=1))

    def test_other_state_is_refused(self) -> None:
        """A state from another login (CSRF / login injection) is refused."""
        _, cookie = CODEC.new_login("/", now=NOW)
        other, _ = CODEC.new_login("/", now=NOW)

        assert AuthReason.LOGIN_FAILED == reason(lambda: CODEC.check_login(cookie, other.state, now=NOW))

    def test_stale_login_is_refused(self) -> None:
        """A login older than its timeout is refused."""
        login, cookie = CODEC.new_login("/", now=NOW)

        assert AuthReason.LOGIN_FAILED == reason(lambda: CODEC.check_login(cookie, login.state, now=NOW + timedelta(minutes=11)))

    def test_missing_cookie_is_refused(self) -> None:
        """Without the login cookie there is no login to finish."""
        login, _ = CODEC.new_login("/", now=NOW)

        assert AuthReason.LOGIN_FAILED == reason(lambda: CODEC.check_login(None, login.state, now=NOW))


class TestReturnPath:
    @pytest.mark.parametrize("bad", [
        "//evil.example", "/\\evil.example", "\\\\evil.example", "https://evil.example/", "http:evil", "evil.example",
        "/%2F%2Fevil.example", "/%5Cevil.example", "//evil.example/%2e%2e", "/\t/evil.example", " /x", "javascript:alert(1)",
        "/a\r\nSet-Cookie: x=1", "",
    ])
    def test_unsafe_targets_become_root(self, bad: str) -> None:
        """Anything that is not a same-origin relative path returns to `/`."""
        assert "/" == safe_return_path(bad)

    def test_non_ascii_is_percent_encoded(self) -> None:
        """A return path with non-ASCII characters is percent-encoded, keeping existing escapes."""
        assert "/wiki/%C3%BC?q=%20" == safe_return_path("/wiki/ü?q=%20")

    def test_relative_path_with_query_is_kept(self) -> None:
        """An ordinary path and query are kept exactly."""
        assert "/wiki/Page?action=edit&x=%20" == safe_return_path("/wiki/Page?action=edit&x=%20")

    @given(st.text(max_size=200))
    def test_never_leaves_the_origin(self, value: str) -> None:
        """Whatever the input, the result resolves to the same origin as Gatehouse."""
        result = safe_return_path(value)

        joined = urlsplit(urljoin("https://gate.example/base/", result))
        assert ("https", "gate.example") == (joined.scheme, joined.netloc)
        assert result.startswith("/") and not result.startswith("//") and "\\" not in result
        assert result.isascii() and result.isprintable()

    @given(st.sampled_from(["//", "/\\", "\\/", "https://", "/%2f/", "/%5c"]), st.text(max_size=40))
    def test_protocol_relative_prefixes_never_survive(self, prefix: str, rest: str) -> None:
        """Protocol-relative, absolute and backslash tricks (also percent-encoded) always return to `/`."""
        assert "/" == safe_return_path(prefix + rest)
