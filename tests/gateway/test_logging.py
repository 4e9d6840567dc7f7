"""Logging: the one-pass JSON chain writes what structlog's processors one after another would write."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.logging import EventWriter, configure_logging, iso_utc

_REFERENCE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    structlog.processors.dict_tracebacks,
    structlog.processors.JSONRenderer(serializer=lambda event, **_: orjson.dumps(event, default=str)),
]
"""The chain configure_logging ran for JSON before it became one processor."""


def _lines(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw.splitlines() if line]


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)
        structlog.contextvars.clear_contextvars()


def _log_some(log: Any) -> None:
    structlog.contextvars.bind_contextvars(worker=1, route="ctx-route")
    log.info("request.completed", request_id="r1", route="bench", reason=None, status=200, duration_s=0.000812, when=datetime(2026, 1, 2, tzinfo=UTC))
    log.warning("upstream.aborted", route="bench", kind="timeout")
    log.warn("config.reload_failed", problems=["a", "b"])
    log.debug("not.written")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("request.failed", route="bench")
    log.error("with.exc_info_false", exc_info=False)


class TestJsonLines:
    def test_same_fields_in_the_same_order_as_the_processor_chain(self, restore_structlog: None) -> None:
        """Each line has the reference chain's keys in its order and its values, the timestamp's and traceback's text aside."""
        ours, reference = io.BytesIO(), io.BytesIO()
        configure_logging("info", "json", stream=ours)  # type: ignore[arg-type]
        _log_some(structlog.get_logger("t"))
        structlog.contextvars.clear_contextvars()
        structlog.configure(processors=_REFERENCE_CHAIN, logger_factory=structlog.BytesLoggerFactory(reference))
        _log_some(structlog.get_logger("t"))

        got, expected = _lines(ours.getvalue()), _lines(reference.getvalue())

        assert [list(line) for line in expected] == [list(line) for line in got]
        for line in expected + got:
            line.pop("timestamp")
            if "exception" in line:
                assert "ValueError: boom" in line.pop("exception")
        assert expected == got

    def test_a_line_is_one_json_object_with_a_utc_timestamp(self, restore_structlog: None) -> None:
        """A line parses as JSON and its timestamp is the UTC time it was written, to the microsecond."""
        out = io.BytesIO()
        configure_logging("info", "json", stream=out)  # type: ignore[arg-type]
        before = datetime.now(UTC)

        structlog.get_logger("t").info("request.completed", status=200)

        after = datetime.now(UTC)
        (line,) = _lines(out.getvalue())
        assert {"status": 200, "event": "request.completed", "level": "info"} == {k: v for k, v in line.items() if k != "timestamp"}
        assert line["timestamp"].endswith("Z")
        assert before <= datetime.fromisoformat(line["timestamp"]) <= after

    def test_capture_logs_still_sees_events(self, restore_structlog: None) -> None:
        """structlog.testing.capture_logs replaces the chain in place, as it did with the separate processors."""
        configure_logging("info", "json", stream=io.BytesIO())  # type: ignore[arg-type]

        with structlog.testing.capture_logs() as captured:
            structlog.get_logger("t").info("request.completed", status=200)

        assert [{"event": "request.completed", "status": 200, "log_level": "info"}] == captured


class TestIsoUtc:
    @settings(max_examples=300, deadline=None)
    @given(ns=st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
    def test_same_text_as_datetime_isoformat(self, ns: int) -> None:
        """The text is datetime's isoformat (microseconds floored, none when zero) with Z, as TimeStamper wrote it."""
        at = datetime.fromtimestamp(ns // 1000 // 1_000_000, UTC).replace(microsecond=ns // 1000 % 1_000_000)

        assert at.isoformat().replace("+00:00", "Z") == iso_utc(ns)

    def test_the_cached_second_changes_with_the_clock(self) -> None:
        """Consecutive seconds, and a return to an earlier one, each get their own date and time."""
        second = 1_767_225_599 * 10**9  # 2025-12-31T23:59:59Z

        texts = [iso_utc(second), iso_utc(second + 10**9), iso_utc(second + 1_500), iso_utc(second)]

        assert ["2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z", "2025-12-31T23:59:59.000001Z", "2025-12-31T23:59:59Z"] == texts


class TestEventWriter:
    def test_writes_the_line_the_logger_writes(self, restore_structlog: None) -> None:
        """A writer's line has the fields, order and values of get_logger().info's, context variables included."""
        out = io.BytesIO()
        configure_logging("info", "json", stream=out)  # type: ignore[arg-type]
        writer = EventWriter("request.completed", logger="gateway.request")
        structlog.contextvars.bind_contextvars(worker=2)
        fields = {"request_id": "r1", "route": "bench", "reason": None, "status": 200, "duration_s": 0.0008}

        writer(**fields)
        structlog.get_logger("gateway.request").info("request.completed", **fields)

        written, logged = _lines(out.getvalue())
        assert True is writer.enabled
        assert list(logged) == list(written)
        assert {k: v for k, v in logged.items() if k != "timestamp"} == {k: v for k, v in written.items() if k != "timestamp"}

    def test_writes_nothing_below_the_configured_level(self, restore_structlog: None) -> None:
        """At level warning an info writer is not enabled and a call writes nothing."""
        out = io.BytesIO()
        configure_logging("warning", "json", stream=out)  # type: ignore[arg-type]
        writer = EventWriter("request.completed", logger="gateway.request")

        writer(status=200)

        assert (False, b"") == (writer.enabled, out.getvalue())

    def test_capture_logs_sees_its_events(self, restore_structlog: None) -> None:
        """capture_logs edits the configured processor list in place, so a writer made before it is captured too."""
        configure_logging("info", "json", stream=io.BytesIO())  # type: ignore[arg-type]
        writer = EventWriter("request.completed", logger="gateway.request")

        with structlog.testing.capture_logs() as captured:
            writer(status=200)

        assert [{"status": 200, "event": "request.completed", "log_level": "info"}] == captured

    def test_console_format_gets_the_console_line(self, restore_structlog: None) -> None:
        """With the console format the writer's line is the console renderer's, as the logger's is."""
        out = io.StringIO()
        configure_logging("info", "console", stream=out)

        EventWriter("request.completed", logger="gateway.request")(status=200)

        assert "request.completed" in out.getvalue() and "status=200" in out.getvalue()
