"""The owner inventory API through the production listener, and owner binding decided by the inventory."""

from __future__ import annotations

from typing import Any

from gateway.gate.decide import DEVICE_NOT_OWNED, DEVICE_UNOWNED
from tests.gateway.fullstack import ingest_headers, mac_item
from tests.gateway.gate.test_decide import SERIAL, OwnedStack, enroll_healthy_osquery_laptop, owned_stack  # noqa: F401  (owned_stack is a fixture)

OWNERS = f"/.gatehouse/api/v1/devices/{SERIAL}/owners"


def reasons(*responses: object) -> list[tuple[int, str]]:
    return [(r.status, r.headers.get("X-Gatehouse-Denied-Reason", "")) for r in responses]  # type: ignore[attr-defined]


class TestOwnerApi:
    async def test_assigning_an_osquery_device_lets_its_owner_in_and_unassigning_shuts_it_again(self, owned_stack: OwnedStack) -> None:
        """PUT binds the owner (allowed, from memory too); others are not-owned; DELETE makes it unowned at once, kept admission or not."""
        client, upstream, keys, clock, _ = owned_stack
        await enroll_healthy_osquery_laptop(client)
        alice = {"Authorization": f"Bearer {keys.token('alice@example.com', device=SERIAL, now=clock())}"}
        bob = {"Authorization": f"Bearer {keys.token('bob@example.com', device=SERIAL, now=clock())}"}

        put = await client.put(OWNERS, json={"owners": ["Alice@Example.com"], "set_by": "jamf-sync"}, headers=ingest_headers())
        body = await put.json()
        allowed = await client.get("/owned/", headers=alice)
        refused = await client.get("/owned/", headers=bob)
        deleted = await client.delete(OWNERS, headers=ingest_headers())
        after = await client.get("/owned/", headers=alice)

        assert (200, ["alice@example.com"], "api:jamf-sync", "api") == (put.status, body["owners"], body["set_by"], body["source"])
        assert [(200, ""), (403, DEVICE_NOT_OWNED), (200, ""), (403, DEVICE_UNOWNED)] == reasons(allowed, refused, deleted, after)
        assert ["GET /owned/"] == upstream.paths

    async def test_reported_owners_do_not_bind_unless_trusted(self, owned_stack: OwnedStack) -> None:
        """A snapshot naming alice as owner does not make the device hers: the default trusts only the inventory."""
        client, upstream, keys, clock, _ = owned_stack
        response = await client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": [mac_item(SERIAL, at=clock(), owner="alice@example.com")]},
                                      headers=ingest_headers())
        alice = {"Authorization": f"Bearer {keys.token('alice@example.com', device=SERIAL, now=clock())}", "Accept": "application/json"}

        denied = await client.get("/owned/", headers=alice)

        assert 200 == response.status
        assert [(403, DEVICE_UNOWNED)] == reasons(denied)

    async def test_callers_without_an_ingest_token_or_with_bad_input_are_told_what_is_expected(self, owned_stack: OwnedStack) -> None:
        """No token is 401; a bad address or an empty list is 400 naming the field; an unknown serial's GET is 404."""
        client, *_ = owned_stack

        anonymous = await client.put(OWNERS, json={"owners": ["alice@example.com"]})
        bad_email = await client.put(OWNERS, json={"owners": ["alice"]}, headers=ingest_headers())
        empty = await client.put(OWNERS, json={"owners": []}, headers=ingest_headers())
        missing = await client.get(OWNERS, headers=ingest_headers())

        assert [401, 400, 400, 404] == [r.status for r in (anonymous, bad_email, empty, missing)]
        assert "owners: an email address such as `alice@corp.example`, not `alice`" in (await bad_email.json())["detail"]
        assert "send `DELETE`" in (await empty.json())["detail"]


REVIEWER_GROUPS = ("security",)
"""The groups `tests/gateway/fullstack.py` lets open the fleet view."""


async def bind(client: Any, serial: str, *owners: str) -> None:
    response = await client.put(f"/.gatehouse/api/v1/devices/{serial}/owners", json={"owners": list(owners)}, headers=ingest_headers())
    assert 200 == response.status, await response.text()


async def seed_owned_and_unowned(stack: OwnedStack) -> None:
    """An osquery laptop (no owner anywhere), a Mac whose snapshot names bob (untrusted), a serial the inventory binds to alice that never reported."""
    client, _, _, clock, _ = stack
    await enroll_healthy_osquery_laptop(client)
    response = await client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": [mac_item("C02BOBSAYS", at=clock(), owner="bob@example.com")]},
                                 headers=ingest_headers())
    assert 200 == response.status, await response.text()
    await bind(client, "C02ALICEINV", "alice@example.com")


class TestOwnerPages:
    async def test_the_fleet_filter_lists_the_devices_nobody_owns(self, owned_stack: OwnedStack) -> None:
        """`?unowned=1` keeps devices without an inventory entry (a snapshot's own owner does not count); binding one takes it off the list."""
        client, _, keys, clock, _ = owned_stack
        await seed_owned_and_unowned(owned_stack)
        rita = {"Authorization": f"Bearer {keys.token('rita@example.com', now=clock(), groups=REVIEWER_GROUPS)}"}

        before = await (await client.get("/.gatehouse/admin/devices?format=json&unowned=1", headers=rita)).json()
        everything = await (await client.get("/.gatehouse/admin/devices?format=json", headers=rita)).json()
        await bind(client, SERIAL, "alice@example.com")
        after = await (await client.get("/.gatehouse/admin/devices?format=json&unowned=1", headers=rita)).json()

        assert ({"unowned": "1"}, 3, sorted([SERIAL, "C02BOBSAYS"])) == (before["filter"], before["total"], sorted(d["serial"] for d in before["devices"]))
        assert {SERIAL: [], "C02BOBSAYS": [], "C02ALICEINV": ["alice@example.com"]} == {d["serial"]: d["owners"] for d in everything["devices"]}
        assert (False, ["C02BOBSAYS"]) == (next(d for d in everything["devices"] if d["serial"] == "C02ALICEINV")["enrolled"],
                                           [d["serial"] for d in after["devices"]])

    async def test_the_fleet_page_counts_and_marks_the_unowned(self, owned_stack: OwnedStack) -> None:
        """The HTML fleet page with `?unowned=1` says how many devices nobody owns, keeps the box ticked and lists only those."""
        client, _, keys, clock, _ = owned_stack
        await seed_owned_and_unowned(owned_stack)
        rita = {"Authorization": f"Bearer {keys.token('rita@example.com', now=clock(), groups=REVIEWER_GROUPS)}", "Accept": "text/html"}

        response = await client.get("/.gatehouse/admin/devices?unowned=1", headers=rita)
        page = await response.text()

        assert (200, "text/html") == (response.status, response.content_type)
        assert "3 devices, 2 non-compliant, 2 owned by nobody. 2 match the filters." in page
        assert 'name="unowned" value="1" checked' in page
        assert (True, True, False) == (SERIAL in page, "C02BOBSAYS" in page, "C02ALICEINV" in page)

    async def test_the_status_page_lists_the_devices_bound_to_the_user(self, owned_stack: OwnedStack) -> None:
        """Alice sees the serial the inventory binds to her (never reported yet) and, once bound, the osquery laptop; a snapshot naming bob does not put it on his page."""
        client, _, keys, clock, _ = owned_stack
        await seed_owned_and_unowned(owned_stack)

        async def serials(user: str) -> list[str]:
            token = keys.token(user, now=clock())
            response = await client.get("/.gatehouse/", headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            assert 200 == response.status
            return [d["serial"] for d in (await response.json())["devices"]]

        alice_before, bob_before = await serials("alice@example.com"), await serials("bob@example.com")
        await bind(client, SERIAL, "alice@example.com")
        await bind(client, "C02BOBSAYS", "bob@example.com")
        alice_after, bob_after = await serials("alice@example.com"), await serials("bob@example.com")

        assert (["C02ALICEINV"], []) == (alice_before, bob_before)
        assert (sorted(["C02ALICEINV", SERIAL]), ["C02BOBSAYS"]) == (alice_after, bob_after)

    async def test_the_status_page_says_a_bound_device_has_not_reported(self, owned_stack: OwnedStack) -> None:
        """The HTML status page shows a device bound to the user that never reported, as registered to them."""
        client, _, keys, clock, _ = owned_stack
        await bind(client, "C02ALICEINV", "alice@example.com")
        token = keys.token("alice@example.com", now=clock())

        response = await client.get("/.gatehouse/", headers={"Authorization": f"Bearer {token}", "Accept": "text/html"})
        page = await response.text()

        assert 200 == response.status
        assert "1 device registered to you." in page and "C02ALICEINV" in page
