"""The JSON snapshot API over real HTTP: auth, batches, per-item errors, limits, idempotency, Stethoscope."""

from __future__ import annotations

import asyncio
import copy
import gzip
import io
import itertools
import tracemalloc
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.ingest.pipeline import CHUNK_ITEMS
from policy_engine.model import DeviceSnapshot, OsFamily, Version
from tests.gateway.ingest.conftest import Ingest, StartIngest
from tests.gateway.ingest.support import API_TOKEN

PATH = "/.gatehouse/api/v1/snapshots"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def item(serial: str = "C02XK0AAJGH6", *, collected_at: str = "2026-11-22T14:05:00Z", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "serial": serial,
        "collected_at": collected_at,
        "platform": "darwin",
        "os_name": "macOS",
        "os_version": "15.6",
        "os_build": "24G84",
        "hostname": "bobs-mbp",
        "owners": ["Bob@Example.com"],
        "agent_name": "kolide",
        "agent_version": "1.5.3",
        "firewall_enabled": True,
        "disk_encrypted": True,
        "screen_lock_enabled": True,
        "screen_lock_delay_s": 300,
        "remote_login_enabled": False,
        "auto_updates_enabled": None,
        "sip_enabled": True,
        "gatekeeper_enabled": True,
        "custom": {"crowdstrike_running": True, "edr_version": "7.1"},
    }
    body.update(overrides)
    return body


async def send(ingest: Ingest, payload: object, *, status: int = 200, headers: Mapping[str, str] = AUTH) -> Any:
    response = await ingest.client.post(PATH, json=payload, headers=headers)
    assert status == response.status, await response.text()
    return await response.json()


class TestAuth:
    async def test_missing_token_is_401(self, ingest: Ingest) -> None:
        """Without a bearer token nothing is read and the answer names the header to send."""
        response = await ingest.client.post(PATH, json={"snapshots": [item()]})

        assert 401 == response.status
        assert "Bearer" in response.headers["WWW-Authenticate"]
        assert None is ingest.cache.get("C02XK0AAJGH6")

    async def test_wrong_token_is_401(self, ingest: Ingest) -> None:
        """An unknown token is refused like a missing one."""
        await send(ingest, {"snapshots": [item()]}, status=401, headers={"Authorization": "Bearer nope"})

    async def test_no_configured_tokens_closes_the_api(self, start_ingest: StartIngest) -> None:
        """With no api_tokens configured every request is refused."""
        ingest = await start_ingest(api_tokens=[])

        response = await ingest.client.post(PATH, json={"snapshots": [item()]}, headers={"Authorization": "Bearer "})

        assert 401 == response.status


class TestBatches:
    async def test_batch_is_stored_cached_and_counted(self, ingest: Ingest) -> None:
        """Every good item is stored before the 200, is in the cache at once, and is counted."""
        body = await send(ingest, {"snapshots": [item(), item("PF3ABCDE", platform="linux", os_name="Ubuntu", distribution="Ubuntu")]})

        held = ingest.cache.get("C02XK0AAJGH6")
        assert {"results": [
            {"index": 0, "serial": "C02XK0AAJGH6", "outcome": "stored"},
            {"index": 1, "serial": "PF3ABCDE", "outcome": "stored"},
        ], "stored": 2, "rejected": 0} == body
        assert held == await ingest.store.latest("C02XK0AAJGH6")
        assert (OsFamily.DARWIN, Version.parse("15.6"), ("bob@example.com",), None, ingest.clock()) == (
            held.platform, held.os_version, held.owners, held.auto_updates_enabled, held.received_at)  # type: ignore[union-attr]
        assert {"crowdstrike_running": True, "edr_version": "7.1"} == dict(held.custom)  # type: ignore[union-attr]
        assert "ubuntu" == ingest.cache.get("PF3ABCDE").distribution  # type: ignore[union-attr]
        assert 2.0 == ingest.metrics.registry.get_sample_value("gatehouse_snapshot_ingests_total", {"source": "api", "outcome": "stored"})
        assert 2.0 == ingest.metrics.registry.get_sample_value("gatehouse_snapshots_held")

    async def test_bare_array_is_a_batch(self, ingest: Ingest) -> None:
        """A JSON array of items is accepted as well as {"snapshots": [...]}."""
        body = await send(ingest, [item()])

        assert 1 == body["stored"]

    async def test_resending_is_idempotent(self, ingest: Ingest) -> None:
        """The same (serial, collected_at) again is a duplicate; an earlier one is older-than-latest."""
        await send(ingest, {"snapshots": [item()]})

        body = await send(ingest, {"snapshots": [item(disk_encrypted=False), item(collected_at="2026-11-22T14:00:00Z")]})

        assert ["duplicate", "older-than-latest"] == [r["outcome"] for r in body["results"]]
        assert True is ingest.cache.get("C02XK0AAJGH6").disk_encrypted  # type: ignore[union-attr]

    async def test_bad_items_are_named_and_good_ones_stored(self, ingest: Ingest) -> None:
        """Malformed items get errors naming each field and what was expected; the good items are stored."""
        bad = item("BAD1", platform="beos", disk_encrypted="yes", os_version="fourteen", owners="bob", colour="red")
        del bad["collected_at"]
        batch = {"snapshots": [item("GOOD1"), bad, "not an object", item("GOOD2")]}

        body = await send(ingest, batch)

        assert ["stored", "rejected", "rejected", "stored"] == [r["outcome"] for r in body["results"]]
        fields = {e["field"]: e["expected"] for e in body["results"][1]["errors"]}
        assert {
            "snapshots[1].collected_at", "snapshots[1].platform", "snapshots[1].disk_encrypted",
            "snapshots[1].os_version", "snapshots[1].owners", "snapshots[1].colour",
        } == set(fields)
        assert "true, false or null" == fields["snapshots[1].disk_encrypted"]
        assert "one of `darwin`, `linux`, `windows`" == fields["snapshots[1].platform"]
        assert [{"field": "snapshots[2]", "expected": "an object with serial, collected_at, platform and facts"}] == body["results"][2]["errors"]
        assert (True, True, None) == ("GOOD1" in ingest.cache, "GOOD2" in ingest.cache, ingest.cache.get("BAD1"))
        assert 2.0 == ingest.metrics.registry.get_sample_value("gatehouse_snapshot_ingests_total", {"source": "api", "outcome": "rejected"})

    @pytest.mark.parametrize("serial", ["0", "To Be Filled By O.E.M.", "System Serial Number", "Default string", "", 42,
                                        "C02\x00XK", "C02XK\nAAJ", "C02XK0AAJG" * 1_000])
    async def test_placeholder_serial_is_rejected(self, ingest: Ingest, serial: object) -> None:
        """An empty, numeric, placeholder, control-character or overlong serial is a per-item error on `serial`."""
        body = await send(ingest, {"snapshots": [item(serial)]})  # type: ignore[arg-type]

        assert ["snapshots[0].serial"] == [e["field"] for e in body["results"][0]["errors"]]

    async def test_future_beyond_skew_is_rejected(self, ingest: Ingest) -> None:
        """A snapshot from further in the future than the allowed skew is rejected; within the skew it is kept."""
        now = ingest.clock()
        within = (now + timedelta(minutes=4)).isoformat()
        beyond = (now + timedelta(minutes=6)).isoformat()

        body = await send(ingest, {"snapshots": [item("NEAR1", collected_at=within), item("FAR1", collected_at=beyond)]})

        assert ["stored", "rejected"] == [r["outcome"] for r in body["results"]]
        assert "in the future" in body["results"][1]["errors"][0]["expected"]
        assert "snapshots[1].collected_at" == body["results"][1]["errors"][0]["field"]

    async def test_epoch_seconds_are_accepted(self, ingest: Ingest) -> None:
        """collected_at may be epoch seconds, as a number or digits."""
        body = await send(ingest, {"snapshots": [item("E1", collected_at=1795356300), item("E2", collected_at="1795356300")]})

        assert 2 == body["stored"]
        assert ingest.cache.get("E1").collected_at == ingest.cache.get("E2").collected_at  # type: ignore[union-attr]

    async def test_naive_time_is_rejected(self, ingest: Ingest) -> None:
        """A time without an offset is ambiguous and refused."""
        body = await send(ingest, {"snapshots": [item(collected_at="2026-11-22T14:05:00")]})

        assert "snapshots[0].collected_at" == body["results"][0]["errors"][0]["field"]


def offset_time(moment: datetime, offset_minutes: int) -> str:
    return moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()


TIMES = st.builds(offset_time, st.datetimes(), st.integers(-1439, 1439)) | st.sampled_from(
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2026-02-30T00:00:00Z"]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | TIMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
ITEM_FIELDS = st.sampled_from(sorted(item()) + ["colour", "data", "snapshots"])
DEVICE_FIELDS = st.sampled_from(["hardwareSerial", "platform", "osVersion", "stethoscopeVersion", "osName",
                                 "deviceName", "osBuild", "platformName", "security"])
_fuzz_serials = itertools.count()


class TestHostileItems:
    @pytest.mark.parametrize("collected_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00"])
    async def test_a_time_outside_the_calendar_is_that_items_error(self, ingest: Ingest, collected_at: str) -> None:
        """A time with no UTC equivalent is the item's collected_at error; the good items of the batch are stored."""
        body = await send(ingest, {"snapshots": [item("GOOD1"), item("BAD1", collected_at=collected_at), item("GOOD2")]})

        assert ["stored", "rejected", "stored"] == [r["outcome"] for r in body["results"]]
        assert ["snapshots[1].collected_at"] == [e["field"] for e in body["results"][1]["errors"]]
        assert {"GOOD1", "GOOD2"} == {s for s in ("GOOD1", "GOOD2", "BAD1") if s in ingest.cache}

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(field=st.just("collected_at"), value=TIMES)
    async def test_any_time_is_that_items_outcome(self, ingest: Ingest, field: str, value: str) -> None:
        """Any time text, from year 1 to 9999 with any offset, gives that item's outcome, never a 500."""
        await assert_only_that_item_is_affected(ingest, field, value)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(field=ITEM_FIELDS | DEVICE_FIELDS.map(lambda f: f"device.{f}"), value=JSON_VALUES)
    async def test_any_value_in_any_field_is_that_items_outcome(self, ingest: Ingest, field: str, value: object) -> None:
        """Any JSON value in any field of one item (ours or Stethoscope's) gives that item's outcome, never a 500; the others are stored."""
        await assert_only_that_item_is_affected(ingest, field, value)


async def assert_only_that_item_is_affected(ingest: Ingest, field: str, value: object) -> None:
    """Send good, hostile (``field`` set to ``value``; ``device.x`` in a Stethoscope item), good: only the middle may be refused."""
    n = next(_fuzz_serials)
    if field.startswith("device."):
        hostile: dict[str, Any] = copy.deepcopy(TestStethoscope.STETHOSCOPE)
        hostile["data"]["device"]["hardwareSerial"] = f"FUZZ{n}"
        hostile["data"]["device"][field.removeprefix("device.")] = value
    else:
        hostile = item(f"FUZZ{n}")
        hostile[field] = value

    response = await ingest.client.post(PATH, json={"snapshots": [item(f"GOOD{n}A"), hostile, item(f"GOOD{n}B")]}, headers=AUTH)

    assert 200 == response.status, await response.text()
    results = (await response.json())["results"]
    assert ["stored", "stored"] == [results[0]["outcome"], results[2]["outcome"]]
    assert results[1]["outcome"] in ("stored", "duplicate", "older-than-latest", "rejected")
    if results[1]["outcome"] == "rejected":
        assert results[1]["errors"] and all(e["field"].startswith("snapshots[1]") for e in results[1]["errors"])


class TestLimits:
    async def test_oversize_body_is_413(self, ingest: Ingest) -> None:
        """A body over max_body_bytes is refused with 413 before parsing; nothing is stored."""
        batch = {"snapshots": [item(f"S{i:05d}", custom={"pad": "x" * 200}) for i in range(1000)]}

        response = await ingest.client.post(PATH, data=orjson.dumps(batch), headers={**AUTH, "Content-Type": "application/json"})

        assert 413 == response.status
        assert 0 == len(ingest.cache)

    async def test_gzip_that_inflates_past_the_limit_is_413(self, ingest: Ingest) -> None:
        """The limit applies to the inflated body, so a small gzip bomb is a 413 that names the limit."""
        bomb = gzip.compress(b'{"snapshots": [' + b" " * (2 * 1024 * 1024) + b"]}")

        response = await ingest.client.post(PATH, data=bomb, headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"})

        assert len(bomb) < 10_000
        assert 413 == response.status
        assert "`ingest.max_body_bytes` (262144 bytes)" in (await response.json())["detail"]

    async def test_gzip_bomb_is_never_inflated_in_memory(self, ingest: Ingest) -> None:
        """A bomb inflating to 64 MiB is refused after at most the limit is inflated: memory stays far below its size."""
        bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]", compresslevel=9)
        tracemalloc.start()
        try:
            response = await ingest.client.post(PATH, data=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert 413 == response.status
        assert peak < 16 * 1024 * 1024

    async def test_gzip_batch_is_read(self, ingest: Ingest) -> None:
        """A gzip-encoded batch is read like a plain one, also when it is sent chunked."""

        async def chunked() -> AsyncIterator[bytes]:
            body = gzip.compress(orjson.dumps([item("CHUNKED1")]))
            for start in range(0, len(body), 7):
                yield body[start : start + 7]

        response = await ingest.client.post(
            PATH, data=gzip.compress(orjson.dumps([item()])), headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}
        )
        streamed = await ingest.client.post(PATH, data=chunked(), headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"})

        assert (200, 1) == (response.status, (await response.json())["stored"])
        assert (200, 1) == (streamed.status, (await streamed.json())["stored"])

    @pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "gzip, gzip"])
    async def test_unknown_encoding_is_415_naming_gzip_and_identity(self, ingest: Ingest, encoding: str) -> None:
        """A Content-Encoding other than gzip or identity is a 415 that says which encodings are accepted; nothing is stored."""
        response = await ingest.client.post(PATH, data=orjson.dumps([item()]), headers={**AUTH, "Content-Encoding": encoding})

        assert 415 == response.status
        assert "send `gzip` or `identity`" in (await response.json())["detail"]
        assert 0 == len(ingest.cache)

    async def test_identity_encoding_is_a_plain_body(self, ingest: Ingest) -> None:
        """`Content-Encoding: identity` is the body as sent."""
        response = await ingest.client.post(PATH, data=orjson.dumps([item()]), headers={**AUTH, "Content-Encoding": "identity"})

        assert (200, 1) == (response.status, (await response.json())["stored"])

    async def test_too_many_items_is_413(self, start_ingest: StartIngest) -> None:
        """More items than max_batch_items is refused as a whole."""
        ingest = await start_ingest(max_batch_items=2)

        response = await ingest.client.post(PATH, json=[item("A1"), item("A2"), item("A3")], headers=AUTH)

        assert 413 == response.status

    @pytest.mark.parametrize("data", [b"{not json", b'{"snapshots": 3}', b'"text"'])
    async def test_malformed_body_is_400(self, ingest: Ingest, data: bytes) -> None:
        """A body that is not a JSON batch is a 400 that says what to send."""
        response = await ingest.client.post(PATH, data=data, headers={**AUTH, "Content-Type": "application/json"})

        assert 400 == response.status
        assert "send" in (await response.json())["detail"]


async def largest_step(ingest: Ingest, batch: list[dict[str, Any]], outcome: str) -> tuple[int, float]:
    """POST ``batch`` while another task counts ``outcome`` items between its turns; (largest step, final count).

    The counter task runs once per event-loop turn, so the largest step is the most items the
    request handled without letting another callback run.
    """
    labels = {"source": "api", "outcome": outcome}

    def count() -> float:
        samples = (s for m in ingest.metrics.ingests.collect() for s in m.samples)
        return next((s.value for s in samples if s.name.endswith("_total") and s.labels == labels), 0.0)

    body = io.BytesIO(orjson.dumps(batch))
    posting = asyncio.create_task(ingest.client.post(PATH, data=body, headers={**AUTH, "Content-Type": "application/json"}))
    seen = [0.0]
    while not posting.done():
        seen.append(count())
        await asyncio.sleep(0)
    response = await posting
    assert 200 == response.status, await response.text()
    return int(max(b - a for a, b in itertools.pairwise(seen))), seen[-1]


class TestLargeBatches:
    async def test_parsing_a_large_batch_lets_other_callbacks_run_between_chunks(self, start_ingest: StartIngest) -> None:
        """While 3,000 items are checked, the event loop runs other callbacks at least every CHUNK_ITEMS items."""
        ingest = await start_ingest(max_body_bytes=4 * 1024 * 1024)
        batch = [item(f"BIG{i:05d}", platform="beos") for i in range(3000)]

        step, total = await largest_step(ingest, batch, "rejected")

        assert 3000.0 == total
        assert step <= CHUNK_ITEMS

    async def test_applying_a_large_batch_lets_other_callbacks_run_between_chunks(self, start_ingest: StartIngest) -> None:
        """After the store answers for 3,000 items, cache and history are updated with a pause at least every CHUNK_ITEMS items."""
        ingest = await start_ingest(max_body_bytes=4 * 1024 * 1024, recorder=lambda snapshot: None)
        batch = [item(f"BIG{i:05d}") for i in range(3000)]
        await largest_step(ingest, batch, "stored")

        step, total = await largest_step(ingest, batch, "duplicate")

        assert 3000.0 == total
        assert step <= CHUNK_ITEMS


class TestStethoscope:
    STETHOSCOPE = {
        "data": {
            "device": {
                "deviceId": "abc",
                "deviceName": "bobs-mbp",
                "platform": "darwin",
                "platformName": "macOS",
                "osVersion": "15.6",
                "hardwareSerial": "C02XK0AAJGH6",
                "stethoscopeVersion": "7.1.0",
            },
            "policy": {
                "validate": {
                    "status": "FAIL",
                    "osVersion": "PASS",
                    "firewall": "PASS",
                    "diskEncryption": "FAIL",
                    "screenLock": "UNKNOWN",
                    "remoteLogin": "PASS",
                    "automaticUpdates": "NUDGE",
                }
            },
        },
        "owner": "bob@example.com",
        "collected_at": "2026-11-22T14:05:00Z",
    }

    async def test_stethoscope_result_in_a_batch(self, ingest: Ingest) -> None:
        """A Stethoscope GraphQL device/policy result is stored as a snapshot from `stethoscope`."""
        body = await send(ingest, {"snapshots": [self.STETHOSCOPE]})

        held = ingest.cache.get("C02XK0AAJGH6")
        assert 1 == body["stored"]
        assert ("stethoscope", "stethoscope", Version.parse("7.1"), ("bob@example.com",)) == (held.source, held.agent_name, held.agent_version, held.owners)  # type: ignore[union-attr]
        assert (True, False, None, False, False) == (
            held.firewall_enabled, held.disk_encrypted, held.screen_lock_enabled, held.remote_login_enabled, held.auto_updates_enabled)  # type: ignore[union-attr]
        assert {"stethoscope_status": "FAIL", "stethoscope_os_version": "PASS"} == dict(held.custom)  # type: ignore[union-attr]
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_snapshot_ingests_total", {"source": "stethoscope", "outcome": "stored"})

    async def test_whole_graphql_answer_as_the_body(self, ingest: Ingest) -> None:
        """A Stethoscope answer posted as the body itself is one item."""
        payload = {"data": {"device": {"platform": "win32", "osVersion": "10.0.19045", "hardwareSerial": "5CG1234XYZ"},
                            "policy": {"validate": {"firewall": "FAIL", "remoteLogin": "FAIL"}}}}

        await send(ingest, payload)

        held = ingest.cache.get("5CG1234XYZ")
        assert (OsFamily.WINDOWS, False, True) == (held.platform, held.firewall_enabled, held.remote_login_enabled)  # type: ignore[union-attr]

    async def test_stethoscope_result_dated_ahead_is_rejected(self, ingest: Ingest) -> None:
        """A Stethoscope scan dated beyond ingest.max_future_skew_s is refused by the same rule as the API's items."""
        payload = copy.deepcopy(self.STETHOSCOPE)
        payload["collected_at"] = (ingest.clock() + timedelta(days=3652)).isoformat()

        body = await send(ingest, {"snapshots": [payload]})

        assert "snapshots[0].collected_at" == body["results"][0]["errors"][0]["field"]
        assert "in the future" in body["results"][0]["errors"][0]["expected"]

    async def test_stethoscope_without_serial_names_the_field(self, ingest: Ingest) -> None:
        """A Stethoscope device without any serial is rejected on hardwareSerial."""
        payload = {"data": {"device": {"platform": "darwin"}}}

        body = await send(ingest, {"snapshots": [payload]})

        assert ["snapshots[0].data.device.hardwareSerial"] == [e["field"] for e in body["results"][0]["errors"]]


class TestComplianceRecorder:
    async def test_recorder_results_become_history_and_failing_since(self, start_ingest: StartIngest) -> None:
        """Stored snapshots' pass/fail maps are recorded when they change; a failing check gets its first failing time."""
        seen: list[DeviceSnapshot] = []

        def recorder(snapshot: DeviceSnapshot) -> Mapping[str, bool]:
            seen.append(snapshot)
            return {"disk-encrypted": bool(snapshot.disk_encrypted), "firewall": bool(snapshot.firewall_enabled)}

        ingest = await start_ingest(recorder=recorder)
        client, cache, store, clock = ingest.client, ingest.cache, ingest.store, ingest.clock
        await client.post(PATH, json=[item(disk_encrypted=False)], headers=AUTH)
        failing_in_memory = dict(cache.failing_since("C02XK0AAJGH6"))
        await client.post(PATH, json=[item(disk_encrypted=False)], headers=AUTH)  # duplicate: not recorded again
        await client.post(PATH, json=[item(collected_at="2026-11-22T14:10:00Z", disk_encrypted=True)], headers=AUTH)
        await client.post(PATH, json=[item(collected_at="2026-11-22T14:15:00Z", disk_encrypted=True)], headers=AUTH)  # unchanged: throttled

        history = [(e.serial, e.owners, e.results) async for e in store.iter_history(since=clock() - timedelta(days=1))]
        assert 3 == len(seen)
        assert [
            ("C02XK0AAJGH6", ("bob@example.com",), {"disk-encrypted": False, "firewall": True}),
            ("C02XK0AAJGH6", ("bob@example.com",), {"disk-encrypted": True, "firewall": True}),
        ] == history
        assert {"disk-encrypted": datetime(2026, 11, 22, 14, 5, tzinfo=UTC)} == failing_in_memory
        assert ({}, {}) == (dict(await store.failing_since("C02XK0AAJGH6")), dict(cache.failing_since("C02XK0AAJGH6")))

    async def test_recorder_error_keeps_the_snapshot(self, start_ingest: StartIngest) -> None:
        """A recorder that raises does not undo or fail the ingest."""

        def recorder(snapshot: DeviceSnapshot) -> Mapping[str, bool]:
            raise RuntimeError("policy bug")

        ingest = await start_ingest(recorder=recorder)

        response = await ingest.client.post(PATH, json=[item()], headers=AUTH)

        assert (200, True) == (response.status, "C02XK0AAJGH6" in ingest.cache)


class TestStoreFailure:
    async def test_batch_is_503_and_not_acknowledged_when_the_store_fails(self, ingest: Ingest) -> None:
        """A store failure answers 503 and nothing of the batch is reported stored or cached."""
        await ingest.store.close()

        response = await ingest.client.post(PATH, json=[item()], headers=AUTH)

        assert (503, "5") == (response.status, response.headers.get("Retry-After"))
        assert "retry" in (await response.json())["detail"]
        assert None is ingest.cache.get("C02XK0AAJGH6")
        assert 1.0 == ingest.metrics.registry.get_sample_value("gatehouse_store_errors_total", {"operation": "put_snapshots"})


class TestCorruptBodies:
    async def test_corrupt_gzip_is_400(self, ingest: Ingest) -> None:
        """A body that claims gzip but is not is refused with 400, not a server error."""
        response = await ingest.client.post(PATH, data=b"\x1f\x8bnot really gzip" * 10, headers={**AUTH, "Content-Encoding": "gzip"})

        assert 400 == response.status

    async def test_truncated_gzip_is_400(self, ingest: Ingest) -> None:
        """A gzip body cut short is refused with 400 and nothing of it is stored."""
        body = gzip.compress(orjson.dumps([item()]))

        response = await ingest.client.post(PATH, data=body[: len(body) // 2], headers={**AUTH, "Content-Encoding": "gzip"})

        assert (400, "bad-encoding") == (response.status, (await response.json())["code"])
        assert 0 == len(ingest.cache)
