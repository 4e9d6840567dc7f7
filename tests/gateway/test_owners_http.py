"""The owner inventory API through the production listener, and owner binding decided by the inventory."""

from __future__ import annotations

from gateway.gate import DEVICE_NOT_OWNED, DEVICE_UNOWNED
from tests.gateway.fullstack import ingest_headers, mac_item
from tests.gateway.test_gate import SERIAL, OwnedStack, enroll_healthy_osquery_laptop, owned_stack  # noqa: F401  (owned_stack is a fixture)

OWNERS = f"/.gatehouse/api/v1/devices/{SERIAL}/owners"


def reasons(*responses: object) -> list[tuple[int, str]]:
    return [(r.status, r.headers.get("X-Gatehouse-Denied-Reason", "")) for r in responses]  # type: ignore[attr-defined]


class TestOwnerApi:
    async def test_assigning_an_osquery_device_lets_its_owner_in_and_unassigning_shuts_it_again(self, owned_stack: OwnedStack) -> None:
        """PUT binds the owner (allowed, fast lane too); others are not-owned; DELETE makes it unowned at once, kept admission or not."""
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
