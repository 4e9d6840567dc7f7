"""Bytes for the laptop-enrollment rows: sessions, requests and osquery conflicts, as every backend stores them.

Owns: encode/decode of EnrollSession, EnrollmentRequest and OsqueryConflict.
Must not import: aiohttp, sqlite3, asyncpg, gateway.enroll.

The encoding is deterministic (sorted keys, microsecond UTC times), so the stores' compare-and-set
(``swap_*``) can compare stored bytes with the encoding of the value the caller read.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from gateway.store.base import EnrollmentEvent, EnrollmentRequest, EnrollmentStatus, EnrollSession, OsqueryConflict
from gateway.store.codec import from_micros, to_micros


def _t(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def _d(value: object) -> datetime | None:
    return None if value is None else from_micros(int(value))  # type: ignore[call-overload]  # our own stored micros


def _dumps(doc: dict[str, object]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def encode_session(session: EnrollSession) -> bytes:
    """The stored bytes of a session."""
    return _dumps({
        "session_hash": session.session_hash, "user_code": session.user_code, "created_at": _t(session.created_at),
        "expires_at": _t(session.expires_at), "user": session.user, "confirmed_at": _t(session.confirmed_at),
        "token_hash": session.token_hash, "token_expires_at": _t(session.token_expires_at),
        "enrollment_id": session.enrollment_id,
    })


def decode_session(body: bytes) -> EnrollSession:
    """A session from its stored bytes."""
    doc = orjson.loads(body)
    return EnrollSession(
        session_hash=doc["session_hash"], user_code=doc["user_code"], created_at=from_micros(doc["created_at"]),
        expires_at=from_micros(doc["expires_at"]), user=doc["user"], confirmed_at=_d(doc["confirmed_at"]),
        token_hash=doc["token_hash"], token_expires_at=_d(doc["token_expires_at"]), enrollment_id=doc["enrollment_id"],
    )


def encode_request(request: EnrollmentRequest) -> bytes:
    """The stored bytes of an enrollment request."""
    return _dumps({
        "id": request.id, "user": request.user, "serial": request.serial, "platform": request.platform,
        "hostname": request.hostname, "csr_pem": request.csr_pem, "nonce_path": request.nonce_path,
        "nonce_sha256": request.nonce_sha256, "proof": request.proof, "status": request.status.value,
        "created_at": _t(request.created_at), "expires_at": _t(request.expires_at), "flags": list(request.flags),
        "reason": request.reason, "detail": request.detail, "certificate": request.certificate,
        "fingerprint": request.fingerprint, "not_after": _t(request.not_after), "decided_by": request.decided_by,
        "events": [{"at": _t(e.at), "kind": e.kind, "actor": e.actor, "detail": e.detail} for e in request.events],
    })


def decode_request(body: bytes) -> EnrollmentRequest:
    """An enrollment request from its stored bytes."""
    doc = orjson.loads(body)
    return EnrollmentRequest(
        id=doc["id"], user=doc["user"], serial=doc["serial"], platform=doc["platform"], hostname=doc["hostname"],
        csr_pem=doc["csr_pem"], nonce_path=doc["nonce_path"], nonce_sha256=doc["nonce_sha256"], proof=doc["proof"],
        status=EnrollmentStatus(doc["status"]), created_at=from_micros(doc["created_at"]),
        expires_at=from_micros(doc["expires_at"]), flags=tuple(doc["flags"]), reason=doc["reason"], detail=doc["detail"],
        certificate=doc["certificate"], fingerprint=doc["fingerprint"], not_after=_d(doc["not_after"]),
        decided_by=doc["decided_by"],
        events=tuple(EnrollmentEvent(from_micros(e["at"]), e["kind"], e["actor"], e["detail"]) for e in doc["events"]),
    )


def encode_conflict(conflict: OsqueryConflict) -> bytes:
    """The stored bytes of an osquery enroll conflict."""
    return _dumps({"serial": conflict.serial, "previous_host": conflict.previous_host, "new_host": conflict.new_host,
                   "at": _t(conflict.at)})


def decode_conflict(body: bytes) -> OsqueryConflict:
    """An osquery enroll conflict from its stored bytes."""
    doc = orjson.loads(body)
    return OsqueryConflict(doc["serial"], doc["previous_host"], doc["new_host"], from_micros(doc["at"]))
