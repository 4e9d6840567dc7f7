"""A small HTTPS server that speaks the enrollment API of issue 15's contract, for the client's tests.

Shaped as /work/wt/prompts/enroll-contract.md ("HTTP API") defines it: sessions and one-time codes,
enrollments with a nonce, polling, issuance and the mTLS renewal endpoint. Gatehouse's own API is
built separately; this stands in for it so the client runs for real against sockets and TLS. The
osquery proof is simulated on the same machine: where Gatehouse would ask the device's osquery node
for `SELECT sha256 FROM hash WHERE path = '<nonce_path>'`, this server hashes that file itself.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

API = "/.gatehouse/api/v1"


class DeviceCA:
    """A device CA that signs CSRs the way the contract's DeviceCA.issue describes."""

    def __init__(self, name: str = "Gatehouse device CA (test)") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, csr_pem: str, serial: str, *, days: int = 30) -> x509.Certificate:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            raise ValueError("bad csr signature")
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gatehouse device")]))
            .issuer_name(self.cert.subject).public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:device:serial:{serial}")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def chain(self, leaf: x509.Certificate) -> str:
        return leaf.public_bytes(serialization.Encoding.PEM).decode() + self.pem


@dataclass
class Script:
    """How the server answers: the knobs each test turns, and what it saw."""

    token_statuses: list[int] = field(default_factory=lambda: [428, 200])
    enroll_status: int = 201
    proof: str = "osquery-file-hash"
    approve_after_polls: int = 1
    refuse: tuple[str, str] | None = None
    sessions_status: int = 201
    enrollments: dict[str, dict[str, Any]] = field(default_factory=dict)
    renewals: list[str] = field(default_factory=list)
    renew_refusal: str | None = None
    """A code (``device-certificate-revoked``, ``-expired``, ``-unknown``) to refuse renewals with, as Gatehouse does: 403."""
    proofs: list[tuple[str, bool]] = field(default_factory=list)


class ContractGatehouse(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script, device_ca: DeviceCA, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script, self.device_ca = script, device_ca
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.token = "tok-" + secrets.token_urlsafe(16)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: ContractGatehouse

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json" if status >= 400 else "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def signed_in(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.server.token}"

    def do_POST(self) -> None:
        script, path = self.server.script, self.path
        if path == f"{API}/enroll/sessions":
            self.body()
            if script.sessions_status != 201:
                self.answer(script.sessions_status, {"code": "enrollment-disabled", "detail": "no device CA is configured", "status": script.sessions_status})
                return
            self.answer(201, {"session": "s-1", "user_code": "ABCD-EFGH", "expires_in": 600, "interval": 2,
                              "verification_uri": f"{self.server.origin}/.gatehouse/enroll/confirm?code=ABCD-EFGH"})
        elif path == f"{API}/enroll/sessions/s-1/token":
            self.body()
            status = script.token_statuses.pop(0) if len(script.token_statuses) > 1 else script.token_statuses[0]
            if status == 200:
                self.answer(200, {"enrollment_token": self.server.token, "user": "alice@example.com", "expires_in": 600})
            elif status == 428:
                self.answer(428, {"status": "pending"})
            else:
                self.answer(status, {"code": "enroll-session-expired", "status": status, "detail": "the code was not confirmed in time"})
        elif path == f"{API}/enrollments/renew":
            self.renew()
        elif path == f"{API}/enrollments":
            self.create()
        else:
            self.answer(404, {"code": "not-found", "status": 404})

    def create(self) -> None:
        script, request = self.server.script, self.body()
        if not self.signed_in() or script.enroll_status == 401:
            self.answer(401, {"code": "enroll-token-invalid", "status": 401, "detail": "the enrollment token is unknown or used"})
            return
        number = f"enr-{secrets.token_hex(4)}"
        nonce = secrets.token_urlsafe(32)
        status = "pending-proof" if script.proof == "osquery-file-hash" else "pending-approval"
        script.enrollments[number] = {**request, "nonce": nonce, "polls": 0}
        self.answer(201, {"id": number, "status": status, "proof": script.proof, "nonce": nonce,
                          "poll": f"{API}/enrollments/{number}", "interval": 2, "expires_in": 900})

    def do_GET(self) -> None:
        script = self.server.script
        number = self.path.rsplit("/", 1)[-1]
        enrollment = script.enrollments.get(number)
        if enrollment is None or not self.signed_in():
            self.answer(404 if enrollment is None else 401, {"code": "enrollment-unknown", "status": 404})
            return
        enrollment["polls"] += 1
        if script.refuse is not None:
            self.answer(200, {"id": number, "status": "refused", "reason": script.refuse[0], "detail": script.refuse[1]})
            return
        if script.proof == "osquery-file-hash":
            # What osqueryd would answer for `SELECT sha256 FROM hash WHERE path = '<nonce_path>'`.
            try:
                seen = hashlib.sha256(Path(enrollment["nonce_path"]).read_bytes()).hexdigest()
            except OSError:
                seen = ""
            proven = seen == hashlib.sha256(enrollment["nonce"].encode()).hexdigest()
            script.proofs.append((enrollment["nonce_path"], proven))
            if not proven:
                self.answer(200, {"id": number, "status": "refused", "reason": "proof-failed", "detail": "the agent's file hash did not match"})
                return
        elif enrollment["polls"] <= script.approve_after_polls:
            self.answer(200, {"id": number, "status": "pending-approval"})
            return
        leaf = self.server.device_ca.issue(enrollment["csr"], enrollment["serial"])
        self.answer(200, {"id": number, "status": "issued", "certificate": self.server.device_ca.chain(leaf),
                          "not_after": rfc3339(leaf.not_valid_after_utc)})

    def renew(self) -> None:
        request = self.body()
        peer = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        if not peer:
            self.answer(401, {"code": "device-certificate-required", "status": 401,
                              "detail": "no device certificate was presented over TLS"})
            return
        current = x509.load_der_x509_certificate(peer)
        self.server.script.renewals.append(current.fingerprint(hashes.SHA256()).hex())
        if self.server.script.renew_refusal is not None:
            self.answer(403, {"code": self.server.script.renew_refusal, "status": 403,
                              "detail": f"the device certificate was refused; enroll this laptop again with `gatehouse-enroll {self.server.origin}`"})
            return
        serial = str(current.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        leaf = self.server.device_ca.issue(request["csr"], serial)
        self.answer(200, {"certificate": self.server.device_ca.chain(leaf), "not_after": rfc3339(leaf.not_valid_after_utc)})


def rfc3339(when: datetime) -> str:
    """Times as Gatehouse's API writes them: RFC 3339 in UTC with `Z`."""
    return when.isoformat().replace("+00:00", "Z")


def serve(script: Script, tmp: Path) -> Iterator[tuple[ContractGatehouse, Path]]:
    """Run the server on 127.0.0.1 with a trustme TLS certificate; yields it and its CA file for --ca-file."""
    server_ca, device_ca = trustme.CA(), DeviceCA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=device_ca.pem)
    ca_file = tmp / "gatehouse-ca.pem"
    server_ca.cert_pem.write_to_path(str(ca_file))
    server = ContractGatehouse(script, device_ca, context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, ca_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
