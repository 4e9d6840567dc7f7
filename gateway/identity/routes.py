"""Thin aiohttp handlers for the identity endpoints; each reads the request and calls the resolver.

Owns: identity_cleanup_ctx (builds ``app[IDENTITY]``), add_identity_routes and the handlers of /.gatehouse/login, /.gatehouse/callback,
/.gatehouse/logout, /.gatehouse/signed-out and /.well-known/gatehouse/jwks.json.
Must not import: gate, policy_engine, breakglass.

A login that fails (cancelled at the provider, an old or replayed callback, the provider refusing
the code or unreachable) answers with ``unauthenticated_response``: a page that says what happened
and offers "Sign in again" to browsers, problem+json to API clients. Logout drops Gatehouse's
cookies and, for browsers, when the provider advertises `end_session_endpoint`, sends the browser
there (RP-initiated logout with `id_token_hint` and `post_logout_redirect_uri`) so that the
provider's session ends too; the provider sends it back to /.gatehouse/signed-out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import structlog
from aiohttp import web

from gateway.config.identity import CALLBACK_PATH, JWKS_PATH, LOGIN_PATH, LOGOUT_PATH, SIGNED_OUT_PATH, IdentitySettings
from gateway.identity.errors import AuthenticationError, LoginFailed, LoginFailure
from gateway.identity.resolver import LOGIN_COOKIE, LOGOUT_COOKIE, Clock, IdentityResolver, unauthenticated_response
from gateway.identity.session import cookie_attributes
from gateway.keys import IDENTITY, REQUEST_ID
from gateway.metrics import Metrics
from gateway.request import RequestLike
from gateway.web.pages import wants_html
from gateway.web.views.signin import render_signed_out

log = structlog.get_logger(__name__)
_MAX_CODE = 2048


def add_identity_routes(app: web.Application) -> None:
    """Register login, callback, logout and the published assertion JWKS; needs ``app[IDENTITY]`` at startup."""
    app.router.add_get(LOGIN_PATH, handle_login)
    app.router.add_get(CALLBACK_PATH, handle_callback)
    app.router.add_route("GET", LOGOUT_PATH, handle_logout)
    app.router.add_route("POST", LOGOUT_PATH, handle_logout)
    app.router.add_get(SIGNED_OUT_PATH, handle_signed_out)
    app.router.add_get(JWKS_PATH, handle_jwks)


async def handle_login(request: web.Request) -> web.StreamResponse:
    """Start a login explicitly: `/.gatehouse/login?return_to=/path`."""
    resolver = request.app[IDENTITY]
    if resolver.oidc is None:
        raise web.HTTPNotFound()
    return_to = request.query.get("return_to")
    try:
        return await resolver.login_redirect(request, return_to)
    except AuthenticationError as exc:
        return unauthenticated_response(request, exc, login_url=resolver.login_url(return_to), request_id=request.get(REQUEST_ID))


async def handle_callback(request: web.Request) -> web.StreamResponse:
    """The provider's redirect back: check state, exchange the code, set the session, go back."""
    resolver = request.app[IDENTITY]
    if resolver.oidc is None or resolver.codec is None or resolver.settings.oidc is None:
        raise web.HTTPNotFound()
    query = request.query
    now = resolver.now()
    try:
        login = resolver.codec.check_login(request.cookies.get(LOGIN_COOKIE), query.get("state"), now=now)
    except AuthenticationError:
        login = None  # no login of this browser's in progress: an old, replayed or forged callback
    provider_error = query.get("error")
    try:
        if provider_error is not None:
            raise LoginFailed(LoginFailure.CANCELLED if provider_error == "access_denied" else LoginFailure.PROVIDER_ERROR)
        code = query.get("code")
        if login is None or not code or len(code) > _MAX_CODE:
            raise LoginFailed(LoginFailure.STALE)
        identity, id_token = await resolver.oidc.finish_login(login, code, now=now, issuer=query.get("iss"))
        try:
            session = resolver.codec.encode_session(identity, now=now)
        except ValueError:
            raise LoginFailed(LoginFailure.UNVERIFIED) from None
    except LoginFailed as exc:
        log.info("login.failed", failure=exc.failure.value)
        response = unauthenticated_response(
            request, exc, login_url=resolver.login_url(login.return_to if login is not None else None),
            provider_error=provider_error if exc.failure is LoginFailure.PROVIDER_ERROR else None, request_id=request.get(REQUEST_ID),
        )
        response.del_cookie(LOGIN_COOKIE, path="/")
        return response
    response = web.Response(status=303, headers={"Location": login.return_to, "Cache-Control": "no-store"})
    lifetime = resolver.codec.lifetime_s
    response.set_cookie(
        resolver.settings.oidc.session_cookie, session,
        **cookie_attributes(secure=request.secure, max_age=lifetime),  # type: ignore[arg-type]
    )
    hint = resolver.codec.encode_logout_hint(id_token, now=now)
    if hint is not None:
        response.set_cookie(LOGOUT_COOKIE, hint, **cookie_attributes(  # type: ignore[arg-type]
            secure=request.secure, max_age=lifetime, path=LOGOUT_PATH))
    else:  # too large for a cookie: logout then names the client only, and the provider asks the user
        response.del_cookie(LOGOUT_COOKIE, path=LOGOUT_PATH)
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def handle_logout(request: web.Request) -> web.StreamResponse:
    """Forget Gatehouse's session and, for browsers, end the provider's session too when it offers RP-initiated logout."""
    resolver = request.app[IDENTITY]
    accept = request.headers.get("Accept", "")
    end_session = None
    if resolver.oidc is not None and resolver.codec is not None and wants_html(accept):
        hint = resolver.codec.logout_hint(request.cookies.get(LOGOUT_COOKIE))
        try:
            end_session = await resolver.oidc.end_session_url(id_token_hint=hint, now=resolver.now())
        except AuthenticationError:
            log.warning("logout.provider_unreachable")
    if end_session is not None:
        response: web.Response = web.Response(status=303, headers={"Location": end_session, "Cache-Control": "no-store"})
    else:
        response = render_signed_out(login_url=resolver.login_url(None), provider_ended=False, accept=accept).response()
    _forget_session(resolver, response)
    return response


async def handle_signed_out(request: web.Request) -> web.StreamResponse:
    """Where the provider sends the browser after ending its session (the `post_logout_redirect_uri`)."""
    resolver = request.app[IDENTITY]
    if resolver.oidc is None:
        raise web.HTTPNotFound()
    accept = request.headers.get("Accept", "")
    return render_signed_out(login_url=resolver.login_url(None), provider_ended=True, accept=accept).response()


def _forget_session(resolver: IdentityResolver, response: web.Response) -> None:
    if resolver.settings.oidc is not None:
        response.del_cookie(resolver.settings.oidc.session_cookie, path="/")
    response.del_cookie(LOGOUT_COOKIE, path=LOGOUT_PATH)


async def handle_jwks(request: web.Request) -> web.StreamResponse:
    """Gatehouse's assertion verification keys (current and still-published older ones)."""
    document = request.app[IDENTITY].jwks_document()
    return web.json_response(document, headers={"Cache-Control": "public, max-age=300"})


def _request_id(request: RequestLike) -> str | None:
    return request.get(REQUEST_ID)


def identity_cleanup_ctx(
    settings: IdentitySettings, *, clock: Clock, metrics: Metrics | None = None, session: aiohttp.ClientSession | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that builds the IdentityResolver at startup as ``app[IDENTITY]`` (own IdP session unless given)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        own = session is None
        client = session or aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        try:
            app[IDENTITY] = IdentityResolver(settings, session=client, clock=clock, metrics=metrics, request_id=_request_id)
            yield
        finally:
            if own:
                await client.close()

    return ctx
