"""Gatehouse's own pages over real HTTP on a full Gatehouse: status, privacy, fleet, "check again".

Everything is real: the SQLite store, the example policy from deploy/, ES256 user tokens, snapshots
sent through the ingest API and osquery's TLS API (replaying tests/fixtures/osquery/), and a
recording upstream. The clock is a MovableClock; nothing sleeps and nothing is mocked.
"""

from __future__ import annotations

import copy
import csv
import io
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs
from yarl import URL

from gateway.app import create_app
from tests.gateway.fullstack import catch_all_upstream, INGEST_TOKEN, Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item
from tests.gateway.ingest.support import ENROLL_SECRET, fixture

ALICE = "alice@example.com"
BOB = "bob@example.com"
RITA = "rita@example.com"
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
HOSTILE = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"


class Upstream:
    """A real upstream that records the paths it was asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        return web.json_response({"upstream": "ok"})


@dataclass
class Stack:
    """The running Gatehouse (through its test client), its upstream, the IdP's key and the clock."""

    client: TestClient
    upstream: Upstream
    keys: Keys
    clock: MovableClock

    def headers(self, user: str = ALICE, *, device: str | None = None, groups: tuple[str, ...] = (),
                accept: dict[str, str] = JSON) -> dict[str, str]:
        token = self.keys.token(user, device=device, now=self.clock(), groups=groups)
        return {"Authorization": f"Bearer {token}", **accept}

    def reviewer(self, accept: dict[str, str] = JSON) -> dict[str, str]:
        return self.headers(RITA, groups=("security",), accept=accept)

    async def ingest(self, *items: dict[str, Any]) -> None:
        response = await self.client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": list(items)},
                                          headers=ingest_headers())
        assert 200 == response.status, await response.text()

    async def csrf_token(self, path: str, *, device: str) -> str:
        """The check-again form's token, from the denial the browser would see."""
        page = await (await self.client.get(path, headers=self.headers(device=device, accept=HTML))).text()
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found is not None, page
        return found.group(1)

    async def recheck(self, return_to: str, *, device: str, accept: dict[str, str] = JSON,
                      token: str | None = None) -> Any:
        token = token if token is not None else await self.csrf_token("/wiki/", device="C02NOTENROLLED")
        return await self.client.post(
            "/.gatehouse/recheck", data={"return_to": return_to, "csrf_token": token},
            headers={**self.headers(device=device, accept=accept), "Origin": str(self.client.make_url("")).rstrip("/")},
            allow_redirects=False,
        )


@pytest.fixture
async def stack(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    upstream = Upstream()
    server_url = await catch_all_upstream(aiohttp_server, upstream.handle)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    settings = gatehouse_settings(
        keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=server_url,
        # These devices' owners come in their snapshots through the ingest API: trusted here on purpose.
        ingest={"api_tokens": [{"value": INGEST_TOKEN}], "osquery_enroll_secrets": [{"value": ENROLL_SECRET}], "trust_reported_owners": True},
    )
    client = await aiohttp_client(create_app(settings, clock=clock))
    yield Stack(client, upstream, keys, clock)


async def seed_fleet(stack: Stack) -> None:
    """Alice: a healthy Mac and a Mac with its firewall off (in grace); Bob: an unencrypted Mac; Carol: a stale one."""
    now = stack.clock()
    stack.clock.now = now - timedelta(days=2)
    await stack.ingest(mac_item("C02CAROL", at=stack.clock(), owner="carol@example.com", hostname="carol-mbp"))
    stack.clock.now = now
    await stack.ingest(
        mac_item("C02ALICE1", at=now, hostname="alice-mbp"),
        mac_item("C02ALICE2", at=now, hostname="alice-old-mbp", firewall_enabled=False),
        mac_item("C02BOB", at=now, owner=BOB, hostname="bob-mbp", disk_encrypted=False),
    )


async def fleet_json(stack: Stack, query: str = "") -> dict[str, Any]:
    response = await stack.client.get(f"/.gatehouse/admin/devices?format=json{query}", headers=stack.reviewer())
    assert (200, "application/json") == (response.status, response.content_type)
    return orjson.loads(await response.read())  # type: ignore[no-any-return]


class TestStatusPage:
    async def test_lists_the_users_own_devices_and_the_current_one_only(self, stack: Stack) -> None:
        """Alice sees the devices she owns and the device she is using now, never Bob's or Carol's."""
        await seed_fleet(stack)

        response = await stack.client.get("/.gatehouse/", headers=stack.headers(device="C02NEWLAPTOP"))
        body = await response.json()

        assert 200 == response.status
        assert ["C02ALICE1", "C02ALICE2", "C02NEWLAPTOP"] == [d["serial"] for d in body["devices"]]
        assert ALICE == body["user"]

    async def test_html_shows_reach_and_grace_deadline(self, stack: Stack) -> None:
        """The page says what each device can reach and when a check in grace starts blocking."""
        await seed_fleet(stack)

        page = await (await stack.client.get("/.gatehouse/", headers=stack.headers(accept=HTML))).text()

        assert "alice-mbp" in page and "alice-old-mbp" in page
        assert "bob-mbp" not in page and "carol-mbp" not in page
        assert "Coming up" in page and ">25 Nov 15:00 UTC</time> (in 3 days)" in page

    async def test_lists_the_users_emergency_access_with_its_end(self, stack: Stack) -> None:
        """An active grant is on the status page (when it ends, the link to end it); other users' are not."""
        await seed_fleet(stack)
        asked = await stack.client.post(
            "/.gatehouse/api/v1/break-glass", json={"route": "public", "reason": "paged: the wiki is down, INC-42", "duration_s": 3600},
            headers={**stack.headers(device="C02BOB"), "X-Gatehouse-Client": "tests"},
        )
        grant = await asked.json()
        assert 201 == asked.status, grant

        mine = await (await stack.client.get("/.gatehouse/", headers=stack.headers(device="C02BOB"))).json()
        page = await (await stack.client.get("/.gatehouse/", headers=stack.headers(device="C02BOB", accept=HTML))).text()
        bobs = await (await stack.client.get("/.gatehouse/", headers=stack.headers(BOB, device="C02BOB"))).json()

        assert [(grant["id"], "active", "C02BOB", "every low service")] == [
            (g["id"], g["status"], g["device"], g["scope"]) for g in mine["grants"]
        ]
        assert mine["grants"][0]["href"].startswith(f"/.gatehouse/break-glass/{grant['id']}?")
        assert "Emergency access" in page and "Active until" in page and "(in 1 hour)" in page
        assert [] == bobs["grants"]

    async def test_needs_sign_in(self, stack: Stack) -> None:
        """Without a token the status page is a 401, not an empty list."""
        response = await stack.client.get("/.gatehouse/", headers=JSON)

        assert 401 == response.status


class TestPrivacyPage:
    async def test_works_without_sign_in(self, stack: Stack) -> None:
        """Anyone may read what Gatehouse collects, from the policy in force, before signing in."""
        response = await stack.client.get("/.gatehouse/privacy", headers=HTML)
        page = await response.text()

        assert (200, "text/html") == (response.status, response.content_type)
        assert "What Gatehouse knows about your device" in page
        assert "disk_encrypted" in page and "security" in page


class TestFleetPage:
    async def test_non_reviewer_is_refused_and_the_attempt_logged(self, stack: Stack) -> None:
        """Someone outside the reviewer groups gets 403 and the attempt is logged with who it was."""
        await seed_fleet(stack)

        with capture_logs() as logs:
            response = await stack.client.get("/.gatehouse/admin/devices?format=csv",
                                              headers=stack.headers(BOB, groups=("engineering",)))

        assert 403 == response.status
        assert "C02ALICE1" not in await response.text()
        assert [BOB] == [e["user"] for e in logs if e["event"] == "fleet.access_refused"]

    async def test_non_reviewer_is_told_which_groups_may_open_it(self, stack: Stack) -> None:
        """The refusal names the groups that may open the fleet view, in the page and in the problem document."""
        headers = stack.headers(BOB, groups=("engineering",))

        page = await stack.client.get("/.gatehouse/admin/devices", headers={**headers, **HTML})
        problem = await stack.client.get("/.gatehouse/admin/devices", headers={**headers, **JSON})

        text = await page.text()
        assert (403, "text/html") == (page.status, page.content_type)
        assert "members of `security` (`breakglass.reviewer_groups`" in text.replace("&#x27;", "'")
        assert "<p>Access denied.</p>" not in text
        body = orjson.loads(await problem.read())
        assert (403, "application/problem+json", "http-403") == (problem.status, problem.content_type, body["code"])
        assert "members of `security`" in body["detail"]

    async def test_refusal_text_is_escaped(self, aiohttp_client: Any, tmp_path: Path) -> None:
        """A group name that looks like markup is shown as text on the refusal page, never as markup."""
        keys = Keys(tmp_path / "keys")
        settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream="http://127.0.0.1:9",
                                      breakglass={"reviewer_groups": [HOSTILE]})
        client = await aiohttp_client(create_app(settings, clock=MovableClock()))
        token = keys.token(BOB, now=MovableClock()(), groups=("engineering",))

        response = await client.get("/.gatehouse/admin/devices", headers={"Authorization": f"Bearer {token}", **HTML})

        text = await response.text()
        assert 403 == response.status
        assert ESCAPED in text
        assert HOSTILE not in text

    async def test_reviewer_sees_every_device(self, stack: Stack) -> None:
        """A member of `security` gets every device with owner, reach and failing checks."""
        await seed_fleet(stack)

        body = await fleet_json(stack)
        rows = {d["serial"]: d for d in body["devices"]}

        assert {"C02ALICE1", "C02ALICE2", "C02BOB", "C02CAROL"} == set(rows)
        assert ([BOB], ["disk_encryption"], []) == (rows["C02BOB"]["owners"], rows["C02BOB"]["failing_checks"],
                                                     rows["C02BOB"]["reachable_tiers"])
        assert [{"check": "firewall", "deadline": "2026-11-25T15:00:00+00:00"}] == rows["C02ALICE2"]["grace_deadlines"]

    @pytest.mark.parametrize(("query", "serials"), [
        ("&non_compliant=1", {"C02ALICE2", "C02BOB", "C02CAROL"}),
        ("&stale=1", {"C02CAROL"}),
        ("&check=disk_encryption", {"C02BOB"}),
        ("&check=firewall", {"C02ALICE2"}),
        ("&tier=high", {"C02ALICE1", "C02ALICE2"}),
        ("&owner=ALICE", {"C02ALICE1", "C02ALICE2"}),
        ("&non_compliant=1&tier=high", {"C02ALICE2"}),
    ])
    async def test_json_export_filters(self, stack: Stack, query: str, serials: set[str]) -> None:
        """Each filter narrows the JSON export, and filters combine."""
        await seed_fleet(stack)

        body = await fleet_json(stack, query)

        assert serials == {d["serial"] for d in body["devices"]}
        assert (4, len(serials)) == (body["total"], body["count"])

    async def test_csv_export_for_auditors(self, stack: Stack) -> None:
        """The CSV export carries the filtered rows as an attachment with a header row."""
        await seed_fleet(stack)

        response = await stack.client.get("/.gatehouse/admin/devices?format=csv&non_compliant=1&owner=bob",
                                          headers=stack.reviewer())
        rows = list(csv.DictReader(io.StringIO(await response.text())))

        assert (200, "text/csv") == (response.status, response.content_type)
        assert "attachment" in response.headers["Content-Disposition"]
        assert [("C02BOB", "bob-mbp", BOB, "disk_encryption", "")] == [
            (r["serial"], r["hostname"], r["owners"], r["failing_checks"], r["reachable_tiers"]) for r in rows]

    async def test_csv_by_accept_header(self, stack: Stack) -> None:
        """`Accept: text/csv` gets the CSV without a format parameter."""
        await seed_fleet(stack)

        response = await stack.client.get("/.gatehouse/admin/devices?stale=1", headers=stack.reviewer({"Accept": "text/csv"}))

        assert "text/csv" == response.content_type
        assert ["C02CAROL"] == [r["serial"] for r in csv.DictReader(io.StringIO(await response.text()))]


class TestCheckAgain:
    @pytest.mark.parametrize("return_to", [
        "//evil.example", "https://evil.example", "https://evil.example/wiki/", "//evil.example/wiki/",
        "/\\evil.example", "/%2F%2Fevil.example", "/%5Cevil.example", "http:/evil.example", " //evil.example",
        "javascript:alert(1)",
    ])
    async def test_external_return_url_never_leaves_the_site(self, stack: Stack, return_to: str) -> None:
        """Whatever the form says, the redirect after "check again" stays on Gatehouse's own host."""
        await stack.ingest(mac_item("C02OK", at=stack.clock()))

        response = await stack.recheck(return_to, device="C02OK", token=await stack.csrf_token("/wiki/", device="C02BAD"))

        location = response.headers.get("Location", "")
        assert response.status in (302, 303)
        assert location.startswith("/") and not location.startswith("//") and "\\" not in location
        assert ("", "") == (urlsplit(location).scheme, urlsplit(location).netloc)

    async def test_return_url_to_a_removed_route_stays_on_site(self, stack: Stack) -> None:
        """A return URL no route serves any more (an old bookmark) redirects to that path on this host."""
        await stack.ingest(mac_item("C02OK", at=stack.clock()))

        response = await stack.recheck("/retired-service/page?x=1", device="C02OK")

        assert (302, "/retired-service/page?x=1") == (response.status, response.headers["Location"])

    async def test_fixed_device_is_sent_on_to_its_page(self, stack: Stack) -> None:
        """After a fixing snapshot arrives, "check again" sends the user on to the page they wanted."""
        await stack.ingest(mac_item("C02FIX", at=stack.clock(), disk_encrypted=False))
        token = await stack.csrf_token("/wiki/doc?id=7", device="C02FIX")
        stack.clock.advance(timedelta(seconds=30))
        await stack.ingest(mac_item("C02FIX", at=stack.clock()))

        response = await stack.recheck("/wiki/doc?id=7", device="C02FIX", token=token)

        assert (303, "/wiki/doc?id=7") == (response.status, response.headers["Location"])

    async def test_still_broken_device_gets_the_denial_again(self, stack: Stack) -> None:
        """Without a fix, "check again" answers with the denial for the page asked for, and no redirect."""
        await stack.ingest(mac_item("C02BAD", at=stack.clock(), disk_encrypted=False))

        response = await stack.recheck("/wiki/doc", device="C02BAD")
        body = await response.json()

        assert (403, "checks-failed", "/wiki/doc") == (response.status, body["code"], body["instance"])
        assert "Location" not in response.headers
        assert None is body["recheck"]["refresh_eta_s"]

    async def test_stale_form_is_refused(self, stack: Stack) -> None:
        """A check-again form older than the token's lifetime is refused, not followed."""
        await stack.ingest(mac_item("C02OK", at=stack.clock()))
        token = await stack.csrf_token("/wiki/", device="C02BAD")
        stack.clock.advance(timedelta(hours=13))
        await stack.ingest(mac_item("C02OK", at=stack.clock()))

        with capture_logs() as logs:
            response = await stack.recheck("/wiki/", device="C02OK", token=token)

        assert (403, None) == (response.status, response.headers.get("Location"))
        assert ["csrf-expired"] == [e["code"] for e in logs if e["event"] == "recheck.csrf_refused"]
        assert "this form is stale or came from another site (csrf-expired)" in orjson.loads(await response.read())["detail"]


def with_key(payload: dict[str, Any], node_key: str) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    out["node_key"] = node_key
    return out


class TestCheckAgainThroughOsquery:
    async def test_queues_a_distributed_refresh_and_tells_the_eta(self, stack: Stack) -> None:
        """For an osquery device, "check again" queues its posture queries (accelerated) and says how long."""
        enrolled = await (await stack.client.post("/.gatehouse/osquery/enroll", json=fixture("enroll_request_linux.json"))).json()
        node_key = enrolled["node_key"]
        logged = await stack.client.post("/.gatehouse/osquery/log", json=with_key(fixture("log_result_snapshot.json"), node_key))
        assert 200 == logged.status
        token = await stack.csrf_token("/wiki/", device="PF3ABCDE")

        response = await stack.recheck("/wiki/", device="PF3ABCDE", token=token)
        body = await response.json()
        page = await (await stack.recheck("/wiki/", device="PF3ABCDE", token=token, accept=HTML)).text()
        read = await (await stack.client.post("/.gatehouse/osquery/distributed/read",
                                              json=with_key(fixture("distributed_read_request.json"), node_key))).json()

        assert (403, 60) == (response.status, body["recheck"]["refresh_eta_s"])
        assert "Gatehouse will ask your device for a fresh health report first; that takes about 1 minute." in page
        assert 120 == read["accelerate"]
        assert read["queries"] and all(q.startswith("zt-refresh-") and not q.endswith(("_darwin", "_windows"))
                                       for q in read["queries"])


class TestEscaping:
    async def hostile_device(self, stack: Stack, *, healthy: bool = False) -> None:
        await stack.ingest(mac_item("C02EVIL", at=stack.clock(), hostname=HOSTILE, owner=f"bob+{HOSTILE}@example.com",
                                    disk_encrypted=healthy, os_name=HOSTILE))

    async def test_deny_page(self, stack: Stack) -> None:
        """A hostile device name on the denial is text, not markup."""
        await self.hostile_device(stack)

        page = await (await stack.client.get("/wiki/", headers=stack.headers(f"bob+{HOSTILE}@example.com", device="C02EVIL", accept=HTML))).text()

        assert HOSTILE not in page
        assert f"<dt>Name</dt><dd>{ESCAPED}</dd>" in page
        assert f"<dt>Signed in as</dt><dd>bob+{ESCAPED}@example.com</dd>" in page

    async def test_deny_page_naming_the_owner(self, stack: Stack) -> None:
        """The someone-else's-device denial shows the owner escaped."""
        await self.hostile_device(stack, healthy=True)

        response = await stack.client.get("/owned/", headers=stack.headers(ALICE, device="C02EVIL", accept=HTML))
        page = await response.text()

        assert (403, "device-not-owned") == (response.status, response.headers["X-Gatehouse-Denied-Reason"])
        assert HOSTILE not in page
        assert f"registered to bob+{ESCAPED}@example.com." in page

    async def test_status_page(self, stack: Stack) -> None:
        """The owner's status page shows the hostile name escaped."""
        await self.hostile_device(stack)

        page = await (await stack.client.get("/.gatehouse/", headers=stack.headers(f"bob+{HOSTILE}@example.com", accept=HTML))).text()

        assert HOSTILE not in page
        assert f'<h2 id="device-0">{ESCAPED}</h2>' in page

    async def test_fleet_page_and_csv(self, stack: Stack) -> None:
        """The fleet page escapes the name, and the CSV defuses spreadsheet formulas."""
        await stack.ingest(mac_item("C02EVIL", at=stack.clock(), hostname=HOSTILE, owner=f"bob+{HOSTILE}@example.com"),
                           mac_item("C02FORMULA", at=stack.clock(), hostname="=HYPERLINK(\"http://evil.example\")"))

        page = await (await stack.client.get("/.gatehouse/admin/devices", headers=stack.reviewer(HTML))).text()
        rows = list(csv.DictReader(io.StringIO(await (await stack.client.get(
            "/.gatehouse/admin/devices?format=csv", headers=stack.reviewer())).text())))

        assert HOSTILE not in page
        assert f"<strong>{ESCAPED}</strong>" in page and f"<li>bob+{ESCAPED}@example.com</li>" in page
        assert {"'=HYPERLINK(\"http://evil.example\")", HOSTILE} == {r["hostname"] for r in rows}

    async def test_hostile_serial_claim_is_an_unknown_device(self, stack: Stack) -> None:
        """A serial that is markup is never accepted as a device, and never echoed into the page."""
        response = await stack.client.get("/wiki/", headers=stack.headers(device="<img src=x onerror=alert(1)>", accept=HTML))

        assert (403, "device-unknown") == (response.status, response.headers["X-Gatehouse-Denied-Reason"])
        assert "<img" not in await response.text()

    async def test_hostile_request_target_in_the_check_again_form(self, stack: Stack) -> None:
        """A request target that tries to close the form's attribute stays inside it, escaped."""
        url = URL(str(stack.client.make_url("")).rstrip("/") + f"/wiki/x?q=\">{HOSTILE}", encoded=True)

        response = await stack.client.session.get(url, headers=stack.headers(device="C02NOTENROLLED", accept=HTML))
        page = await response.text()

        assert 403 == response.status
        assert HOSTILE not in page
        assert f'name="return_to" value="/wiki/x?q=&quot;&gt;{ESCAPED}"' in page


PORT_HOST = "wiki.corp:8443"


@pytest.fixture
async def port_stack(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    """A full Gatehouse whose `wiki.corp:8443` has its own high-tier `/wiki` route, next to the medium one for any host."""
    upstream = Upstream()
    server_url = await catch_all_upstream(aiohttp_server, upstream.handle)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    url = server_url
    settings = gatehouse_settings(
        keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=url,
        extra_routes=[{"id": "wiki-8443", "host": PORT_HOST, "path_prefix": "/wiki", "upstream": url, "tier": "high"}],
    )
    client = await aiohttp_client(create_app(settings, clock=clock))
    yield Stack(client, upstream, keys, clock)


class TestCheckAgainRoute:
    async def test_decides_for_the_port_specific_route_the_proxy_chose(self, port_stack: Stack) -> None:
        """ "Check again" on a host with a port-specific route decides for that route, as the proxy does, not for the any-port one."""
        stack = port_stack
        await stack.ingest(mac_item("C02NOSIP", at=stack.clock(), sip_enabled=False))
        on_port = {**stack.headers(device="C02NOSIP", accept=HTML), "Host": PORT_HOST}
        denial = await stack.client.get("/wiki/doc", headers=on_port)
        page = await denial.text()
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert 403 == denial.status and found is not None

        response = await stack.client.post(
            "/.gatehouse/recheck", data={"return_to": "/wiki/doc", "csrf_token": found.group(1)},
            headers={**on_port, **JSON, "Origin": f"http://{PORT_HOST}"}, allow_redirects=False,
        )
        body = await response.json()

        assert (403, "checks-failed", None) == (response.status, body["code"], response.headers.get("Location"))
        assert ("wiki-8443", "high") == (body["service"]["route"], body["tier"]["name"])
        assert [] == stack.upstream.paths
