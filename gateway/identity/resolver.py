"""IdentityResolver: turns a request into a verified user and device, and both into upstream headers.

Owns: IdentityResolver, check_identity_files, the 401/503 rendering (unauthenticated_response), the
refused device certificate's 403 (certificate_refused_response).
Must not import: gateway.keys, gate, policy_engine, breakglass (no policy here: identity only; keys.py names
IdentityResolver, so the request id comes in through a reader: ``request_id=``).

User sources are tried in the configured order and the first credential present decides: an invalid
bearer token is not rescued by a cookie. Device sources are tried in their own configured order.

A request without a verified user is answered by ``challenge``: a browser navigation is sent to the
OpenID provider when Gatehouse has a login of its own; everything else gets
``unauthenticated_response``, the sign-in page of ``gateway.web.views.signin`` for browsers (what
happened, "Sign in again") and problem+json for API clients, both with ``WWW-Authenticate``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web

from gateway.identity.assertion import (
    SigningKeys, identity_headers, jwks_document, load_signing_keys, sign_assertion,
)
from gateway.config.identity import (
    ASSERTION_HEADER, LOGIN_PATH, BearerSource, CookieSource, HeaderSource, IdentitySettings,
    UpstreamAssertionSettings, UserSource,
)
from gateway.identity.device import DeviceEvidence, DeviceTrust, RevokedAt, device_serial
from gateway.errors import Problem
from gateway.identity.errors import (
    AmbiguousDeviceCertificate, AuthenticationError, AuthReason, DeviceCertificateRefused, KeyFileError, LoginFailed,
)
from gateway.identity.jwks import JwksCache, KeySet, KeySource, KeysUnavailable, StaticKeys, load_key_files
from gateway.identity.model import DeviceId, Identity, PostureSummary
from gateway.identity.oidc import OidcClient
from gateway.identity.session import SessionCodec, cookie_attributes, safe_return_path
from gateway.identity.tokens import ClaimNames, UnknownKeyId, VerifiedTokenCache, verify_token
from gateway.request import RequestHead, RequestLike
from gateway.metrics import Metrics
from gateway.web.pages import error_response, wants_html
from gateway.web.views.signin import SignInProblem, render_sign_in_problem

log = structlog.get_logger(__name__)
LOGIN_COOKIE = "gatehouse_login"
LOGOUT_COOKIE = "gatehouse_logout"
"""Keeps the provider's ID token for the logout hint; sent only to the logout path."""
_MEMO_MAX = 10_000
"""Entries kept per memo (encoded identity headers, signed assertions) before it starts over."""
_NO_EVIDENCE = DeviceEvidence()
"""What a request offers about its device when no configured source reads it."""
Clock = Callable[[], datetime]


class IdentityResolver:
    """Verified user and device for each request; built once per app from IdentitySettings."""

    def __init__(
        self,
        settings: IdentitySettings,
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        metrics: Metrics | None = None,
        request_id: Callable[[RequestLike], str | None] = lambda request: None,
    ) -> None:
        """Load every key file named in the settings; ``request_id`` reads a request's id for the error bodies.

        Raises:
            KeyFileError: a key file is unreadable or unusable.
        """
        self.settings = settings
        self._clock = clock
        self._request_id = request_id
        self._metrics = metrics
        self.revoked_at: RevokedAt | None = None
        """Revocations of Gatehouse-issued device certificates by fingerprint (the snapshot cache's, set by the app)."""
        self._token_keys: KeySource | None = None
        jwt_settings = settings.jwt
        if jwt_settings is not None:
            local = load_key_files(jwt_settings.key_files)
            if jwt_settings.hmac_secret is not None:
                local = KeySet(local.keys, jwt_settings.hmac_secret.reveal().encode())
            if jwt_settings.jwks_url is not None:
                self._token_keys = JwksCache(
                    jwt_settings.jwks_url, session, ttl_s=jwt_settings.jwks_cache_ttl_s,
                    unknown_kid_interval_s=jwt_settings.unknown_kid_refetch_interval_s,
                    timeout_s=jwt_settings.jwks_timeout_s, extra=local, metrics=metrics,
                )
            else:
                self._token_keys = StaticKeys(local)
            c = jwt_settings.claims
            self._claim_names = ClaimNames(c.subject, c.email, c.groups, c.device_serial)
        self._cache = VerifiedTokenCache(settings.token_cache_size, leeway_s=jwt_settings.leeway_s if jwt_settings else 0)
        self.codec: SessionCodec | None = None
        self.oidc: OidcClient | None = None
        if settings.oidc is not None:
            self.codec = SessionCodec(
                settings.oidc.session_key.reveal(), lifetime_s=settings.oidc.session_lifetime_s,
                login_timeout_s=settings.oidc.login_timeout_s,
            )
            self.oidc = OidcClient(settings.oidc, session, self.codec, metrics=metrics)
        dev = settings.device
        self._device_trust = DeviceTrust(
            sources=dev.sources,
            assertion_keys=load_key_files(dev.assertion.key_files) if dev.assertion else None,
            assertion_issuers=dev.assertion.issuers if dev.assertion else (),
            assertion_audience=dev.assertion.audience if dev.assertion else "gatehouse",
            assertion_max_lifetime_s=dev.assertion.max_lifetime_s if dev.assertion else 300,
            assertion_algorithms=dev.assertion.algorithms if dev.assertion else (),
            assertion_leeway_s=dev.assertion.leeway_s if dev.assertion else 30.0,
            assertion_max_bytes=dev.assertion.max_bytes if dev.assertion else 4096,
            header_trusted_from=dev.header.networks() if dev.header else (),
            certificate_times=dev.ca is not None,
        )
        self.signing_keys: SigningKeys | None = (
            load_signing_keys(settings.assertion.key_files) if settings.assertion is not None else None
        )
        names = {ASSERTION_HEADER.lower()}
        if dev.assertion is not None:
            names.add(dev.assertion.header.lower())
        if dev.header is not None:
            names.add(dev.header.name.lower())
        cookies = {LOGIN_COOKIE, LOGOUT_COOKIE}
        if settings.oidc is not None:
            cookies.add(settings.oidc.session_cookie)
        if not settings.forward_credentials:
            for source in settings.sources:
                if isinstance(source, BearerSource):
                    names.add("authorization")
                elif isinstance(source, HeaderSource):
                    names.add(source.name.lower())
                elif isinstance(source, CookieSource):
                    cookies.add(source.name)
        self.strip_names: frozenset[str] = frozenset(names)
        """Incoming header names to drop before forwarding (besides every `X-Gatehouse-*`, see should_strip);
        the user's credential headers too unless ``forward_credentials``."""
        self.drop_cookies: frozenset[str] = frozenset(cookies)
        """Cookies removed from the `Cookie` header sent upstream: Gatehouse's own, and token cookies unless ``forward_credentials``."""
        self._needs_peer = "mtls" in dev.sources or "header" in dev.sources
        self._evidence_free = not self._needs_peer and dev.assertion is None and dev.header is None
        """No configured device source reads the request itself (only ``claim``, or none): the device follows from the identity."""
        self._devices: dict[int, tuple[Identity | None, DeviceId | None]] = {}
        """With ``_evidence_free``: the device each identity object proves, by ``id`` (the object is kept and compared)."""
        self._max_token_bytes = jwt_settings.max_token_bytes if jwt_settings is not None and self._token_keys is not None else 0
        """The longest token ``_cached_jwt`` looks up; 0 without JWT settings (nothing is looked up)."""
        self._headers_memo: dict[tuple[str, str, tuple[str, ...], str | None], dict[str, str]] = {}
        self._assertions: dict[tuple[object, ...], tuple[str, datetime]] = {}

    def now(self) -> datetime:
        """The injected clock's current time."""
        return self._clock()

    # --- user ------------------------------------------------------------------------------------
    async def authenticate(self, request: RequestLike, *, now: datetime | None = None) -> Identity:
        """The verified user of this request.

        Raises:
            AuthenticationError: no credential or a bad one; `.login` tells whether to redirect a browser.
        """
        now = now or self._clock()
        try:
            for source in self.settings.sources:
                raw = self._credential(request, source)
                if raw is None:
                    continue
                if source.kind == "session":
                    if self.codec is None:  # prevented by IdentitySettings validation
                        raise AuthenticationError(AuthReason.INVALID)
                    return self.codec.decode_session(raw, now=now)
                cached = self._cached_jwt(raw, source.kind, now=now)  # no coroutine for the common case
                return cached if cached is not None else await self._verify_jwt(raw, source.kind, now=now)
            raise AuthenticationError(AuthReason.MISSING)
        except AuthenticationError as exc:
            exc.login = self.wants_login(request) and exc.reason is not AuthReason.KEYS_UNAVAILABLE
            if self._metrics is not None:
                self._metrics.auth_failures.labels(reason=exc.reason.value).inc()
            raise

    async def verify_user_token(self, raw: str, *, now: datetime) -> Identity:
        """The user of a JWT the ``identity.jwt`` settings accept, whatever ``identity.sources`` say (the enrollment API's bearer).

        Raises:
            AuthenticationError: no JWT settings, or the token is not valid.
        """
        return await self._verify_jwt(raw, "bearer", now=now)

    def identity_at_hand(self, request: RequestLike, *, now: datetime) -> Identity | None:
        """The verified user when it is known without I/O and without failing, else None.

        For the gate's decision from memory (``admit_now``): the first credential present (in the configured order, as ``authenticate``)
        decides; a session cookie is decoded and checked; a token counts only when the verified-token
        cache holds it. Nothing is counted or raised: None sends the request to ``authenticate``,
        which verifies, counts and answers failures.
        """
        for source in self.settings.sources:
            raw = self._credential(request, source)
            if raw is None:
                continue
            if source.kind == "session":
                if self.codec is None:
                    return None
                try:
                    return self.codec.decode_session(raw, now=now)
                except AuthenticationError:
                    return None
            return self._cached_jwt(raw, source.kind, now=now)
        return None

    async def verify_quietly(self, request: RequestLike, *, now: datetime) -> bool:
        """Verify the request's token and cache it, so that ``identity_at_hand`` knows it; False when it fails.

        For the proxy's first request with a new token (``FastGate.prepare``). Failures are neither counted nor
        raised: the request then goes to ``authenticate``, which answers and counts them.
        """
        for source in self.settings.sources:
            raw = self._credential(request, source)
            if raw is None:
                continue
            if source.kind == "session":
                return False  # sessions need no verification ahead: identity_at_hand decoded it, or it is bad
            try:
                await self._verify_jwt(raw, source.kind, now=now)
            except AuthenticationError:
                return False
            return True
        return False

    def _credential(self, request: RequestLike, source: UserSource) -> str | None:
        if source.kind == "bearer":
            values = request.headers.getall("Authorization", [])
            if not values:
                return None
            scheme, _, token = values[0].partition(" ")
            if scheme.lower() != "bearer":
                return None
            if len(values) > 1:
                return ""  # ambiguous: refused as invalid, never guessed at
            return token.strip()
        if source.kind == "header":
            values = request.headers.getall(source.name, [])
            return None if not values else (values[0].strip() if len(values) == 1 else "")
        if source.kind == "cookie":
            return request.cookies.get(source.name) or None
        if source.kind == "session" and self.settings.oidc is not None:
            return request.cookies.get(self.settings.oidc.session_cookie) or None
        return None

    def _cached_jwt(self, raw: str, kind: str, *, now: datetime) -> Identity | None:
        """The identity cached for this acceptable-looking token, else None (then ``_verify_jwt`` decides)."""
        if not raw or len(raw) > self._max_token_bytes:
            return None
        return self._cache.get(raw, scope="jwt", source=kind, now=now)  # type: ignore[arg-type]

    async def _verify_jwt(self, raw: str, kind: str, *, now: datetime) -> Identity:
        jwt_settings = self.settings.jwt
        if jwt_settings is None or self._token_keys is None:
            raise AuthenticationError(AuthReason.INVALID)
        if not raw:
            raise AuthenticationError(AuthReason.INVALID)
        if len(raw) > jwt_settings.max_token_bytes:
            raise AuthenticationError(AuthReason.TOO_LARGE)
        cached = self._cache.get(raw, scope="jwt", source=kind, now=now)  # type: ignore[arg-type]
        if cached is not None:
            return cached
        try:
            keys = await self._token_keys.current(now=now)
        except KeysUnavailable:
            raise AuthenticationError(AuthReason.KEYS_UNAVAILABLE) from None

        def verify(with_keys: KeySet) -> Identity:
            return verify_token(
                raw, with_keys, now=now, issuers=jwt_settings.issuers, audiences=jwt_settings.audiences,
                algorithms=jwt_settings.algorithms, leeway_s=jwt_settings.leeway_s, claim_names=self._claim_names,
                max_bytes=jwt_settings.max_token_bytes, source=kind,  # type: ignore[arg-type]
            )

        try:
            identity = verify(keys)
        except UnknownKeyId as exc:
            fresh = await self._token_keys.refresh_for_unknown_kid(exc.kid, now=now)
            if fresh is None:
                raise AuthenticationError(AuthReason.UNKNOWN_KEY) from None
            try:
                identity = verify(fresh)
            except UnknownKeyId:
                raise AuthenticationError(AuthReason.UNKNOWN_KEY) from None
        self._cache.put(raw, identity, scope="jwt", now=now)
        return identity

    def wants_login(self, request: RequestLike) -> bool:
        """True for a browser navigation that OpenID Connect login can serve."""
        if self.oidc is None or request.method not in ("GET", "HEAD"):
            return False
        return wants_html(request.headers.get("Accept", ""))

    # --- device ----------------------------------------------------------------------------------
    def device(
        self, request: RequestLike, identity: Identity | None, *, now: datetime | None = None, quiet: bool = False,
    ) -> DeviceId | None:
        """The verified hardware serial of the requesting device, or None (unknown device).

        ``quiet`` (``admit_now``) raises without logging or counting: the gate's ``admit``, which the
        request then takes, refuses it and does both. When no configured source reads the request
        (``claim`` only), the device is a function of the identity object: it is worked out once per
        identity (the verified-token cache gives one object per token) and remembered.

        Raises:
            AmbiguousDeviceCertificate: the client certificate names several serials (the caller answers 401).
            DeviceCertificateRefused: the client certificate is expired, not yet valid or revoked (the caller answers 403).
        """
        if self._evidence_free:
            held = self._devices.get(id(identity))
            if held is not None and held[0] is identity:
                return held[1]
            # INVARIANT: without a certificate, assertion or header, device_serial neither raises nor reads the clock.
            found = device_serial(_NO_EVIDENCE, identity, self._device_trust, now=now or self._clock(), revoked_at=self.revoked_at)
            if len(self._devices) >= _MEMO_MAX:
                self._devices.clear()
            self._devices[id(identity)] = (identity, found)
            return found
        try:
            return device_serial(self.evidence(request), identity, self._device_trust, now=now or self._clock(), revoked_at=self.revoked_at)
        except AmbiguousDeviceCertificate as exc:
            if not quiet:
                log.warning("device.certificate_refused", reason=exc.reason.value, serials=list(exc.names))
                if self._metrics is not None:
                    self._metrics.auth_failures.labels(reason=exc.reason.value).inc()
            raise
        except DeviceCertificateRefused as exc:
            if not quiet:
                log.warning("device.certificate_refused", reason=exc.reason.value, fingerprint=exc.fingerprint, at=exc.at.isoformat())
                if self._metrics is not None:
                    self._metrics.auth_failures.labels(reason=exc.reason.value).inc()
            raise

    def evidence(self, request: RequestLike) -> DeviceEvidence:
        """Read what the request offers about its device (nothing is trusted here).

        The TLS peer certificate and peer address are read only when a configured source (mtls,
        header) looks at them.
        """
        peercert = None
        fingerprint = None
        remote = None
        if self._needs_peer:
            if isinstance(request, RequestHead):  # the proxy read them once for the connection
                peercert, fingerprint, remote = request.peer.peercert, request.peer.fingerprint, request.peer.remote
            elif (transport := request.transport) is not None:
                ssl_object = transport.get_extra_info("ssl_object")
                if ssl_object is not None:
                    peercert = ssl_object.getpeercert() or None
                    der = ssl_object.getpeercert(binary_form=True) if peercert is not None else None
                    fingerprint = hashlib.sha256(der).hexdigest() if der else None
                peer = transport.get_extra_info("peername")
                if isinstance(peer, (tuple, list)) and peer:
                    remote = str(peer[0])
        dev = self.settings.device
        assertion = _single(request, dev.assertion.header) if dev.assertion else None
        header = _single(request, dev.header.name) if dev.header else None
        return DeviceEvidence(peercert=peercert, fingerprint=fingerprint, assertion=assertion, serial_header=header, remote=remote)

    # --- upstream --------------------------------------------------------------------------------
    def upstream_headers(
        self, identity: Identity, device: DeviceId | None, posture: PostureSummary | None, *, now: datetime | None = None
    ) -> dict[str, str]:
        """Identity headers and, when keys are configured, the signed `X-Gatehouse-Jwt-Assertion`.

        Raises:
            UnsafeHeaderValue: a value holds control characters.
        """
        key = (identity.subject, identity.email, identity.groups, device.serial if device is not None else None)
        encoded = self._headers_memo.get(key)
        if encoded is None:
            encoded = identity_headers(identity, device)
            if len(self._headers_memo) >= _MEMO_MAX:
                self._headers_memo.clear()
            self._headers_memo[key] = encoded
        headers = dict(encoded)
        if self.signing_keys is not None and self.settings.assertion is not None:
            headers[ASSERTION_HEADER] = self._assertion(
                identity, device, posture, self.signing_keys, self.settings.assertion, now=now or self._clock(),
            )
        return headers

    def _assertion(
        self, identity: Identity, device: DeviceId | None, posture: PostureSummary | None, keys: SigningKeys,
        a: UpstreamAssertionSettings, *, now: datetime,
    ) -> str:
        """The signed assertion for this user, device and decision, reused for half its lifetime.

        Signing ES256 costs far more than the rest of a request, so an assertion is signed once per
        user, device and decision (tier, verdict, failing checks, break-glass) and sent again until
        half its lifetime has passed: every assertion an upstream receives has at least half its
        lifetime left, and its ``posture.snapshot_age_s`` is the age when it was issued (``iat``).
        """
        key = (
            keys.signing_kid, identity.subject, identity.email, identity.groups, identity.issuer,
            None if device is None else (device.serial, device.source),
            None if posture is None else (posture.tier, posture.decision, posture.failed_checks, posture.break_glass),
        )
        held = self._assertions.get(key)
        if held is not None and timedelta(0) <= now - held[1] < timedelta(seconds=a.lifetime_s / 2):
            return held[0]
        token = sign_assertion(identity, device, posture, keys, now=now, issuer=a.issuer, audience=a.audience, lifetime_s=a.lifetime_s)
        if len(self._assertions) >= _MEMO_MAX:
            self._assertions.clear()
        self._assertions[key] = (token, now)
        return token

    def should_strip(self, name: str) -> bool:
        """True for an incoming header that only Gatehouse may set (`X-Gatehouse-*`, device headers)."""
        lowered = name.strip().lower()
        return lowered.startswith("x-gatehouse-") or lowered in self.strip_names

    def jwks_document(self) -> dict[str, list[dict[str, str]]]:
        """Published assertion keys (empty when no assertion keys are configured)."""
        return jwks_document(self.signing_keys) if self.signing_keys is not None else {"keys": []}

    # --- responses -------------------------------------------------------------------------------
    async def login_redirect(self, request: RequestLike, return_to: str | None, *, now: datetime | None = None) -> web.Response:
        """302 to the provider's login, with the login-state cookie set.

        Raises:
            AuthenticationError: OIDC not configured or the provider unreachable.
        """
        if self.oidc is None or self.codec is None:
            raise AuthenticationError(AuthReason.MISSING)
        now = now or self._clock()
        login, cookie = self.codec.new_login(return_to, now=now)
        url = await self.oidc.authorization_url(login, now=now)
        response = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        response.set_cookie(LOGIN_COOKIE, cookie, **cookie_attributes(  # type: ignore[arg-type]
            secure=request.secure, max_age=self.settings.oidc.login_timeout_s if self.settings.oidc else None))
        return response

    async def challenge(self, request: RequestLike, error: AuthenticationError) -> web.Response:
        """The response for a request without a verified user: login redirect for browsers, else the sign-in page or problem+json.

        A refused device certificate (revoked, expired) is not a sign-in problem: its 403 says what happened and how to enroll again.
        """
        if isinstance(error, DeviceCertificateRefused):
            return certificate_refused_response(request, error, origin=self.public_origin(request), request_id=self._request_id(request))
        if error.login and self.oidc is not None:
            try:
                return await self.login_redirect(request, request.raw_path)
            except AuthenticationError as exc:
                error = exc
        return unauthenticated_response(request, error, login_url=self.login_url(request.raw_path), request_id=self._request_id(request))

    def public_origin(self, request: RequestLike) -> str:
        """Gatehouse's public origin for instructions: the OIDC `external_url` when configured, else this request's."""
        if self.settings.oidc is not None:
            return self.settings.oidc.external_url
        return f"{request.scheme}://{request.host}"

    def login_url(self, return_to: str | None) -> str | None:
        """The address that starts a new login and comes back to ``return_to``; None without OIDC login."""
        if self.oidc is None:
            return None
        path = safe_return_path(return_to)
        return LOGIN_PATH if path == "/" else f"{LOGIN_PATH}?{urlencode({'return_to': path})}"


def check_identity_files(settings: IdentitySettings) -> tuple[Problem, ...]:
    """Every key-file problem in the identity settings, for `gatehouse check-config` (empty when all load)."""
    problems: list[Problem] = []
    groups: list[tuple[str, tuple[Path, ...], Callable[[tuple[Path, ...]], object]]] = []
    if settings.jwt is not None:
        groups.append(("identity.jwt.key_files", settings.jwt.key_files, load_key_files))
    if settings.device.assertion is not None:
        groups.append(("identity.device.assertion.key_files", settings.device.assertion.key_files, load_key_files))
    if settings.assertion is not None:
        groups.append(("identity.assertion.key_files", settings.assertion.key_files, load_signing_keys))
    for where, paths, load in groups:
        for index, path in enumerate(paths):
            try:
                load((path,) if load is load_key_files or index == 0 else (paths[0], path))
            except KeyFileError as exc:
                problems.append(Problem(f"{where}[{index}]", str(exc)))
    return tuple(problems)


def _single(request: RequestLike, name: str) -> str | None:
    """The header's value if it appears exactly once; repeated evidence is ignored rather than guessed at."""
    values = request.headers.getall(name, [])
    return values[0] if len(values) == 1 else None


def unauthenticated_response(
    request: RequestLike, error: AuthenticationError, *, login_url: str | None, provider_error: str | None = None,
    request_id: str | None = None,
) -> web.Response:
    """The 401 (or 503 when the provider or its keys are unreachable): a sign-in page or problem+json.

    The reason shown is a closed-set code (``AuthReason.public``, or the LoginFailure of a failed
    login) and never leaks details; 401s carry `WWW-Authenticate`, 503s `Retry-After`.
    """
    if isinstance(error, LoginFailed):
        reason, code = error.failure.value, "login-failed"
    else:
        reason, code = error.reason.public, "unauthenticated"
    if error.status == 503:
        code = "identity-unavailable"
        headers = {"Retry-After": "5"}
    else:
        challenge = 'Bearer realm="gatehouse"'
        if error.reason is AuthReason.DEVICE_CERTIFICATE_AMBIGUOUS:
            challenge += f', error_description="{error.reason.public}"'  # the token was fine; the client certificate was not
        elif error.reason is not AuthReason.MISSING:
            challenge += f', error="invalid_token", error_description="{error.reason.public}"'
        headers = {"WWW-Authenticate": challenge}
    problem = SignInProblem(
        status=error.status, code=code, reason=reason, login_url=login_url,
        request_id=request_id, provider_error=provider_error,
    )
    return render_sign_in_problem(problem, accept=request.headers.get("Accept", ""), extra=headers).response()


def certificate_refused_response(
    request: RequestLike, error: DeviceCertificateRefused, *, origin: str, request_id: str | None = None,
) -> web.Response:
    """The 403 for a revoked or expired device certificate: when, and the one command that enrolls this laptop again."""
    when = error.at.strftime("%Y-%m-%d %H:%M UTC")
    command = f"gatehouse-enroll {origin}"
    if error.reason is AuthReason.DEVICE_CERTIFICATE_REVOKED:
        detail = (f"This laptop's device certificate was revoked on {when}, so it no longer proves which device you use. "
                  f"If you still use this laptop for work, enroll it again by running `{command}` and confirming the code "
                  "in your browser; if you did not expect this, ask your IT team why it was revoked.")
    else:
        detail = (f"This laptop's device certificate is not valid now (its validity ended or begins {when}); renewal runs daily "
                  f"on the laptop, so it may have been switched off or offline. Enroll it again by running `{command}` "
                  "and confirming the code in your browser, then reload this page.")
    return error_response(
        request.headers.get("Accept", ""), status=403, code=error.reason.value, detail=detail, request_id=request_id,
        extra={"at": error.at.isoformat(), "enroll_command": command},
    )

