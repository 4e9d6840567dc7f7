"""Thin aiohttp handlers for the identity endpoints; each reads the request and calls the resolver.

Owns: add_identity_routes and the handlers of /.gatehouse/login, /.gatehouse/callback,
/.gatehouse/logout and /.well-known/gatehouse/jwks.json.
Must not import: gate, policy_engine, breakglass.
"""

from __future__ import annotations

from aiohttp import web

from gateway.identity.config import CALLBACK_PATH, JWKS_PATH, LOGIN_PATH, LOGOUT_PATH
from gateway.identity.errors import AuthenticationError, AuthReason
from gateway.identity.resolver import LOGIN_COOKIE, unauthenticated_response
from gateway.identity.session import cookie_attributes
from gateway.keys import IDENTITY

_MAX_CODE = 2048


def add_identity_routes(app: web.Application) -> None:
    """Register login, callback, logout and the published assertion JWKS; needs ``app[IDENTITY]`` at startup."""
    app.router.add_get(LOGIN_PATH, handle_login)
    app.router.add_get(CALLBACK_PATH, handle_callback)
    app.router.add_route("GET", LOGOUT_PATH, handle_logout)
    app.router.add_route("POST", LOGOUT_PATH, handle_logout)
    app.router.add_get(JWKS_PATH, handle_jwks)


async def handle_login(request: web.Request) -> web.StreamResponse:
    """Start a login explicitly: `/.gatehouse/login?return_to=/path`."""
    resolver = request.app[IDENTITY]
    if resolver.oidc is None:
        raise web.HTTPNotFound()
    try:
        return await resolver.login_redirect(request, request.query.get("return_to"))
    except AuthenticationError as exc:
        return unauthenticated_response(exc)


async def handle_callback(request: web.Request) -> web.StreamResponse:
    """The provider's redirect back: check state, exchange the code, set the session, go back."""
    resolver = request.app[IDENTITY]
    if resolver.oidc is None or resolver.codec is None or resolver.settings.oidc is None:
        raise web.HTTPNotFound()
    code = request.query.get("code")
    now = resolver.now()
    try:
        if request.query.get("error") or not code or len(code) > _MAX_CODE:
            raise AuthenticationError(AuthReason.LOGIN_FAILED)
        login = resolver.codec.check_login(request.cookies.get(LOGIN_COOKIE), request.query.get("state"), now=now)
        identity = await resolver.oidc.finish_login(
            login, code, origin=resolver.origin(request), now=now, issuer=request.query.get("iss"),
        )
        session = resolver.codec.encode_session(identity, now=now)
    except (AuthenticationError, ValueError) as exc:
        reason = exc if isinstance(exc, AuthenticationError) else AuthenticationError(AuthReason.LOGIN_FAILED)
        response = unauthenticated_response(reason)
        response.del_cookie(LOGIN_COOKIE, path="/")
        return response
    response = web.Response(status=303, headers={"Location": login.return_to, "Cache-Control": "no-store"})
    response.set_cookie(
        resolver.settings.oidc.session_cookie, session,
        **cookie_attributes(secure=request.secure, max_age=resolver.codec.lifetime_s),  # type: ignore[arg-type]
    )
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def handle_logout(request: web.Request) -> web.StreamResponse:
    """Forget the session cookie."""
    resolver = request.app[IDENTITY]
    response = web.Response(text="signed out\n", content_type="text/plain", headers={"Cache-Control": "no-store"})
    if resolver.settings.oidc is not None:
        response.del_cookie(resolver.settings.oidc.session_cookie, path="/")
    return response


async def handle_jwks(request: web.Request) -> web.StreamResponse:
    """Gatehouse's assertion verification keys (current and still-published older ones)."""
    document = request.app[IDENTITY].jwks_document()
    return web.json_response(document, headers={"Cache-Control": "public, max-age=300"})
