"""Metrics: the batched Tally gives exactly what prometheus-client's own calls give."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from gateway.metrics import Metrics


def _exposition(metrics: Metrics) -> list[str]:
    """Every sample line but the ``_created`` timestamps (they differ between two registries)."""
    return [line for line in generate_latest(metrics.registry).decode().splitlines() if "_created" not in line]


class TestTally:
    @settings(max_examples=60, deadline=None)
    @given(
        durations=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=30),
        routes=st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=30),
        in_flight=st.lists(st.sampled_from([1.0, -1.0]), max_size=20),
    )
    def test_same_samples_as_direct_calls(self, durations: list[float], routes: list[str], in_flight: list[float]) -> None:
        """Histogram buckets (bounds included), sums, counters and gauge deltas match observe/inc one by one."""
        direct, batched = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
        for value in durations + [0.0005, 0.001, 30.0]:  # values on bucket bounds land in that bucket
            direct.child(direct.request_duration, "a").observe(value)
            batched.tally.observe(batched.child(batched.request_duration, "a"), value)
        for route in routes:
            direct.child(direct.requests, route, "2xx").inc()
            batched.tally.add(batched.child(batched.requests, route, "2xx"))
        for delta in in_flight:
            direct.in_flight.inc(delta)
            batched.tally.add(batched.in_flight, delta)

        assert _exposition(direct) == _exposition(batched)

    def test_reading_a_sample_flushes_first(self) -> None:
        metrics = Metrics(CollectorRegistry())
        metrics.tally.add(metrics.child(metrics.requests, "r", "2xx"), 3)
        metrics.tally.observe(metrics.decision_duration, 2e-6)

        assert 3.0 == metrics.registry.get_sample_value("gatehouse_requests_total", {"route": "r", "code_class": "2xx"})
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_decision_duration_seconds_bucket", {"le": "2.5e-06"})
        assert 1.0 == metrics.registry.get_sample_value("gatehouse_decision_duration_seconds_count")

    def test_flushing_twice_adds_nothing(self) -> None:
        metrics = Metrics(CollectorRegistry())
        metrics.tally.add(metrics.in_flight, 2)
        metrics.tally.flush()
        metrics.tally.flush()

        assert 2.0 == metrics.registry.get_sample_value("gatehouse_requests_in_flight")
