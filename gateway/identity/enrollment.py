"""Laptop enrollment as plain values and functions: what a request must contain, the one-time codes, the request's states.

Owns: the enrollment constants (lifetimes, the reserved osquery query name), CertificateIssuer and IssuedLike
(the seam to the device CA), EnrollmentInput and validate_enrollment, placeholder serials, nonce paths,
the secrets (session, user code, enrollment token, nonce) and the state machine of an EnrollmentRequest:
created → pending-proof | pending-approval → issued | refused | expired.
Must not import: aiohttp, the store backends, the clock (``now`` comes in as an argument).

Every transition returns a new request with one more event (who, when, what), so the stored request is
its own audit trail; the API stores it with a compare-and-set, so a proof arriving while an approver
decides moves the request once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509

from gateway.ingest.snapshot_parse import serial_problem
from gateway.store.base import EnrollmentEvent, EnrollmentRequest, EnrollmentStatus, EnrollSession

SESSION_TTL = timedelta(minutes=10)
"""How long a one-time code can be confirmed and its token fetched."""
TOKEN_TTL = timedelta(minutes=10)
"""How long an enrollment token is valid (it creates one enrollment)."""
REQUEST_TTL = timedelta(minutes=15)
"""How long an enrollment request waits for its proof or an approver."""
POLL_INTERVAL_S = 2
ENROLL_QUERY_PREFIX = "gatehouse_enroll_"
"""Distributed queries with this name answer an enrollment's proof, never posture facts."""
PROOF_OSQUERY = "osquery-file-hash"
PROOF_APPROVAL = "approval"
FLAG_OTHER_OWNER = "other-owner"
PLATFORMS = ("darwin", "linux", "windows")
TOKEN_PREFIX = "ghe_"
"""Enrollment tokens start with this; anything else in ``Authorization: Bearer`` is taken for a user JWT."""
_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
"""RFC 8628 section 6.1: no vowels (no words), no look-alike digits."""
_MAX_CSR_CHARS = 16 * 1024
_MAX_NONCE_PATH = 512
_HOME_PATH = re.compile(r"^(?:/Users/[^/]+/|/home/[^/]+/|[A-Za-z]:\\Users\\[^\\]+\\)[^\x00-\x1f\x7f]+$")
_FORBIDDEN_IN_PATH = frozenset("'\"`")
_PLACEHOLDERS = frozenset(s.casefold() for s in (
    "0", "None", "To be filled by O.E.M.", "Default string", "System Serial Number", "0123456789",
    "Not Specified", "Not Applicable", "N/A", "Unknown", "Chassis Serial Number", "Serial Number",
))


class IssuedLike(Protocol):
    """What the device CA hands back for a CSR (``gateway.identity.device_ca.IssuedCertificate`` has these fields)."""

    @property
    def pem_chain(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def not_after(self) -> datetime: ...


class CertificateIssuer(Protocol):
    """The device CA as enrollment uses it (``gateway.identity.device_ca.DeviceCA``)."""

    def issue(self, csr_pem: bytes, *, serial: str, owner: str, now: datetime) -> IssuedLike:
        """A certificate naming ``serial`` for ``owner``; raises ValueError (``CsrError``) for a CSR it will not sign."""
        ...


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong in an enrollment request body: the field, its code, what is wrong, what is expected."""

    field: str
    code: str
    problem: str
    expected: str


class EnrollmentInvalid(ValueError):
    """An enrollment request body is wrong; ``problems`` lists every problem, the first names the answer's code."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.problem}, expected {p.expected}" for p in problems))
        self.problems = tuple(problems)

    @property
    def code(self) -> str:
        return self.problems[0].code


@dataclass(frozen=True, slots=True)
class EnrollmentInput:
    """A checked enrollment request body."""

    serial: str
    platform: str
    hostname: str
    csr_pem: str
    nonce_path: str


def placeholder_serial(serial: str) -> bool:
    """True for serials firmware ships when nobody set one (``To be filled by O.E.M.``, ``0``, all one character)."""
    text = serial.strip()
    return text.casefold() in _PLACEHOLDERS or len(set(text)) == 1


def nonce_path_problem(path: object, *, home_roots: Sequence[str] = ()) -> str | None:
    """Why ``path`` cannot hold the proof nonce, or None when it can.

    It must lie in a user's home: ``/Users/<name>/``, ``/home/<name>/``, ``C:\\Users\\<name>\\``, or
    ``<root>/<name>/`` for each of ``home_roots`` (``identity.device.ca.home_roots``, e.g. ``/var/home``),
    so the agent is never asked to hash a system file and a service account without a home cannot
    place the nonce.
    """
    found = _nonce_path_problem(path, home_roots)
    return f"{found[0]}; expected {found[1]}" if found is not None else None


def _nonce_path_problem(path: object, home_roots: Sequence[str]) -> tuple[str, str] | None:
    """What is wrong with ``path`` and what is expected instead (``nonce_path_problem``), or None."""
    if not isinstance(path, str) or not path:
        return "is missing or not a string", "the absolute path of a file under your home directory"
    if len(path) > _MAX_NONCE_PATH:
        return f"is {len(path)} characters", f"at most {_MAX_NONCE_PATH}"
    if _FORBIDDEN_IN_PATH & set(path) or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "contains quotes or control characters", "a plain path"
    if ".." in re.split(r"[\\/]", path):
        return "contains `..`", "the path without it"
    if not _HOME_PATH.match(path) and not any(_under_home_root(path, root) for root in home_roots):
        extra = "".join(f", `{root.rstrip('/')}/<name>/…`" for root in home_roots)
        return "is not under a home directory", f"`/Users/<name>/…`, `/home/<name>/…`{extra} or `C:\\Users\\<name>\\…`"
    return None


def _under_home_root(path: str, root: str) -> bool:
    """True when ``path`` is ``<root>/<name>/<something>`` (POSIX roots; the path was checked for ``..`` and quotes)."""
    prefix = root.rstrip("/") + "/"
    name, slash, rest = path[len(prefix):].partition("/") if path.startswith(prefix) else ("", "", "")
    return bool(name and slash and rest)


def validate_enrollment(body: Mapping[str, object], *, home_roots: Sequence[str] = ()) -> EnrollmentInput:
    """The enrollment request body checked field by field (``home_roots`` as for ``nonce_path_problem``).

    Raises:
        EnrollmentInvalid: every problem found, with the contract's codes (``serial-invalid``,
            ``serial-placeholder``, ``platform-invalid``, ``csr-invalid``, ``nonce-path-invalid``, ``hostname-invalid``).
    """
    problems: list[FieldProblem] = []
    serial = body.get("serial")
    problem = serial_problem(serial)
    if isinstance(serial, str) and serial.strip() and placeholder_serial(serial):
        problems.append(FieldProblem("serial", "serial-placeholder",
                                     f"`{serial[:80]}` is a placeholder the firmware ships, not this laptop's serial",
                                     "the serial of a laptop whose hardware serial is set"))
    elif problem is not None or not isinstance(serial, str):
        problems.append(FieldProblem("serial", "serial-invalid",
                                     "the serial is not usable" if isinstance(serial, str) else "`serial` is missing or not a string",
                                     problem or "the laptop's hardware serial number"))
    platform = body.get("platform")
    if platform not in PLATFORMS:
        problems.append(FieldProblem("platform", "platform-invalid", f"`{str(platform)[:40]}` is not a platform",
                                     "one of `darwin`, `linux`, `windows`"))
    hostname = body.get("hostname", "")
    if not isinstance(hostname, str) or len(hostname) > 255 or any(ord(c) < 32 or ord(c) == 127 for c in hostname):
        problems.append(FieldProblem("hostname", "hostname-invalid", "the host name is not plain text of at most 255 characters",
                                     "the laptop's host name, at most 255 plain characters"))
    csr = body.get("csr")
    csr_problem = _csr_problem(csr)
    if csr_problem is not None:
        problems.append(FieldProblem("csr", "csr-invalid", f"the CSR {csr_problem[0]}", csr_problem[1]))
    path_problem = _nonce_path_problem(body.get("nonce_path"), home_roots)
    if path_problem is not None:
        problems.append(FieldProblem("nonce_path", "nonce-path-invalid", f"the path {path_problem[0]}", path_problem[1]))
    if problems:
        raise EnrollmentInvalid(problems)
    return EnrollmentInput(serial=str(serial).strip(), platform=str(platform), hostname=str(hostname),
                           csr_pem=str(csr), nonce_path=str(body["nonce_path"]))


def _csr_problem(csr: object) -> tuple[str, str] | None:
    """What is wrong with the CSR and what is expected instead, or None when it can be signed."""
    if not isinstance(csr, str) or "-----BEGIN CERTIFICATE REQUEST-----" not in csr:
        return "is not a PEM certificate signing request", "a PEM certificate signing request (`-----BEGIN CERTIFICATE REQUEST-----`)"
    if len(csr) > _MAX_CSR_CHARS:
        return f"is {len(csr)} characters", f"at most {_MAX_CSR_CHARS}"
    try:
        request = x509.load_pem_x509_csr(csr.encode())
    except ValueError as exc:
        return f"cannot be read ({exc})", "the PEM the enrollment client made"
    if not request.is_signature_valid:
        return "has a signature that does not match its key", "a CSR made again by the enrollment client"
    return None


# -- secrets ---------------------------------------------------------------------------------------


def digest(secret: str) -> str:
    """SHA-256 (hex) of a session id, token or nonce: what the store keeps instead of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(secret: str, stored: str) -> bool:
    """True when ``secret`` hashes to ``stored`` (constant time)."""
    return bool(stored) and hmac.compare_digest(digest(secret), stored)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_user_code() -> str:
    """``ABCD-EFGH``: 8 letters from the RFC 8628 alphabet (20^8, about 2^34.6)."""
    letters = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def normalise_user_code(text: str) -> str:
    """The code as stored, from what a user typed (any case, with or without the dash and spaces)."""
    letters = "".join(c for c in text.upper() if c.isalpha())[:8]
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else ""


def new_enrollment_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_enrollment_id() -> str:
    return "enr-" + secrets.token_hex(8)


def new_nonce() -> str:
    """32 random bytes, base64url without padding: 43 characters."""
    return secrets.token_urlsafe(32)


def new_session(session_id: str, user_code: str, *, now: datetime) -> EnrollSession:
    """A session waiting for a signed-in user to confirm its code."""
    return EnrollSession(session_hash=digest(session_id), user_code=user_code, created_at=now, expires_at=now + SESSION_TTL)


def confirmed(session: EnrollSession, user: str, *, now: datetime) -> EnrollSession:
    return replace(session, user=user, confirmed_at=now)


def with_token(session: EnrollSession, token: str, *, now: datetime) -> EnrollSession:
    return replace(session, token_hash=digest(token), token_expires_at=now + TOKEN_TTL)


# -- the request's states --------------------------------------------------------------------------


def proof_query_name(request_id: str) -> str:
    return ENROLL_QUERY_PREFIX + request_id


def request_id_of_query(query_name: str) -> str | None:
    """The enrollment a reserved distributed query belongs to; None for any other query."""
    return query_name[len(ENROLL_QUERY_PREFIX):] if query_name.startswith(ENROLL_QUERY_PREFIX) else None


def proof_sql(nonce_path: str) -> str:
    """The osquery query hashing the nonce file (the path was checked by ``nonce_path_problem``: no quotes)."""
    return f"SELECT sha256 FROM hash WHERE path = '{nonce_path}';"


def new_request(entered: EnrollmentInput, *, request_id: str, user: str, nonce: str, owners: Sequence[str],
                has_osquery: bool, now: datetime) -> EnrollmentRequest:
    """A created request and how it must be proven.

    The osquery file-hash proof is used when the serial has an active osquery agent; otherwise an
    approver decides. A serial registered to other users always needs an approver and is flagged.
    """
    other_owner = bool(owners) and user not in owners
    flags = (FLAG_OTHER_OWNER,) if other_owner else ()
    osquery = has_osquery and not other_owner
    status = EnrollmentStatus.PENDING_PROOF if osquery else EnrollmentStatus.PENDING_APPROVAL
    detail = "registered to " + ", ".join(owners) if other_owner else ""
    return EnrollmentRequest(
        id=request_id, user=user, serial=entered.serial, platform=entered.platform, hostname=entered.hostname,
        csr_pem=entered.csr_pem, nonce_path=entered.nonce_path, nonce_sha256=digest(nonce),
        proof=PROOF_OSQUERY if osquery else PROOF_APPROVAL, status=status, created_at=now,
        expires_at=now + REQUEST_TTL, flags=flags,
        events=(EnrollmentEvent(now, "created", user, detail),),
    )


def _step(request: EnrollmentRequest, kind: str, actor: str, note: str, now: datetime, **changes: object) -> EnrollmentRequest:
    return replace(request, events=(*request.events, EnrollmentEvent(now, kind, actor, note)), **changes)  # type: ignore[arg-type]


def due_to_expire(request: EnrollmentRequest, *, now: datetime) -> bool:
    return request.status.open and now >= request.expires_at


def expired(request: EnrollmentRequest, *, now: datetime) -> EnrollmentRequest:
    return _step(request, "expired", "gatehouse", "", now, status=EnrollmentStatus.EXPIRED, reason="enrollment-expired",
                 detail="no proof or approval arrived in time; run the enrollment program again")


def proof_outcome(request: EnrollmentRequest, rows: Sequence[Mapping[str, str]]) -> tuple[bool | None, str]:
    """Whether the agent's hash answer proves the laptop: True, False, or None when the file was not there yet."""
    hashes = {str(r.get("sha256", "")).lower() for r in rows}
    if not hashes or hashes == {""}:
        return None, "the agent found no nonce file yet"
    if hashes == {request.nonce_sha256}:
        return True, "the agent on this serial hashed the nonce file"
    return False, "the agent on this serial read a different nonce file"


def proof_failed(request: EnrollmentRequest, detail: str, *, now: datetime) -> EnrollmentRequest:
    return _step(request, "proof_failed", "osquery", detail, now, status=EnrollmentStatus.REFUSED, reason="proof-failed",
                 detail="the health agent of this serial did not find the enrollment program's file; run the "
                        "enrollment program on the laptop whose agent reports this serial")


def refused(request: EnrollmentRequest, *, by: str, reason: str, detail: str, now: datetime) -> EnrollmentRequest:
    return _step(request, "refused", by, detail, now, status=EnrollmentStatus.REFUSED, reason=reason, detail=detail,
                 decided_by=by)


def issued(request: EnrollmentRequest, certificate: IssuedLike, *, by: str, how: str, now: datetime) -> EnrollmentRequest:
    """The request with its certificate; ``how`` is the event before issuing (``proof_passed`` or ``approved``)."""
    proven = _step(request, how, by, "", now)
    return _step(proven, "issued", "gatehouse", certificate.fingerprint, now, status=EnrollmentStatus.ISSUED,
                 certificate=certificate.pem_chain, fingerprint=certificate.fingerprint, not_after=certificate.not_after,
                 decided_by=by)
