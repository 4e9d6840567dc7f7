"""Freshness the user can see, for connector-fed devices, through the production listener.

A full Gatehouse (SQLite store, ES256 user tokens) polls a Fleet or Jamf Pro contract server
(contract.py). The denial and the status page name the vendor and the age of its data; "I fixed
it, check again" reads the one device from the vendor before deciding, so a device fixed at the
vendor is let in without waiting for the next poll; a vendor that cannot be read is named and the
decision uses what Gatehouse has. The clock is a MovableClock; nothing sleeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.keys import CONNECTORS
from tests.gateway.fullstack import Keys, MovableClock
from tests.gateway.ingest.connectors.conftest import Serve
from tests.gateway.ingest.connectors.contract import Failure, VendorState, fleet_app, jamf_app
from tests.gateway.ingest.connectors.freshness import (
    FLEET_SERIAL,
    JAMF_SERIAL,
    connector_gatehouse,
    failing_fleet_host,
    failing_jamf_computer,
    fix_fleet_host,
    fix_jamf_computer,
)
from tests.gateway.ingest.support import UNUSED_UPSTREAM

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}

@dataclass
class Stack:
    """Gatehouse with one connector, its contract server's state and hosts, the IdP key and the clock."""

    client: TestClient
    vendor: VendorState
    records: list[dict[str, Any]]
    keys: Keys
    clock: MovableClock

    def headers(self, device: str, accept: dict[str, str] = JSON) -> dict[str, str]:
        token = self.keys.token("ana@corp.example", device=device, now=self.clock())
        return {"Authorization": f"Bearer {token}", **accept}

    async def poll(self) -> None:
        """One pass of the connector, as its schedule would run it."""
        for runner in self.client.app[CONNECTORS].values():  # type: ignore[index]
            assert "success" == await runner.sync_once()

    async def check_again(self, device: str, accept: dict[str, str] = JSON) -> Any:
        page = await (await self.client.get("/public/", headers=self.headers(device, HTML))).text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None, page
        return await self.client.post(
            "/.gatehouse/recheck", data={"return_to": "/public/", "csrf_token": token.group(1)},
            headers={**self.headers(device, accept), "Origin": str(self.client.make_url("")).rstrip("/")},
            allow_redirects=False,
        )


MakeStack = Callable[[str], Awaitable[Stack]]


@pytest.fixture
def make_stack(aiohttp_client: Any, serve: Serve, vendor: VendorState, tmp_path: Path) -> MakeStack:
    async def make(kind: str) -> Stack:
        clock = MovableClock()
        keys = Keys(tmp_path / "keys")
        if kind == "fleet":
            records = [failing_fleet_host(clock())]
            url = await serve(fleet_app(vendor, records))
        else:
            records = [failing_jamf_computer(clock())]
            url = await serve(jamf_app(vendor, records))
        settings = connector_gatehouse(keys, tmp_path, kind=kind, url=url, upstream=UNUSED_UPSTREAM)
        stack = Stack(await aiohttp_client(create_app(settings, clock=clock)), vendor, records, keys, clock)
        await stack.poll()
        return stack

    return make


class TestDenialNamesTheSource:
    async def test_a_fleet_fed_denial_names_fleet_and_its_age(self, make_stack: MakeStack) -> None:
        """problem+json names Fleet, how old its data is, and how soon a refetch lands."""
        stack = await make_stack("fleet")

        response = await stack.client.get("/public/", headers=stack.headers(FLEET_SERIAL))
        body = await response.json()

        assert (403, "checks-failed") == (response.status, body["code"])
        assert ("fleet:corp", "Fleet, from 5 minutes ago") == (body["device"]["source"], body["device"]["reported_by"])
        assert {"vendor": "Fleet", "asked": False, "unreachable": False} == {k: body["recheck"]["source"][k] for k in ("vendor", "asked", "unreachable")}
        assert "typically within a few minutes while the device is online" in body["recheck"]["source"]["text"]

    async def test_a_jamf_fed_denial_says_how_jamf_inventory_updates(self, make_stack: MakeStack) -> None:
        """The HTML denial names Jamf Pro's inventory age and says when Jamf Pro sees a change."""
        stack = await make_stack("jamf")

        page = await (await stack.client.get("/public/", headers=stack.headers(JAMF_SERIAL, HTML))).text()

        assert "Jamf Pro, inventory from 3 hours ago" in page
        assert "Jamf&#x27;s default is once a week" in page or "Jamf's default is once a week" in page
        assert "sudo jamf recon" in page

    async def test_the_status_page_names_the_source(self, make_stack: MakeStack) -> None:
        """The user's status page says which system reported the device and when."""
        stack = await make_stack("jamf")

        status = await (await stack.client.get("/.gatehouse/", headers=stack.headers(JAMF_SERIAL))).json()
        page = await (await stack.client.get("/.gatehouse/", headers=stack.headers(JAMF_SERIAL, HTML))).text()

        assert [("jamf:macs", "Jamf Pro, inventory from 3 hours ago")] == [(d["source"], d["reported_by"]) for d in status["devices"]]
        assert "Reported by" in page and "Jamf Pro, inventory from 3 hours ago" in page


class TestCheckAgainAsksTheVendor:
    async def test_a_fleet_host_fixed_at_the_vendor_is_allowed_without_waiting_for_the_next_poll(self, make_stack: MakeStack) -> None:
        """Check again refetches the host from Fleet and stores it, and the same request is let through."""
        stack = await make_stack("fleet")
        fix_fleet_host(stack.records[0], stack.clock())

        response = await stack.check_again(FLEET_SERIAL)

        assert (303, "/public/") == (response.status, response.headers["Location"])
        asked = [(m, p) for m, p, _ in stack.vendor.requests if "/hosts/" in p]
        assert [("GET", f"/api/v1/fleet/hosts/identifier/{FLEET_SERIAL}"), ("POST", "/api/v1/fleet/hosts/1/refetch"),
                ("GET", "/api/v1/fleet/hosts/1/device_mapping")] == asked

    async def test_a_jamf_computer_fixed_at_the_vendor_is_allowed_without_waiting_for_the_next_poll(self, make_stack: MakeStack) -> None:
        """Check again reads the one computer from Jamf Pro and the request is let through."""
        stack = await make_stack("jamf")
        fix_jamf_computer(stack.records[0], stack.clock())

        response = await stack.check_again(JAMF_SERIAL)

        assert (303, "/public/") == (response.status, response.headers["Location"])
        filters = [parse_qs(q).get("filter") for _, p, q in stack.vendor.requests if p == "/api/v1/computers-inventory"]
        assert [f'hardware.serialNumber=="{JAMF_SERIAL}"'] in filters

    async def test_a_device_still_failing_at_the_vendor_says_the_vendor_was_asked(self, make_stack: MakeStack) -> None:
        """When the vendor still reports the problem, the page says it asked just now and how soon its data changes."""
        stack = await make_stack("jamf")

        response = await stack.check_again(JAMF_SERIAL)
        body = await response.json()

        assert (403, True, False) == (response.status, body["recheck"]["source"]["asked"], body["recheck"]["source"]["unreachable"])
        assert body["recheck"]["source"]["text"].startswith(
            "Gatehouse just asked Jamf Pro for this device's newest data (Jamf Pro, inventory from 3 hours ago)")

    async def test_an_unreachable_vendor_is_named_and_the_stored_snapshot_decides(self, make_stack: MakeStack) -> None:
        """A vendor failing on check again is named on the page; the decision uses the snapshot Gatehouse had."""
        stack = await make_stack("fleet")
        fix_fleet_host(stack.records[0], stack.clock())
        stack.vendor.fail(f"/api/v1/fleet/hosts/identifier/{FLEET_SERIAL}", Failure(503))

        response = await stack.check_again(FLEET_SERIAL)
        body = await response.json()

        assert (403, "checks-failed") == (response.status, body["code"])
        assert (False, True) == (body["recheck"]["source"]["asked"], body["recheck"]["source"]["unreachable"])
        assert body["recheck"]["source"]["text"].startswith(
            "Gatehouse could not reach Fleet just now, so this decision uses the data it already had (Fleet, from 5 minutes ago)")
