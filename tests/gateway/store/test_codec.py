"""The snapshot codec: what is decoded equals what was encoded, and equal values become one object."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.codec import SnapshotDecoder, decode_snapshot, encode_snapshot
from gateway.store.sqlite import SqliteStore
from tests.gateway.store.snapshots import T0, make_snapshot


class TestRoundTrip:
    def test_every_field_comes_back_equal(self) -> None:
        """A decoded snapshot equals the one encoded, times still in UTC."""
        snapshot = make_snapshot(owners=("bob@example.com", "ann@example.com"), screen_lock_delay_s=1800)

        decoded = decode_snapshot(encode_snapshot(snapshot))

        assert snapshot == decoded
        assert UTC == decoded.collected_at.tzinfo
        assert UTC == decoded.received_at.tzinfo

    @given(
        delay=st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)),
        received_after_us=st.integers(min_value=0, max_value=10**9),
        owners=st.lists(st.sampled_from(["a@x.example", "b@x.example", "c@x.example"]), max_size=3, unique=True),
    )
    def test_shared_values_decode_equal(self, delay: int | None, received_after_us: int, owners: list[str]) -> None:
        """Whatever the delay, times and owners, one decoder gives back equal snapshots, twice over."""
        snapshot = make_snapshot(
            screen_lock_delay_s=delay,
            received_at=T0 + timedelta(microseconds=received_after_us),
            collected_at=T0,
            owners=tuple(owners),
        )
        decoder = SnapshotDecoder()

        first = decoder.decode(encode_snapshot(snapshot))
        second = decoder.decode(encode_snapshot(snapshot))

        assert snapshot == first
        assert snapshot == second


class TestSharing:
    def test_received_when_collected_holds_one_datetime(self) -> None:
        """A snapshot received at the moment it was collected holds one datetime object for both."""
        snapshot = make_snapshot(received_at=T0, collected_at=T0)

        decoded = decode_snapshot(encode_snapshot(snapshot))

        assert decoded.collected_at is decoded.received_at

    def test_received_later_keeps_its_own_time(self) -> None:
        """A snapshot received after it was collected keeps both times."""
        snapshot = make_snapshot(collected_at=T0, received_at=T0 + timedelta(seconds=5))

        decoded = decode_snapshot(encode_snapshot(snapshot))

        assert T0 + timedelta(seconds=5) == decoded.received_at
        assert T0 == decoded.collected_at

    def test_equal_values_are_one_object_across_devices(self) -> None:
        """Two devices with the same owner, delay, versions and collection time share those objects."""
        decoder = SnapshotDecoder()
        a = decoder.decode(encode_snapshot(make_snapshot("SERIAL-A", screen_lock_delay_s=1800, collected_at=T0)))
        b = decoder.decode(encode_snapshot(make_snapshot("SERIAL-B", screen_lock_delay_s=1800, collected_at=T0)))

        assert a.owners is b.owners
        assert a.screen_lock_delay_s is b.screen_lock_delay_s
        assert a.os_version is b.os_version
        assert a.agent_version is b.agent_version
        assert a.collected_at is b.collected_at

    def test_different_owners_are_not_shared(self) -> None:
        """Devices of different owners, or of one owner and a co-owner, keep their own owner tuples."""
        decoder = SnapshotDecoder()

        alone = decoder.decode(encode_snapshot(make_snapshot("A", owners=("bob@example.com",))))
        shared = decoder.decode(encode_snapshot(make_snapshot("B", owners=("bob@example.com", "ann@example.com"))))
        other = decoder.decode(encode_snapshot(make_snapshot("C", owners=("ann@example.com",))))

        assert ("bob@example.com",) == alone.owners
        assert ("bob@example.com", "ann@example.com") == shared.owners
        assert ("ann@example.com",) == other.owners

    def test_after_a_batch_only_fleet_wide_values_stay_shared(self) -> None:
        """Once a batch is done the decoder keeps sharing versions but no longer holds owner tuples or times."""
        decoder = SnapshotDecoder()
        a = decoder.decode(encode_snapshot(make_snapshot("SERIAL-A", collected_at=T0)))

        decoder.forget_devices()
        b = decoder.decode(encode_snapshot(make_snapshot("SERIAL-B", collected_at=T0)))

        assert a.os_version is b.os_version
        assert a.owners is not b.owners
        assert a.collected_at is not b.collected_at
        assert (a.owners, a.collected_at) == (b.owners, b.collected_at)

    def test_a_full_memo_starts_over(self) -> None:
        """Past the memo limit the decoder still decodes equal values (it only stops sharing older ones)."""
        decoder = SnapshotDecoder()
        decoder._MEMO_LIMIT = 2
        snapshots = [make_snapshot(f"S{i}", owners=(f"u{i}@example.com",), screen_lock_delay_s=1000 + i, minutes=i) for i in range(5)]

        decoded = [decoder.decode(encode_snapshot(s)) for s in snapshots]

        assert snapshots == decoded


class TestBulkLoad:
    async def test_loaded_fleet_shares_owner_tuples_and_times(self, tmp_path: Path) -> None:
        """Loading from SQLite gives one owner tuple per owner and one datetime per collection time."""
        store = await SqliteStore.open(tmp_path / "gatehouse.db")
        try:
            await store.put_snapshots(
                [make_snapshot(f"S{i}", owners=("bob@example.com",), collected_at=T0, received_at=T0) for i in range(3)]
            )

            loaded = (await store.load_latest()).snapshots
        finally:
            await store.close()

        assert 1 == len({id(s.owners) for s in loaded})
        assert 1 == len({id(s.collected_at) for s in loaded} | {id(s.received_at) for s in loaded})
