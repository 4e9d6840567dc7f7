"""`gatehouse report`: the compliance report of a period from a real SQLite store, the policy and the audit log."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from gateway.cli.main import main
from gateway.report.synthetic import generate_fleet_history
from gateway.store import open_store
from tests.gateway.cli.test_main import NOW, clock, db_of, seed_store, write_audit_log, write_config


def record_history(tmp_path: Path, days: int = 31, devices: int = 20) -> None:
    """The generated fleet's history for the month before NOW, recorded through the real store API."""
    fleet = generate_fleet_history(NOW - timedelta(days=days), days=days, devices=devices)

    async def work() -> None:
        store = await open_store(f"sqlite:///{db_of(tmp_path)}")
        try:
            for entry in fleet.entries:
                await store.record_compliance(entry)
        finally:
            await store.close()

    asyncio.run(work())


class TestReportCommand:
    def test_json_report_counts_the_recorded_history(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The JSON report has one day per day of the period, every recorded device, the period's grants and the controls."""
        config = write_config(tmp_path)
        seed_store(tmp_path)
        record_history(tmp_path)
        write_audit_log(tmp_path)
        since = (NOW - timedelta(days=31)).date().isoformat()
        until = NOW.date().isoformat()

        code = main(["report", "--config", str(config), "--since", since, "--until", until, "--format", "json"], clock=clock)

        out, err = capsys.readouterr()
        body = orjson.loads(out)
        assert 0 == code
        assert 31 == len(body["fleet"]["days"])
        assert 20 == body["fleet"]["days"][0]["counted"]
        assert ["alice@example.com"] == [u["user"] for u in body["break_glass"]]
        assert body["ledger_available"] is ("keeps no access ledger" not in err)
        assert any(c["framework"] == "HITRUST CSF" for c in body["controls"])

    def test_html_report_is_written_to_a_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`-o FILE` writes a whole HTML page with inline SVG charts and no script."""
        config = write_config(tmp_path)
        seed_store(tmp_path)
        record_history(tmp_path)
        out_file = tmp_path / "report.html"

        code = main(["report", "--config", str(config), "--since", "2026-10-22", "-o", str(out_file)], clock=clock)

        text = out_file.read_text()
        assert 0 == code
        assert text.startswith("<!doctype html>")
        assert "<svg" in text and "<script" not in text
        assert f"to {out_file}" in capsys.readouterr().err

    def test_a_period_ending_before_it_starts_is_bad_usage(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--until before --since exits 2 and shows a command that works."""
        config = write_config(tmp_path)

        code = main(["report", "--config", str(config), "--since", "2026-11-10", "--until", "2026-11-01"], clock=clock)

        assert 2 == code
        assert "gatehouse report --config" in capsys.readouterr().err.splitlines()[-1]
