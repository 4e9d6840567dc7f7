"""The laptop enrollment API and pages: sign-in by one-time code, enrollment requests, the osquery proof, approvals.

Owns: add_enroll_routes (with an EnrollRuntime: gateway.web.enroll_limits), the handlers of
``/.gatehouse/api/v1/enroll/sessions``, ``/.gatehouse/enroll/confirm``, ``/.gatehouse/api/v1/enrollments``
(and its ``/renew``) and ``/.gatehouse/admin/enrollments``, the answer handler for the reserved osquery proof
query, and issuing (certificate recorded before it is handed out, owner binding, log, count).

Renewal (``POST …/enrollments/renew``) is authenticated by the TLS client certificate alone: it must be
one of Gatehouse's own (its fingerprint recorded), unexpired and unrevoked, checked by the same
``certificate_refusal`` the `mtls` device source uses; the new certificate names the recorded serial
and owner, whatever the CSR says, and is recorded like a first one. The old one stays valid until it expires.
Must not import: gateway.app (app.py calls add_enroll_routes). Rendering lives in gateway.web.views.enrollments;
the rules and states in gateway.identity.enrollment.

Needs on the app: STORE, SNAPSHOT_CACHE, CLOCK, CONFIG, IDENTITY, CSRF, BREAKGLASS_WEB (approver
groups), and ``DEVICE_CA`` (the device CA); without ``DEVICE_CA`` every enrollment endpoint answers
404 ``enrollment-disabled``. ``reserved_identity`` verifies the user of the confirm and admin pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import orjson
import structlog
from aiohttp import ChainMapProxy, web

from gateway.web.csrf import CsrfRefused, check_form
from gateway.identity import enrollment as flow
from gateway.web.enroll_limits import SESSION_LIMIT, SESSION_WINDOW, EnrollRuntime
from gateway.identity.device import certificate_refusal
from gateway.identity.errors import AuthenticationError
from gateway.identity.model import Identity
from gateway.keys import (
    BREAKGLASS_WEB, CLOCK, CONFIG, CSRF, DEVICE_CA, ENROLL_RUNTIME, IDENTITY, METRICS, OSQUERY_ANSWERS, REQUEST_ID,
    SNAPSHOT_CACHE, STORE, USER,
)
from gateway.store.base import (
    CertificateRecord, Enrollment, EnrollmentRequest, EnrollmentStatus, EnrollSession, OwnerEdit, OwnerEditMode, OwnerSource, PendingQuery,
    StoreError,
)
from gateway.web.views import enrollments as views
from gateway.web.problem import FieldError, problem_response

_log = structlog.get_logger("gateway.enroll")

SESSIONS_PATH = "/.gatehouse/api/v1/enroll/sessions"
CONFIRM_PATH = "/.gatehouse/enroll/confirm"
ENROLLMENTS_PATH = "/.gatehouse/api/v1/enrollments"
RENEW_PATH = ENROLLMENTS_PATH + "/renew"
ADMIN_PATH = views.ADMIN_PATH
MAX_BODY_BYTES = 64 * 1024
def add_enroll_routes(app: web.Application) -> None:
    """Mount the enrollment API, the confirm page and the approvals page; route the proof query's answers here."""
    app[ENROLL_RUNTIME] = EnrollRuntime()
    r = app.router
    r.add_post(SESSIONS_PATH, create_session)
    r.add_post(SESSIONS_PATH + "/{session}/token", session_token)
    r.add_get(CONFIRM_PATH, confirm_page)
    r.add_post(CONFIRM_PATH, confirm_submit)
    r.add_post(ENROLLMENTS_PATH, create_enrollment)
    r.add_get(ENROLLMENTS_PATH + "/{id}", enrollment_status)
    r.add_post(RENEW_PATH, renew_certificate)
    r.add_get(ADMIN_PATH, admin_list)
    r.add_post(ADMIN_PATH + "/{id}/{action}", admin_action)
    answers = app.setdefault(OSQUERY_ANSWERS, {})
    answers[flow.ENROLL_QUERY_PREFIX] = proof_answer


# -- responses -------------------------------------------------------------------------------------

def _json(status: int, doc: Mapping[str, object]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _problem(request: web.Request, status: int, code: str, detail: str, *, errors: Sequence[FieldError] = (),
             headers: Mapping[str, str] | None = None) -> web.Response:
    return problem_response(status, code, detail, request_id=request.get(REQUEST_ID), errors=errors, headers=headers)


def _disabled(request: web.Request) -> web.Response:
    return _problem(request, 404, "enrollment-disabled",
                    "laptop enrollment is not enabled on this Gatehouse; its operator configures `identity.device.ca`")


def _now(request: web.Request) -> datetime:
    return request.config_dict[CLOCK]()


def _metric(request: web.Request | web.Application | ChainMapProxy, outcome: str) -> None:
    app = request.config_dict if isinstance(request, web.Request) else request
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.device_enrollments.labels(outcome=outcome).inc()


def _public_origin(request: web.Request) -> str:
    identity = request.config_dict[CONFIG].current.settings.identity
    oidc = identity.oidc if identity is not None else None
    if oidc is not None and oidc.external_url:
        return str(oidc.external_url).rstrip("/")
    return f"{request.scheme}://{request.host}"


def _home_roots(request: web.Request) -> tuple[str, ...]:
    identity = request.config_dict[CONFIG].current.settings.identity
    ca = identity.device.ca if identity is not None else None
    return ca.home_roots if ca is not None else ()


async def _json_body(request: web.Request) -> dict[str, object] | web.Response:
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _problem(request, 413, "body-too-large", f"the body is larger than {MAX_BODY_BYTES} bytes; send the CSR alone")
    try:
        doc = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        return _problem(request, 400, "bad-json", f"the body is not JSON ({exc}); send a JSON object")
    if not isinstance(doc, dict):
        return _problem(request, 400, "bad-json", "the body is not a JSON object; send a JSON object")
    return doc


def _store_down(request: web.Request, exc: StoreError) -> web.Response:
    _log.error("enrollment.store_failed", error=str(exc))
    return _problem(request, 503, "store-unavailable", "Gatehouse cannot reach its store; try again in a minute")


# -- sign-in by one-time code ----------------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    """``POST /.gatehouse/api/v1/enroll/sessions``: a session and the code its user confirms in a browser."""
    app = request.config_dict
    if DEVICE_CA not in app:
        return _disabled(request)
    now = _now(request)
    wait = app[ENROLL_RUNTIME].allow(request.remote or "", now=now)
    if wait is not None:
        _log.warning("enrollment.session_rate_limited", address=request.remote)
        return _problem(request, 429, "rate-limited",
                        f"this address started {SESSION_LIMIT} enrollment sign-ins in the last "
                        f"{int(SESSION_WINDOW.total_seconds() // 60)} minutes; try again in {wait} s",
                        headers={"Retry-After": str(wait)})
    session_id = flow.new_session_id()
    try:
        for _attempt in range(3):  # a user code already in use (1 in 20^8) is drawn again
            code = flow.new_user_code()
            if await app[STORE].enroll_session_by_code(code) is None:
                break
        session = flow.new_session(session_id, code, now=now)
        await app[STORE].create_enroll_session(session)
    except StoreError as exc:
        return _store_down(request, exc)
    _log.info("enrollment.session_started", address=request.remote)
    return _json(201, {
        "session": session_id, "user_code": code,
        "verification_uri": f"{_public_origin(request)}{CONFIRM_PATH}?code={code}",
        "expires_in": int(flow.SESSION_TTL.total_seconds()), "interval": flow.POLL_INTERVAL_S,
    })


async def session_token(request: web.Request) -> web.Response:
    """``POST …/sessions/{session}/token``: 428 until confirmed, then the enrollment token."""
    app = request.config_dict
    if DEVICE_CA not in app:
        return _disabled(request)
    now = _now(request)
    try:
        session = await app[STORE].enroll_session(flow.digest(request.match_info["session"]))
        if session is None:
            return _problem(request, 404, "enroll-session-unknown", "no such enrollment sign-in; run the enrollment program again")
        if session.enrollment_id:
            return _problem(request, 410, "enroll-session-used", "this sign-in already enrolled a laptop; run the enrollment program again")
        if now >= session.expires_at:
            return _problem(request, 410, "enroll-session-expired",
                            "the code was not confirmed in time; run the enrollment program again")
        if not session.user:
            return _json(428, {"status": "pending"})
        token = f"{flow.TOKEN_PREFIX}{session.session_hash}.{flow.new_enrollment_token()[len(flow.TOKEN_PREFIX):]}"
        if not await app[STORE].swap_enroll_session(session, flow.with_token(session, token, now=now)):
            return _json(428, {"status": "pending"})
    except StoreError as exc:
        return _store_down(request, exc)
    return _json(200, {"enrollment_token": token, "user": session.user, "expires_in": int(flow.TOKEN_TTL.total_seconds())})


async def _session_for_code(request: web.Request, code: str) -> tuple[EnrollSession | None, str]:
    """The pending session of a code, or None and why not (for the page)."""
    normal = flow.normalise_user_code(code)
    session = await request.config_dict[STORE].enroll_session_by_code(normal) if normal else None
    if session is None:
        return None, "No enrollment is waiting for this code. Check the code in your terminal, or run the enrollment program again."
    if _now(request) >= session.expires_at or session.enrollment_id:
        return None, "This code has expired. Run the enrollment program again to get a new one."
    if session.user:
        return None, f"This code was already confirmed for {session.user}. Go back to the terminal."
    return session, ""


async def confirm_page(request: web.Request) -> web.Response:
    """``GET /.gatehouse/enroll/confirm?code=…``: ask the signed-in user to confirm the code they just saw."""
    app = request.config_dict
    if DEVICE_CA not in app:
        return _disabled(request)
    identity: Identity = request[USER]
    code = request.query.get("code", "")
    try:
        session, why = await _session_for_code(request, code)
    except StoreError as exc:
        return _store_down(request, exc)
    if session is None:
        return views.render_message(404, "Code not found", why).response()
    token = app[CSRF].issue(identity.subject, now=_now(request))
    return views.render_confirm(views.ConfirmView(user=identity.email, code=session.user_code, csrf_token=token)).response()


async def confirm_submit(request: web.Request) -> web.Response:
    """``POST /.gatehouse/enroll/confirm``: bind the code's session to the signed-in user."""
    app = request.config_dict
    if DEVICE_CA not in app:
        return _disabled(request)
    identity: Identity = request[USER]
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    now = _now(request)
    try:
        check_form(app[CSRF], form, request.headers, host=request.headers.get("Host", request.host),
                   subject=identity.subject, now=now)
    except CsrfRefused as exc:
        _log.warning("enrollment.csrf_refused", user=identity.email, code=exc.code)
        return views.render_message(403, "Not accepted", str(exc)).response()
    try:
        session, why = await _session_for_code(request, form.get("code", ""))
        if session is None:
            return views.render_message(404, "Code not found", why).response()
        if not await app[STORE].swap_enroll_session(session, flow.confirmed(session, identity.email, now=now)):
            return views.render_message(409, "Code already used", "This code changed while you confirmed it. Run the enrollment program again.").response()
    except StoreError as exc:
        return _store_down(request, exc)
    _log.info("enrollment.session_confirmed", user=identity.email)
    return views.render_message(200, "Done", "Done, go back to the terminal: the enrollment program continues by itself.",
                                kind="ok").response()


# -- enrollments -----------------------------------------------------------------------------------


async def _bearer(request: web.Request, *, polling: bool = False) -> tuple[str, EnrollSession | None] | web.Response:
    """The enrolling user and, for an enrollment token, its session; a 401 problem otherwise.

    A used token keeps working for ``polling`` its own enrollment after its ten minutes (the request's
    own expiry ends that); it never creates another one.
    """
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    raw = raw.strip()
    refused = _problem(request, 401, "not-signed-in",
                       "send `Authorization: Bearer <enrollment token or user token>`; run the enrollment program to sign in")
    refused.headers["WWW-Authenticate"] = 'Bearer realm="gatehouse-enroll"'
    if scheme.lower() != "bearer" or not raw:
        return refused
    now = _now(request)
    if raw.startswith(flow.TOKEN_PREFIX):
        session_hash = raw[len(flow.TOKEN_PREFIX):].partition(".")[0]
        session = await request.config_dict[STORE].enroll_session(session_hash)
        if session is None or not flow.same_digest(raw, session.token_hash) or session.token_expires_at is None:
            return refused
        if now >= session.token_expires_at and not (polling and session.enrollment_id):
            return refused
        return session.user, session
    try:
        identity = await request.config_dict[IDENTITY].verify_user_token(raw, now=now)
    except AuthenticationError:
        return refused
    return identity.email, None


async def create_enrollment(request: web.Request) -> web.Response:
    """``POST /.gatehouse/api/v1/enrollments``: check the request, choose its proof, queue the osquery query."""
    app = request.config_dict
    if DEVICE_CA not in app:
        return _disabled(request)
    store, now = app[STORE], _now(request)
    try:
        who = await _bearer(request)
        if isinstance(who, web.Response):
            return who
        user, session = who
        if session is not None and session.enrollment_id:
            return _problem(request, 409, "enroll-token-used",
                            f"this enrollment token already created `{session.enrollment_id}`; run the enrollment program again")
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        try:
            entered = flow.validate_enrollment(body, home_roots=_home_roots(request))
        except flow.EnrollmentInvalid as exc:
            _log.info("enrollment.invalid", user=user, code=exc.code)
            return _problem(request, 400, exc.code, str(exc), errors=[FieldError(p.field, p.problem, p.expected, code=p.code) for p in exc.problems])
        request_id = flow.new_enrollment_id()
        if session is not None and not await store.swap_enroll_session(session, replace(session, enrollment_id=request_id)):
            return _problem(request, 409, "enroll-token-used", "this enrollment token was just used; run the enrollment program again")
        record = await store.owners(entered.serial)
        nodes = await store.active_enrollments(entered.serial)
        nonce = flow.new_nonce()
        created = flow.new_request(entered, request_id=request_id, user=user, nonce=nonce,
                                   owners=record.owners if record is not None else (), has_osquery=bool(nodes), now=now)
        await store.create_enrollment_request(created)
        if created.proof == flow.PROOF_OSQUERY:
            await _queue_proof(app, created, attempt=0, now=now)
    except StoreError as exc:
        return _store_down(request, exc)
    _log.info("enrollment.created", id=created.id, user=user, serial=created.serial, proof=created.proof,
              flags=list(created.flags))
    _metric(request, "created")
    if created.flags:
        _log.warning("enrollment.flagged", id=created.id, user=user, serial=created.serial, flags=list(created.flags))
    return _json(201, {
        "id": created.id, "status": created.status.value, "proof": created.proof, "nonce": nonce,
        "poll": f"{ENROLLMENTS_PATH}/{created.id}", "interval": flow.POLL_INTERVAL_S,
        "expires_in": int(flow.REQUEST_TTL.total_seconds()),
    })


async def _queue_proof(app: web.Application | ChainMapProxy, enrollment: EnrollmentRequest, *, attempt: int, now: datetime) -> None:
    name = flow.proof_query_name(enrollment.id)
    query_id = name if attempt == 0 else f"{name}-{attempt}"
    await app[STORE].add_pending_queries([
        PendingQuery(query_id=query_id, serial=enrollment.serial, query_name=name, sql=flow.proof_sql(enrollment.nonce_path), created_at=now),
    ])


async def _current(app: web.Application | ChainMapProxy, request_id: str, *, now: datetime) -> EnrollmentRequest | None:
    """The request, moved to ``expired`` first when its time ran out."""
    store = app[STORE]
    found = await store.enrollment_request(request_id)
    if found is not None and flow.due_to_expire(found, now=now):
        gone = flow.expired(found, now=now)
        if await store.swap_enrollment_request(found, gone):
            _log.info("enrollment.expired", id=found.id, user=found.user, serial=found.serial)
            _metric(app, "expired")
            return gone
        return await store.enrollment_request(request_id)
    return found


def _view(enrollment: EnrollmentRequest) -> dict[str, object]:
    doc: dict[str, object] = {"id": enrollment.id, "status": enrollment.status.value}
    if enrollment.reason:
        doc["reason"] = enrollment.reason
    if enrollment.detail and enrollment.status is not EnrollmentStatus.PENDING_APPROVAL:
        doc["detail"] = enrollment.detail
    if enrollment.status is EnrollmentStatus.PENDING_APPROVAL:
        doc["detail"] = "an approver must confirm this laptop in the admin pages; keep this program running"
    if enrollment.status is EnrollmentStatus.ISSUED and enrollment.not_after is not None:
        doc["certificate"] = enrollment.certificate
        doc["not_after"] = enrollment.not_after.isoformat().replace("+00:00", "Z")
    return doc


async def enrollment_status(request: web.Request) -> web.Response:
    """``GET /.gatehouse/api/v1/enrollments/{id}``: where the request stands; the certificate once issued."""
    app = request.config_dict
    if DEVICE_CA not in app:
        return _disabled(request)
    request_id = request.match_info["id"]
    try:
        who = await _bearer(request, polling=True)
        if isinstance(who, web.Response):
            return who
        user, session = who
        found = await _current(app, request_id, now=_now(request))
    except StoreError as exc:
        return _store_down(request, exc)
    mine = found is not None and (session.enrollment_id == found.id if session is not None else found.user == user)
    if found is None or not mine:
        return _problem(request, 404, "enrollment-unknown", f"no enrollment `{request_id[:40]}` of yours; run the enrollment program again")
    return _json(200, _view(found))


# -- renewal ---------------------------------------------------------------------------------------


async def renew_certificate(request: web.Request) -> web.Response:
    """``POST …/enrollments/renew`` over mTLS: a new certificate for the serial and owner of the one presented."""
    app = request.config_dict
    if DEVICE_CA not in app:
        return _disabled(request)
    now, cache = _now(request), app[SNAPSHOT_CACHE]
    evidence = app[IDENTITY].evidence(request)
    enroll_again = f"enroll this laptop again with `gatehouse-enroll {_public_origin(request)}`"
    if not evidence.peercert or evidence.fingerprint is None:
        _metric(request, "renew-refused")
        return _problem(request, 401, "device-certificate-required",
                        f"no device certificate was presented over TLS; renewal needs this laptop's current one, or {enroll_again}")
    try:
        record = cache.certificate(evidence.fingerprint)
        if record is None:  # issued through another replica a moment ago
            await cache.refresh_certificates()
            record = cache.certificate(evidence.fingerprint)
    except StoreError as exc:
        return _store_down(request, exc)
    refusal = certificate_refusal(evidence, now=now, revoked_at=cache.revoked_at, check_times=True)
    if record is None or refusal is not None:
        code = refusal.reason.value if refusal is not None else "device-certificate-unknown"
        if refusal is None:
            why = "the certificate presented is not one this Gatehouse's device CA issued"
        elif code == "device-certificate-revoked":
            why = f"the device certificate was revoked on {refusal.at:%Y-%m-%d %H:%M} UTC"
        elif refusal.at <= now:
            why = f"the device certificate expired on {refusal.at:%Y-%m-%d %H:%M} UTC"
        else:
            why = f"the device certificate is not valid before {refusal.at:%Y-%m-%d %H:%M} UTC"
        _log.warning("enrollment.renew_refused", reason=code, fingerprint=evidence.fingerprint,
                     user=record.owner if record is not None else None, serial=record.serial if record is not None else None)
        _metric(request, "renew-refused")
        return _problem(request, 403, code, f"{why}; {enroll_again}")
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    csr = body.get("csr")
    if not isinstance(csr, str):
        return _problem(request, 400, "csr-invalid", "expected `{\"csr\": \"<PEM certificate signing request>\"}`")
    try:
        certificate = app[DEVICE_CA].issue(csr.encode(), serial=record.serial, owner=record.owner, now=now)
    except ValueError as exc:
        return _problem(request, 400, "csr-invalid", f"the device CA refused the CSR: {exc}")
    try:
        await app[STORE].record_certificate(_record(certificate, serial=record.serial, owner=record.owner, now=now))
        await cache.refresh_certificates()
    except StoreError as exc:
        return _store_down(request, exc)
    _log.info("enrollment.renewed", user=record.owner, serial=record.serial, fingerprint=certificate.fingerprint,
              previous=record.fingerprint, not_after=certificate.not_after.isoformat())
    _metric(request, "renewed")
    return _json(200, {"certificate": certificate.pem_chain, "not_after": certificate.not_after.isoformat().replace("+00:00", "Z")})


# -- the osquery proof -----------------------------------------------------------------------------


async def proof_answer(app: web.Application, node: Enrollment, query: PendingQuery,
                       rows: Sequence[Mapping[str, str]] | None, now: datetime) -> None:
    """The agent of ``node`` answered an enrollment's hash query: issue, refuse, or ask again while the file is missing."""
    request_id = flow.request_id_of_query(query.query_name)
    found = await _current(app, request_id or "", now=now)
    if found is None or found.status is not EnrollmentStatus.PENDING_PROOF or found.serial != node.serial:
        return
    passed: bool | None
    if rows is None:
        passed, why = False, "the agent could not run the hash query"
    else:
        passed, why = flow.proof_outcome(found, rows)
    if passed is None:
        attempt = int(query.query_id.rsplit("-", 1)[1]) + 1 if query.query_id != query.query_name else 1
        await _queue_proof(app, found, attempt=attempt, now=now)
        return
    if not passed:
        failed = flow.proof_failed(found, why, now=now)
        if await app[STORE].swap_enrollment_request(found, failed):
            _log.warning("enrollment.proof_failed", id=found.id, user=found.user, serial=found.serial, detail=why,
                         host=node.host_identifier)
            _metric(app, "proof-failed")
        return
    _log.info("enrollment.proof_passed", id=found.id, user=found.user, serial=found.serial, host=node.host_identifier)
    _metric(app, "proof-passed")
    await _issue(app, found, by=f"osquery:{node.host_identifier}", how="proof_passed", now=now)


async def _issue(app: web.Application | ChainMapProxy, found: EnrollmentRequest, *, by: str, how: str, now: datetime) -> EnrollmentRequest | None:
    """Sign the CSR, store the outcome, bind the owner. Returns the stored request, None when another replica moved it first.

    Raises:
        StoreError: the store could not be written.
    """
    store = app[STORE]
    try:
        certificate = app[DEVICE_CA].issue(found.csr_pem.encode(), serial=found.serial, owner=found.user, now=now)
    except ValueError as exc:
        outcome = flow.refused(found, by="gatehouse", reason="csr-refused", detail=f"the device CA refused the CSR: {exc}; "
                               "run the enrollment program again", now=now)
        if await store.swap_enrollment_request(found, outcome):
            _log.warning("enrollment.refused", id=found.id, user=found.user, serial=found.serial, reason="csr-refused")
            _metric(app, "refused")
            return outcome
        return None
    # INVARIANT: the certificate is recorded before the request can hand it out, so no certificate of
    # ours is ever in use without a record to list and revoke it; one whose request another replica
    # moved first is revoked at once (nobody ever received it).
    await store.record_certificate(_record(certificate, serial=found.serial, owner=found.user, now=now))
    outcome = flow.issued(found, certificate, by=by, how=how, now=now)
    if not await store.swap_enrollment_request(found, outcome):
        await store.revoke_certificate(certificate.fingerprint, at=now, by="gatehouse:enrollment-moved")
        await app[SNAPSHOT_CACHE].refresh_certificates()
        return None
    mode = OwnerEditMode.REPLACE if flow.FLAG_OTHER_OWNER in found.flags else OwnerEditMode.ADD
    await store.edit_owners([OwnerEdit(found.serial, (found.user,), mode, set_by=f"enrollment {found.id}", set_at=now,
                                       source=OwnerSource.ENROLLMENT)])
    cache = app[SNAPSHOT_CACHE]
    await cache.refresh_owners()
    await cache.refresh_certificates()
    _log.info("enrollment.issued", id=found.id, user=found.user, serial=found.serial, fingerprint=certificate.fingerprint,
              not_after=certificate.not_after.isoformat(), by=by)
    _metric(app, "issued")
    return outcome


def _record(certificate: flow.IssuedLike, *, serial: str, owner: str, now: datetime) -> CertificateRecord:
    return CertificateRecord(fingerprint=certificate.fingerprint, serial=serial, owner=owner, not_before=certificate.not_before,
                             not_after=certificate.not_after, issued_at=now)


# -- approvals -------------------------------------------------------------------------------------


def _approver_groups(request: web.Request) -> frozenset[str]:
    context = request.config_dict.get(BREAKGLASS_WEB)
    return frozenset(context.settings.approver_groups) if context is not None else frozenset()


def _approver(request: web.Request) -> Identity | web.Response:
    identity: Identity = request[USER]
    groups = _approver_groups(request)
    if not frozenset(identity.groups) & groups:
        _log.warning("enrollment.admin_refused", user=identity.email)
        names = ", ".join(f"`{g}`" for g in sorted(groups)) or "the approver groups (`breakglass.approver_groups`)"
        return views.render_message(403, "Not available to you",
                                    f"Enrollment approvals are for members of {names}.").response()
    return identity


async def admin_list(request: web.Request) -> web.Response:
    """``GET /.gatehouse/admin/enrollments``: requests waiting for an approver first, then the latest outcomes."""
    identity = _approver(request)
    if isinstance(identity, web.Response):
        return identity
    app, now = request.config_dict, _now(request)
    try:
        requests = tuple(await app[STORE].enrollment_requests())
        conflicts = await app[STORE].osquery_conflicts()
    except StoreError as exc:
        return _store_down(request, exc)
    token = app[CSRF].issue(identity.subject, now=now)
    view = views.AdminView(requests=requests, conflicts=conflicts, viewer=identity.email, csrf_token=token, now=now,
                           notice=request.query.get("done", ""))
    return views.render_admin(view).response()


async def admin_action(request: web.Request) -> web.StreamResponse:
    """``POST /.gatehouse/admin/enrollments/{id}/approve|refuse``: an approver decides; 303 back to the list."""
    identity = _approver(request)
    if isinstance(identity, web.Response):
        return identity
    app, now = request.config_dict, _now(request)
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    try:
        check_form(app[CSRF], form, request.headers, host=request.headers.get("Host", request.host),
                   subject=identity.subject, now=now)
    except CsrfRefused as exc:
        _log.warning("enrollment.csrf_refused", user=identity.email, code=exc.code)
        return views.render_message(403, "Not accepted", str(exc), back=True).response()
    action, request_id = request.match_info["action"], request.match_info["id"]
    if action not in ("approve", "refuse"):
        return views.render_message(404, "No such action", f"`{action[:40]}` is not an action; approve or refuse", back=True).response()
    if DEVICE_CA not in app:
        return _disabled(request)
    try:
        found = await _current(app, request_id, now=now)
        if found is None or found.status is not EnrollmentStatus.PENDING_APPROVAL:
            state = found.status.value if found is not None else "unknown"
            return views.render_message(409, "Nothing to decide", f"Enrollment {request_id[:40]} is {state}, not waiting for an approver.",
                                        back=True).response()
        if found.user == identity.email:
            _log.warning("enrollment.admin_refused", user=identity.email, id=found.id, reason="own-enrollment")
            return views.render_message(403, "Not your decision", "You cannot approve or refuse your own enrollment; ask another approver.",
                                        back=True).response()
        if action == "approve":
            _log.info("enrollment.approved", id=found.id, user=found.user, serial=found.serial, approver=identity.email,
                      flags=list(found.flags))
            _metric(request, "approved")
            outcome = await _issue(app, found, by=identity.email, how="approved", now=now)
        else:
            reason = form.get("reason", "").strip()[:500]
            if not reason:
                return views.render_message(400, "Say why", "Write a reason for refusing; it goes into the enrollment's history.",
                                            back=True).response()
            outcome = flow.refused(found, by=identity.email, reason="refused-by-approver", detail=reason, now=now)
            if await app[STORE].swap_enrollment_request(found, outcome):
                _log.info("enrollment.refused", id=found.id, user=found.user, serial=found.serial, approver=identity.email,
                          reason="refused-by-approver")
                _metric(request, "refused")
            else:
                outcome = None
    except StoreError as exc:
        return _store_down(request, exc)
    if outcome is None:
        return views.render_message(409, "Changed meanwhile", "Someone decided this enrollment at the same time; reload the list.",
                                    back=True).response()
    raise web.HTTPSeeOther(f"{ADMIN_PATH}?done={action}")


__all__ = ["ADMIN_PATH", "CONFIRM_PATH", "ENROLLMENTS_PATH", "RENEW_PATH", "SESSIONS_PATH", "EnrollRuntime", "add_enroll_routes", "proof_answer"]
