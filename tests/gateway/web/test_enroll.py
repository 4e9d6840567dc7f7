"""The laptop enrollment API through the production listener: sign-in by code, the osquery proof, approvals, flags.

Everything is real: a full Gatehouse (SQLite store, the example policy, ES256 user tokens), osquery's TLS
endpoints driven by a simulated agent that hashes files under the test's own "machine" root, and a small
real device CA (tests/gateway/web/enroll_issuer.py) standing in for gateway/identity/device_ca.py. The clock is moved
by hand; nothing sleeps and nothing is mocked.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509

from gateway.app import create_app
from gateway.keys import DEVICE_CA, SNAPSHOT_CACHE
from gateway.metrics import Metrics
from prometheus_client import CollectorRegistry
from tests.gateway.web.enroll_issuer import TestIssuer, make_csr
from tests.gateway.fullstack import INGEST_TOKEN, Keys, MovableClock, gatehouse_settings, ingest_headers
from tests.gateway.ingest.support import ENROLL_SECRET, fixture

ALICE = "alice@example.com"
BOB = "bob@example.com"
RITA = "rita@example.com"
SERIAL = "PF3ABCDE"
"""The serial of the recorded Linux enroll request (tests/fixtures/osquery/enroll_request_linux.json)."""
NONCE_PATH = "/home/alice/.gatehouse/enroll-nonce"
HTML = {"Accept": "text/html"}


@dataclass
class Stack:
    client: TestClient
    keys: Keys
    clock: MovableClock
    issuer: TestIssuer
    metrics: Metrics
    root: Path
    """The simulated laptop's file system root: the agent hashes ``root / path``."""

    def bearer(self, user: str = ALICE, groups: tuple[str, ...] = ()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.token(user, now=self.clock(), groups=groups)}"}

    def origin(self) -> dict[str, str]:
        return {"Origin": str(self.client.make_url("")).rstrip("/")}

    async def sign_in(self, user: str = ALICE) -> str:
        """The client's sign-in: start a session, confirm its code in the browser as ``user``, fetch the token."""
        started = await (await self.client.post("/.gatehouse/api/v1/enroll/sessions", json={})).json()
        page = await (await self.client.get(f"/.gatehouse/enroll/confirm?code={started['user_code']}",
                                            headers={**self.bearer(user), **HTML})).text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None, page
        done = await self.client.post("/.gatehouse/enroll/confirm", data={"code": started["user_code"], "csrf_token": token.group(1)},
                                      headers={**self.bearer(user), **HTML, **self.origin()})
        assert 200 == done.status, await done.text()
        answer = await self.client.post(f"/.gatehouse/api/v1/enroll/sessions/{started['session']}/token")
        assert 200 == answer.status, await answer.text()
        return str((await answer.json())["enrollment_token"])

    async def enroll_agent(self, request: str = "enroll_request_linux.json", host: str | None = None) -> str:
        body = fixture(request)
        if host is not None:
            body["host_identifier"] = host
        enrolled = await (await self.client.post("/.gatehouse/osquery/enroll", json=body)).json()
        return str(enrolled["node_key"])

    async def enroll(self, token: str, *, serial: str = SERIAL, nonce_path: str = NONCE_PATH, **extra: Any) -> Any:
        body = {"serial": serial, "platform": "linux", "hostname": "alice-x1", "csr": make_csr(), "nonce_path": nonce_path, **extra}
        return await self.client.post("/.gatehouse/api/v1/enrollments", json=body, headers={"Authorization": f"Bearer {token}"})

    def write_nonce(self, path: str, nonce: str) -> None:
        """What the client does right after the answer: the nonce's exact bytes, mode 0600."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(nonce.encode())
        target.chmod(0o600)

    async def agent_answers(self, node_key: str) -> dict[str, Any]:
        """The simulated osqueryd: read its distributed queries, run the hash queries on its root, write the answers."""
        read = await (await self.client.post("/.gatehouse/osquery/distributed/read", json={"node_key": node_key})).json()
        answers: dict[str, list[dict[str, str]]] = {}
        for query_id, sql in read["queries"].items():
            found = re.fullmatch(r"SELECT sha256 FROM hash WHERE path = '([^']*)';", sql)
            if found is None:
                continue
            file = self.root / found.group(1).lstrip("/")
            answers[query_id] = [{"sha256": hashlib.sha256(file.read_bytes()).hexdigest()}] if file.is_file() else []
        written = await self.client.post("/.gatehouse/osquery/distributed/write",
                                         json={"node_key": node_key, "queries": answers, "statuses": {q: 0 for q in answers}})
        assert 200 == written.status
        return read

    async def poll(self, token: str, enrollment_id: str) -> Any:
        response = await self.client.get(f"/.gatehouse/api/v1/enrollments/{enrollment_id}", headers={"Authorization": f"Bearer {token}"})
        assert 200 == response.status, await response.text()
        return await response.json()

    def count(self, outcome: str) -> float:
        return self.metrics.registry.get_sample_value("gatehouse_enrollments_total", {"outcome": outcome}) or 0.0


def _stack_app(tmp_path: Path, keys: Keys, clock: MovableClock, metrics: Metrics) -> web.Application:
    settings = gatehouse_settings(
        keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream="http://127.0.0.1:9",
        ingest={"api_tokens": [{"value": INGEST_TOKEN}], "osquery_enroll_secrets": [{"value": ENROLL_SECRET}]},
    )
    return create_app(settings, clock=clock, metrics=metrics)


@pytest.fixture
async def stack(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    metrics = Metrics(CollectorRegistry())
    app = _stack_app(tmp_path, keys, clock, metrics)
    issuer = TestIssuer(clock())
    app[DEVICE_CA] = issuer
    client = await aiohttp_client(app)
    yield Stack(client, keys, clock, issuer, metrics, tmp_path / "laptop")


class TestOsqueryProof:
    async def test_the_agent_hashing_the_nonce_file_gets_the_laptop_a_certificate(self, stack: Stack, log_lines: Any) -> None:
        """Signed in by code, proven by the serial's own agent hashing the nonce file: issued, and the user owns the serial."""
        node_key = await stack.enroll_agent()
        token = await stack.sign_in()

        created = await stack.enroll(token)
        body = await created.json()
        stack.write_nonce(NONCE_PATH, body["nonce"])
        pending = await stack.poll(token, body["id"])
        read = await stack.agent_answers(node_key)
        done = await stack.poll(token, body["id"])
        owners = await (await stack.client.get(f"/.gatehouse/api/v1/devices/{SERIAL}/owners", headers=ingest_headers())).json()

        assert (201, "pending-proof", "osquery-file-hash", 43) == (created.status, body["status"], body["proof"], len(body["nonce"]))
        assert "pending-proof" == pending["status"]
        assert [f"SELECT sha256 FROM hash WHERE path = '{NONCE_PATH}';"] == list(read["queries"].values())
        assert "issued" == done["status"]
        leaf = x509.load_pem_x509_certificate(done["certificate"].encode())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [f"urn:device:serial:{SERIAL}"] == san.get_values_for_type(x509.UniformResourceIdentifier)
        assert done["not_after"].endswith("Z")
        assert ([ALICE], "enrollment") == (owners["owners"], owners["source"])
        events = [line["event"] for line in log_lines.events() if line["event"].startswith("enrollment.")]
        assert ["enrollment.session_started", "enrollment.session_confirmed", "enrollment.created",
                "enrollment.proof_passed", "enrollment.issued"] == events
        assert (1.0, 1.0, 1.0) == (stack.count("created"), stack.count("proof-passed"), stack.count("issued"))

    async def test_a_different_file_is_refused(self, stack: Stack) -> None:
        """An agent that hashes a file with other bytes does not prove the laptop: refused with `proof-failed`."""
        node_key = await stack.enroll_agent()
        token = await stack.sign_in()
        body = await (await stack.enroll(token)).json()
        stack.write_nonce(NONCE_PATH, "someone-elses-nonce")

        await stack.agent_answers(node_key)
        done = await stack.poll(token, body["id"])

        assert ("refused", "proof-failed") == (done["status"], done["reason"])
        assert "certificate" not in done
        assert [] == stack.issuer.issued
        assert 1.0 == stack.count("proof-failed")

    async def test_a_missing_file_is_asked_for_again(self, stack: Stack) -> None:
        """When the agent runs the query before the client wrote the file, Gatehouse asks again and then issues."""
        node_key = await stack.enroll_agent()
        token = await stack.sign_in()
        body = await (await stack.enroll(token)).json()

        first = await stack.agent_answers(node_key)
        between = await stack.poll(token, body["id"])
        stack.write_nonce(NONCE_PATH, body["nonce"])
        second = await stack.agent_answers(node_key)
        done = await stack.poll(token, body["id"])

        assert "pending-proof" == between["status"]
        assert [f"gatehouse_enroll_{body['id']}"] == list(first["queries"])
        assert [f"gatehouse_enroll_{body['id']}-1"] == list(second["queries"])
        assert "issued" == done["status"]

    async def test_proof_answers_never_become_posture_facts(self, stack: Stack) -> None:
        """The reserved query's rows go to the enrollment only; the device's snapshot gains no `custom` fact from them."""
        node_key = await stack.enroll_agent()
        logged = await stack.client.post("/.gatehouse/osquery/log", json={**fixture("log_result_snapshot.json"), "node_key": node_key})
        token = await stack.sign_in()
        body = await (await stack.enroll(token)).json()
        stack.write_nonce(NONCE_PATH, body["nonce"])

        await stack.agent_answers(node_key)
        status = await (await stack.client.get("/.gatehouse/", headers={**stack.bearer(), "Accept": "application/json"})).json()

        assert 200 == logged.status
        device = next(d for d in status["devices"] if d["serial"] == SERIAL)
        assert "sha256" not in orjson.dumps(device).decode()


class TestIssuedCertificateRecord:
    async def test_an_issued_certificate_is_listed_on_the_status_page_and_revocable(self, stack: Stack) -> None:
        """Issuing records the certificate: the owner's status page lists it as valid, and the fleet page's revoke marks it revoked."""
        node_key = await stack.enroll_agent()
        token = await stack.sign_in()
        body = await (await stack.enroll(token)).json()
        stack.write_nonce(NONCE_PATH, body["nonce"])
        await stack.agent_answers(node_key)
        done = await stack.poll(token, body["id"])
        fingerprint = stack.issuer.issued[0].fingerprint
        listed = await (await stack.client.get("/.gatehouse/", headers={**stack.bearer(), "Accept": "application/json"})).json()
        reviewer = {**stack.bearer(RITA, groups=("security",)), **HTML}
        fleet = await (await stack.client.get("/.gatehouse/admin/devices", headers=reviewer)).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', fleet)
        assert csrf is not None, fleet

        revoked = await stack.client.post("/.gatehouse/admin/devices/revoke-certificate", allow_redirects=False,
                                          data={"csrf_token": csrf.group(1), "serial": SERIAL}, headers={**reviewer, **stack.origin()})
        after = await (await stack.client.get("/.gatehouse/", headers={**stack.bearer(), "Accept": "application/json"})).json()

        assert "issued" == done["status"]
        device = next(d for d in listed["devices"] if d["serial"] == SERIAL)
        assert ("valid", done["not_after"].replace("Z", "+00:00")) == (device["certificate"]["state"], device["certificate"]["not_after"])
        assert 303 == revoked.status
        assert "revoked" == next(d for d in after["devices"] if d["serial"] == SERIAL)["certificate"]["state"]
        record = stack.client.app[SNAPSHOT_CACHE].certificate(fingerprint)
        assert record is not None and (SERIAL, ALICE, RITA) == (record.serial, record.owner, record.revoked_by)


class TestApproval:
    async def test_a_laptop_without_an_agent_is_issued_once_an_approver_approves(self, stack: Stack) -> None:
        """No osquery agent reports the serial: an approver confirms in the admin page, and the certificate is issued."""
        token = await stack.sign_in()
        body = await (await stack.enroll(token, serial="C02XK0AAJGH6")).json()
        approver = {**stack.bearer(RITA, groups=("security",)), **HTML}
        page = await (await stack.client.get("/.gatehouse/admin/enrollments", headers=approver)).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None

        approved = await stack.client.post(f"/.gatehouse/admin/enrollments/{body['id']}/approve", data={"csrf_token": csrf.group(1)},
                                           headers={**approver, **stack.origin()}, allow_redirects=False)
        done = await stack.poll(token, body["id"])

        assert ("pending-approval", "approval") == (body["status"], body["proof"])
        assert body["id"] in page and "Waiting for an approver (1)" in page
        assert (303, "/.gatehouse/admin/enrollments?done=approve") == (approved.status, approved.headers["Location"])
        assert ("issued", RITA) == (done["status"], stack.issuer.issued and "rita@example.com")
        assert 1.0 == stack.count("approved")

    async def test_an_approver_cannot_approve_their_own_laptop(self, stack: Stack) -> None:
        """Rita enrolling her own laptop needs another approver."""
        token = await stack.sign_in(RITA)
        body = await (await stack.enroll(token, serial="C02XK0AAJGH6")).json()
        await stack.enroll(await stack.sign_in(ALICE), serial="C02XK0AAJGH7")  # a request Rita may decide: its form carries her token
        approver = {**stack.bearer(RITA, groups=("security",)), **HTML}
        page = await (await stack.client.get("/.gatehouse/admin/enrollments", headers=approver)).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None

        response = await stack.client.post(f"/.gatehouse/admin/enrollments/{body['id']}/approve", data={"csrf_token": csrf.group(1)},
                                           headers={**approver, **stack.origin()}, allow_redirects=False)

        assert 403 == response.status
        assert "Your own enrollment: another approver decides." in page
        assert "pending-approval" == (await stack.poll(token, body["id"]))["status"]

    async def test_the_approvals_page_is_for_approvers_only(self, stack: Stack) -> None:
        """A user outside the approver groups gets a 403 naming the groups."""
        response = await stack.client.get("/.gatehouse/admin/enrollments", headers={**stack.bearer(BOB), **HTML})

        assert 403 == response.status
        assert "Enrollment approvals are for members of `security`." in await response.text()

    async def test_another_users_serial_needs_approval_and_is_flagged(self, stack: Stack, log_lines: Any) -> None:
        """A serial the inventory gives to Bob: even with an agent, Alice's enrollment waits for an approver, flagged."""
        await stack.enroll_agent()
        put = await stack.client.put(f"/.gatehouse/api/v1/devices/{SERIAL}/owners", json={"owners": [BOB]}, headers=ingest_headers())
        assert 200 == put.status, await put.text()
        token = await stack.sign_in()

        body = await (await stack.enroll(token)).json()
        page = await (await stack.client.get("/.gatehouse/admin/enrollments", headers={**stack.bearer(RITA, groups=("security",)), **HTML})).text()

        assert ("pending-approval", "approval") == (body["status"], body["proof"])
        assert "This serial is registered to someone else" in page
        assert [["other-owner"]] == [line["flags"] for line in log_lines.events("enrollment.flagged")]

    async def test_refusing_needs_a_reason_and_ends_the_request(self, stack: Stack) -> None:
        """An approver refuses with a reason; the client's poll says refused with that reason."""
        token = await stack.sign_in()
        body = await (await stack.enroll(token, serial="C02XK0AAJGH6")).json()
        approver = {**stack.bearer(RITA, groups=("security",)), **HTML}
        page = await (await stack.client.get("/.gatehouse/admin/enrollments", headers=approver)).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None

        refused = await stack.client.post(f"/.gatehouse/admin/enrollments/{body['id']}/refuse",
                                          data={"csrf_token": csrf.group(1), "reason": "not a company laptop"},
                                          headers={**approver, **stack.origin()}, allow_redirects=False)
        done = await stack.poll(token, body["id"])

        assert 303 == refused.status
        assert ("refused", "refused-by-approver", "not a company laptop") == (done["status"], done["reason"], done["detail"])


class TestSignIn:
    async def test_the_token_is_pending_until_confirmed(self, stack: Stack) -> None:
        """Before the user confirms the code in a browser, the token endpoint answers 428 pending."""
        started = await (await stack.client.post("/.gatehouse/api/v1/enroll/sessions", json={})).json()

        response = await stack.client.post(f"/.gatehouse/api/v1/enroll/sessions/{started['session']}/token")

        assert (428, {"status": "pending"}) == (response.status, await response.json())
        assert re.fullmatch(r"[B-Z]{4}-[B-Z]{4}", started["user_code"])
        assert started["verification_uri"].endswith(f"/.gatehouse/enroll/confirm?code={started['user_code']}")
        assert (600, 2) == (started["expires_in"], started["interval"])

    async def test_the_confirm_page_names_the_user_and_the_code(self, stack: Stack) -> None:
        """The browser page asks the signed-in user to confirm only if they just ran the program."""
        started = await (await stack.client.post("/.gatehouse/api/v1/enroll/sessions", json={})).json()

        page = await (await stack.client.get(f"/.gatehouse/enroll/confirm?code={started['user_code']}", headers={**stack.bearer(), **HTML})).text()

        assert f"Enroll a laptop for {ALICE}?" in page
        assert started["user_code"] in page and "Only confirm if you just ran the enrollment program" in page

    async def test_a_confirm_without_the_csrf_token_is_refused(self, stack: Stack) -> None:
        """A forged confirm (no token) does not bind the code to the victim."""
        started = await (await stack.client.post("/.gatehouse/api/v1/enroll/sessions", json={})).json()

        response = await stack.client.post("/.gatehouse/enroll/confirm", data={"code": started["user_code"]},
                                           headers={**stack.bearer(), **HTML, **stack.origin()})
        token = await stack.client.post(f"/.gatehouse/api/v1/enroll/sessions/{started['session']}/token")

        assert 403 == response.status
        assert 428 == token.status

    async def test_an_expired_session_answers_410(self, stack: Stack) -> None:
        """Ten minutes without confirmation: the session is gone with `enroll-session-expired`."""
        started = await (await stack.client.post("/.gatehouse/api/v1/enroll/sessions", json={})).json()
        stack.clock.advance(timedelta(minutes=10))

        response = await stack.client.post(f"/.gatehouse/api/v1/enroll/sessions/{started['session']}/token")

        assert (410, "enroll-session-expired") == (response.status, (await response.json())["code"])

    async def test_an_unknown_session_answers_404(self, stack: Stack) -> None:
        """A made-up session id is not found."""
        response = await stack.client.post("/.gatehouse/api/v1/enroll/sessions/nope/token")

        assert (404, "enroll-session-unknown") == (response.status, (await response.json())["code"])

    async def test_an_expired_token_is_not_signed_in(self, stack: Stack) -> None:
        """An enrollment token older than ten minutes no longer creates an enrollment."""
        token = await stack.sign_in()
        stack.clock.advance(timedelta(minutes=10, seconds=1))

        response = await stack.enroll(token)

        assert (401, "not-signed-in") == (response.status, (await response.json())["code"])

    async def test_a_token_creates_one_enrollment(self, stack: Stack) -> None:
        """The second enrollment with the same token is refused with `enroll-token-used`."""
        token = await stack.sign_in()
        first = await stack.enroll(token, serial="C02XK0AAJGH6")

        second = await stack.enroll(token, serial="C02XK0AAJGH7")

        assert 201 == first.status
        assert (409, "enroll-token-used") == (second.status, (await second.json())["code"])

    async def test_a_user_jwt_is_accepted_as_the_bearer(self, stack: Stack) -> None:
        """A token from the provider (e.g. its device authorization grant) works where an enrollment token does."""
        response = await stack.enroll(stack.keys.token(ALICE, now=stack.clock()), serial="C02XK0AAJGH6")

        assert 201 == response.status
        assert "pending-approval" == (await stack.poll(stack.keys.token(ALICE, now=stack.clock()), (await response.json())["id"]))["status"]

    async def test_another_user_cannot_read_the_enrollment(self, stack: Stack) -> None:
        """Bob's token does not see Alice's enrollment (404, not 403: ids are not confirmed)."""
        created = await (await stack.enroll(stack.keys.token(ALICE, now=stack.clock()), serial="C02XK0AAJGH6")).json()

        response = await stack.client.get(f"/.gatehouse/api/v1/enrollments/{created['id']}", headers=stack.bearer(BOB))

        assert (404, "enrollment-unknown") == (response.status, (await response.json())["code"])

    async def test_sessions_are_rate_limited_per_address(self, stack: Stack) -> None:
        """The eleventh session from one address within ten minutes gets 429 with Retry-After; later ones pass again."""
        for _ in range(10):
            assert 201 == (await stack.client.post("/.gatehouse/api/v1/enroll/sessions", json={})).status

        limited = await stack.client.post("/.gatehouse/api/v1/enroll/sessions", json={})
        stack.clock.advance(timedelta(minutes=10))
        later = await stack.client.post("/.gatehouse/api/v1/enroll/sessions", json={})

        assert (429, "rate-limited") == (limited.status, (await limited.json())["code"])
        assert 0 < int(limited.headers["Retry-After"]) <= 601
        assert 201 == later.status

    async def test_an_unfinished_request_expires(self, stack: Stack) -> None:
        """No proof and no approver within fifteen minutes: the request is expired and says to start again."""
        token = await stack.sign_in()
        body = await (await stack.enroll(token, serial="C02XK0AAJGH6")).json()
        stack.clock.advance(timedelta(minutes=15))

        done = await stack.poll(token, body["id"])

        assert ("expired", "enrollment-expired") == (done["status"], done["reason"])


class TestBadInput:
    @pytest.mark.parametrize(("field", "value", "code"), [
        ("serial", "To be filled by O.E.M.", "serial-placeholder"),
        ("serial", "0", "serial-placeholder"),
        ("serial", "00000000", "serial-placeholder"),
        ("serial", "Default string", "serial-placeholder"),
        ("serial", "", "serial-invalid"),
        ("nonce_path", "/etc/passwd", "nonce-path-invalid"),
        ("nonce_path", "/home/alice/../bob/nonce", "nonce-path-invalid"),
        ("nonce_path", "/home/alice/x' OR '1'='1", "nonce-path-invalid"),
        ("nonce_path", "relative/nonce", "nonce-path-invalid"),
        ("nonce_path", "/home/alice/" + "a" * 600, "nonce-path-invalid"),
        ("platform", "beos", "platform-invalid"),
        ("csr", "not a csr", "csr-invalid"),
    ])
    async def test_each_bad_field_has_its_code(self, stack: Stack, field: str, value: str, code: str) -> None:
        """A wrong field answers 400 with the contract's code, naming the field."""
        token = await stack.sign_in()

        response = await stack.enroll(token, **{field: value})
        body = await response.json()

        assert (400, code) == (response.status, body["code"])
        assert [field] == [e["field"] for e in body["errors"]]

    async def test_every_problem_is_reported(self, stack: Stack) -> None:
        """Several wrong fields: every one is listed, not only the first."""
        token = await stack.sign_in()

        response = await stack.enroll(token, serial="0", nonce_path="C:\\Windows\\nonce", platform="os2")

        assert ["serial", "platform", "nonce_path"] == [e["field"] for e in (await response.json())["errors"]]

    async def test_a_windows_home_path_is_accepted(self, stack: Stack) -> None:
        """`C:\\Users\\<name>\\…` is a home directory."""
        token = await stack.sign_in()

        response = await stack.enroll(token, serial="C02XK0AAJGH6", platform="windows", nonce_path="C:\\Users\\alice\\.gatehouse\\enroll-nonce")

        assert 201 == response.status

    async def test_no_bearer_is_not_signed_in(self, stack: Stack) -> None:
        """Without credentials the API says how to sign in."""
        response = await stack.client.post("/.gatehouse/api/v1/enrollments", json={})

        assert (401, "not-signed-in") == (response.status, (await response.json())["code"])


class TestOsqueryConflict:
    async def test_a_second_agent_with_another_host_is_flagged(self, stack: Stack, log_lines: Any) -> None:
        """Another osquery node enrolling the same serial under another host identity is logged, counted and listed."""
        await stack.enroll_agent()

        await stack.enroll_agent(host="evil-twin")
        twin = await stack.enroll_agent(host="evil-twin")
        await stack.client.post("/.gatehouse/osquery/log", json={**fixture("log_result_snapshot.json"), "node_key": twin})
        page = await (await stack.client.get("/.gatehouse/admin/enrollments", headers={**stack.bearer(RITA, groups=("security",)), **HTML})).text()

        assert [("lt-alice-01", "evil-twin")] == [(line["previous_host"], line["new_host"]) for line in log_lines.events("osquery.enroll_conflict")]
        assert 1.0 == stack.metrics.registry.get_sample_value("gatehouse_osquery_enroll_conflicts_total")
        assert "Two agents report this serial" in page and "evil-twin" in page
        fleet = await (await stack.client.get("/.gatehouse/admin/devices", headers={**stack.bearer(RITA, groups=("security",)), **HTML})).text()
        assert "two agents report this serial" in fleet


class TestDisabled:
    async def test_without_a_device_ca_the_api_says_enrollment_is_disabled(self, aiohttp_client: Any, tmp_path: Path) -> None:
        """No device CA configured: 404 `enrollment-disabled`."""
        keys = Keys(tmp_path / "keys")
        client = await aiohttp_client(_stack_app(tmp_path, keys, MovableClock(), Metrics(CollectorRegistry())))

        response = await client.post("/.gatehouse/api/v1/enroll/sessions", json={})

        assert (404, "enrollment-disabled") == (response.status, (await response.json())["code"])
