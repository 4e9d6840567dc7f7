"""Cross-site request forgery protection for Gatehouse's own state-changing forms and JSON API.

Owns: CsrfProtector (sign/check tokens), CsrfRefused, check_form, check_json, check_origin,
CSRF_HEADER, CLIENT_HEADER, FORM_FIELD.
Must not import: gateway.app, gateway.gate.admission (plain functions over request headers and form values).

The scheme
----------
- **Signed synchronizer token bound to the user.** A token is ``<issued>.<nonce>.<mac>`` where
  ``mac = HMAC-SHA256(secret, "gatehouse-csrf/v1|" + subject + "|" + issued + "|" + nonce)``.
  It is valid for the verified user it was issued to (the ``sub`` of the verified token) and for
  ``max_age`` after ``issued``. No server-side state: any page that renders a form for a user
  calls ``protector.issue(subject, now=now)`` and puts the result in a hidden ``csrf_token``
  field (the deny page gets it through ``gateway.web.breakglass.csrf_token_for(request)``).
  The secret is configured (``breakglass.csrf_secret``, needed when replicas serve one user) or
  drawn per process. A forged request from another site cannot know a token for the victim.
- **Fetch metadata and Origin.** Every state-changing request is refused when the browser says it
  is cross-site: ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``, or an ``Origin`` that
  is neither this request's own host nor a configured allowed origin. ``Origin: null`` (what
  Chromium sends for a form on a ``Referrer-Policy: no-referrer`` page, i.e. ours) passes only
  with ``Sec-Fetch-Site: same-origin``.
- **JSON API.** Only ``Content-Type: application/json`` is accepted (a cross-site HTML form cannot
  send it), plus either a valid token in ``X-Gatehouse-CSRF`` or a non-empty
  ``X-Gatehouse-Client`` header naming the script. Browsers only send a custom header cross-origin
  after a CORS preflight, which Gatehouse never grants. A token that is present but wrong is
  refused even when the client header is also sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-Gatehouse-CSRF"
CLIENT_HEADER = "X-Gatehouse-Client"
_CONTEXT = b"gatehouse-csrf/v1|"
_ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})


class CsrfRefused(PermissionError):
    """A state-changing request failed the CSRF checks; ``code`` says which in kebab-case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class CsrfProtector:
    """Issues and checks user-bound CSRF tokens with one secret."""

    secret: bytes
    max_age: timedelta = timedelta(hours=12)
    allowed_origins: frozenset[str] = frozenset()

    @classmethod
    def with_random_secret(cls, *, max_age: timedelta = timedelta(hours=12),
                           allowed_origins: Iterable[str] = ()) -> CsrfProtector:
        """A protector whose tokens are only valid in this process."""
        return cls(secrets.token_bytes(32), max_age, frozenset(allowed_origins))

    def _mac(self, subject: str, issued: str, nonce: str) -> str:
        message = _CONTEXT + f"{subject}|{issued}|{nonce}".encode()
        return _b64(hmac.new(self.secret, message, hashlib.sha256).digest())

    def issue(self, subject: str, *, now: datetime) -> str:
        """A fresh token for ``subject``, valid until ``now + max_age``."""
        issued = str(int(now.timestamp()))
        nonce = _b64(secrets.token_bytes(12))
        return f"{issued}.{nonce}.{self._mac(subject, issued, nonce)}"

    def check_token(self, token: str | None, subject: str, *, now: datetime) -> None:
        """Check a token against the verified user and the time.

        Raises:
            CsrfRefused: ``csrf-missing``, ``csrf-malformed``, ``csrf-invalid`` or ``csrf-expired``.
        """
        if not token:
            raise CsrfRefused("csrf-missing", "the request carries no CSRF token; reload the page and submit the form again")
        parts = token.split(".")
        if len(token) > 200 or len(parts) != 3 or not parts[0].isdigit():
            raise CsrfRefused("csrf-malformed", "the CSRF token is malformed; reload the page and submit the form again")
        issued, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac(subject, issued, nonce)):
            raise CsrfRefused(
                "csrf-invalid",
                "the CSRF token was not issued to you by this Gatehouse; reload the page and submit the form again",
            )
        age = now.timestamp() - int(issued)
        if age > self.max_age.total_seconds() or age < -300:
            raise CsrfRefused("csrf-expired", "the page is too old to submit; reload it and submit the form again")


def _origin_of(value: str) -> str:
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(headers: Mapping[str, str], *, host: str, allowed_origins: frozenset[str] = frozenset()) -> None:
    """Refuse a request the browser marks as cross-site, or whose Origin is another site.

    ``host`` is this request's own ``Host`` (with port when not the default). A missing
    ``Origin`` and ``Sec-Fetch-Site`` (scripts, old browsers) pass; the token or client header
    then decides.

    Raises:
        CsrfRefused: ``cross-site``.
    """
    site = headers.get("Sec-Fetch-Site")
    fetch_site = site.strip().lower() if site is not None else None
    if fetch_site is not None and fetch_site not in _ALLOWED_FETCH_SITES:
        raise CsrfRefused(
            "cross-site",
            f"the browser says this request came from another site (Sec-Fetch-Site `{site}`); "
            "submit the form from Gatehouse's own page",
        )
    origin = headers.get("Origin")
    if origin is None:
        return
    normalised = origin.strip().lower()
    if normalised == "null":
        # Browsers send `Origin: null` for form posts from pages with `Referrer-Policy: no-referrer`
        # (every Gatehouse page); the fetch metadata then says whether it was our own page.
        if fetch_site == "same-origin":
            return
    else:
        parts = urlsplit(normalised)
        if parts.scheme in ("http", "https") and parts.netloc == host.lower():
            return
        if _origin_of(normalised) in allowed_origins:
            return
    raise CsrfRefused(
        "cross-site",
        f"the request comes from origin `{origin}`, not from `{host}`; submit the form from Gatehouse's own page",
    )


def check_form(protector: CsrfProtector, form: Mapping[str, str], headers: Mapping[str, str], *,
               host: str, subject: str, now: datetime) -> None:
    """The checks for an HTML form post: same site, and a valid token in ``csrf_token``.

    Raises:
        CsrfRefused: the request failed one of the checks.
    """
    check_origin(headers, host=host, allowed_origins=protector.allowed_origins)
    protector.check_token(form.get(FORM_FIELD), subject, now=now)


def check_json(protector: CsrfProtector, headers: Mapping[str, str], *, host: str, subject: str,
               now: datetime) -> None:
    """The checks for a JSON API call: same site, JSON content type, and a token or client header.

    Raises:
        CsrfRefused: ``content-type`` (415), ``cross-site``, ``csrf-missing``, ``csrf-invalid``…
    """
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise CsrfRefused(
            "content-type",
            f"the body must be JSON with `Content-Type: application/json`, not `{content_type or 'none'}`",
        )
    check_origin(headers, host=host, allowed_origins=protector.allowed_origins)
    token = headers.get(CSRF_HEADER)
    if token is not None:
        protector.check_token(token, subject, now=now)
        return
    if not headers.get(CLIENT_HEADER, "").strip():
        raise CsrfRefused(
            "csrf-missing",
            f"send a `{CLIENT_HEADER}` header naming your script (or a `{CSRF_HEADER}` token) with every "
            "state-changing API call",
        )
