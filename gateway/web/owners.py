"""The owner inventory API: ``/.gatehouse/api/v1/devices/{serial}/owners`` for MDM, HR or enrollment systems.

Owns: add_owner_routes and its handlers.
Must not import: gateway.app (app.py calls add_owner_routes).

Callers authenticate like the snapshot ingest API: ``Authorization: Bearer`` with one of
``ingest.api_tokens``. ``GET`` answers the serial's entry (404 when it has none); ``PUT`` with
``{"owners": ["a@corp.example"], "set_by": "jamf-sync"}`` replaces its owners (``set_by`` optional);
``DELETE`` removes every owner, or only ``?owner=a@corp.example``. Entries are recorded with source
``api`` and ``set_by`` ``api:<set_by>`` (``api:ingest-token`` without one). The answer is the
entry after the change, once it is committed; this replica's cache has it before the answer is
sent, other replicas and workers on their next refresh (PostgreSQL: at once). Errors are the one
problem+json of ``gateway.web.problem``, naming the field and what is expected.
"""

from __future__ import annotations

from datetime import datetime

import orjson
import structlog
from aiohttp import web

from gateway.ingest.http import ingest_caller_authorized
from gateway.ingest.snapshot_parse import serial_problem
from gateway.keys import CLOCK, INGEST_SETTINGS, REQUEST_ID, SNAPSHOT_CACHE, STORE
from gateway.ingest.owners import clean_owner_emails
from gateway.store.base import OwnerEdit, OwnerEditMode, OwnerRecord, OwnerSource, StoreError
from gateway.web.problem import problem_response

_log = structlog.get_logger("gateway.owners")

OWNERS_PREFIX = "/.gatehouse/api/v1/devices/"
OWNERS_PATH = OWNERS_PREFIX + "{serial}/owners"
_MAX_BODY = 64 * 1024
_JSON = "application/json"


def _problem(request: web.Request, status: int, code: str, detail: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="gatehouse-ingest"'} if status == 401 else None
    return problem_response(status, code, detail, request_id=request.get(REQUEST_ID), headers=headers)


def _record_json(record: OwnerRecord) -> web.Response:
    return web.Response(body=orjson.dumps({
        "serial": record.serial, "owners": list(record.owners), "set_by": record.set_by,
        "set_at": record.set_at.isoformat(), "source": record.source.value,
    }), content_type=_JSON)


def _refusal(request: web.Request) -> web.Response | None:
    """401 without an ingest token, 400 for an unusable serial; None when the request may go on."""
    if not ingest_caller_authorized(request, request.config_dict[INGEST_SETTINGS]):
        return _problem(request, 401, "unauthenticated", "send `Authorization: Bearer <ingest token>` with a token from `ingest.api_tokens`")
    problem = serial_problem(request.match_info["serial"])
    if problem is not None:
        return _problem(request, 400, "bad-serial", f"serial: {problem}")
    return None


async def _apply(request: web.Request, edit: OwnerEdit) -> web.Response:
    try:
        store = request.config_dict[STORE]
        (record,) = await store.edit_owners([edit])
        await request.config_dict[SNAPSHOT_CACHE].refresh_owners()
        if not record.owners:  # the device was removed: its certificates from the device CA go with it
            revoked = await store.revoke_certificates_of(record.serial, at=edit.set_at, by=f"device-removed:{edit.set_by}")
            if revoked:
                await request.config_dict[SNAPSHOT_CACHE].refresh_certificates()
                _log.info("device.certificates_revoked", serial=record.serial, count=len(revoked), by=f"device-removed:{edit.set_by}")
    except StoreError as exc:
        _log.error("owners.store_failed", error=str(exc))
        return _problem(request, 503, "store-unavailable", "the owners were not changed; retry later")
    _log.info("owners.changed", serial=record.serial, owners=len(record.owners), set_by=record.set_by, source=record.source.value)
    return _record_json(record)


async def get_owners(request: web.Request) -> web.StreamResponse:
    """``GET``: the serial's inventory entry, from memory."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    serial = request.match_info["serial"].strip()
    record = request.config_dict[SNAPSHOT_CACHE].inventory(serial)
    if record is None:
        return _problem(request, 404, "no-owners", f"`{serial}` has no owners in the inventory; `PUT` them here")
    return _record_json(record)


async def put_owners(request: web.Request) -> web.StreamResponse:
    """``PUT``: replace the serial's owners with the body's ``owners``."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    body = await request.content.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        return _problem(request, 413, "body-too-large", f"the body is larger than {_MAX_BODY} bytes; send only `owners` and `set_by`")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _problem(request, 400, "bad-json", f'the body is not JSON ({exc}); send `{{"owners": ["a@corp.example"]}}`')
    if not isinstance(doc, dict) or not isinstance(doc.get("owners"), list) or not doc["owners"]:
        return _problem(request, 400, "bad-owners",
                        'owners: a non-empty list of email addresses is expected; to remove every owner, send `DELETE`')
    owners, problems = clean_owner_emails(doc["owners"])
    set_by = doc.get("set_by", "ingest-token")
    if not isinstance(set_by, str) or not set_by.strip() or len(set_by) > 128 or not set_by.isprintable():
        problems.append("set_by: who made the change, at most 128 printable characters")
    if problems:
        return _problem(request, 400, "bad-owners", "; ".join(f"owners: {p}" if not p.startswith("set_by") else p for p in problems))
    now: datetime = request.config_dict[CLOCK]()
    edit = OwnerEdit(request.match_info["serial"].strip(), owners, OwnerEditMode.REPLACE, f"api:{set_by.strip()}", now, OwnerSource.API)
    return await _apply(request, edit)


async def delete_owners(request: web.Request) -> web.StreamResponse:
    """``DELETE``: remove every owner, or the one named by ``?owner=``."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    named = request.query.getall("owner", [])
    owners, problems = clean_owner_emails(list(named))
    if problems:
        return _problem(request, 400, "bad-owners", "; ".join(f"owner: {p}" for p in problems))
    now: datetime = request.config_dict[CLOCK]()
    edit = OwnerEdit(request.match_info["serial"].strip(), owners, OwnerEditMode.REMOVE, "api:ingest-token", now, OwnerSource.API)
    return await _apply(request, edit)


def add_owner_routes(app: web.Application) -> None:
    """Mount the owner inventory API; the app must hold STORE, SNAPSHOT_CACHE, INGEST_SETTINGS and CLOCK."""
    app.router.add_get(OWNERS_PATH, get_owners, allow_head=False)
    app.router.add_put(OWNERS_PATH, put_owners)
    app.router.add_delete(OWNERS_PATH, delete_owners)


__all__ = ["OWNERS_PATH", "OWNERS_PREFIX", "add_owner_routes"]
