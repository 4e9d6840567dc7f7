"""The ingest settings section: secrets by reference, defaults, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config.ingest import IngestSettings


class TestIngestSettings:
    def test_secrets_are_read_by_reference(self, tmp_path: Path) -> None:
        """Tokens and enroll secrets come from env, file or value, and never show in repr."""
        (tmp_path / "enroll").write_text("from-file\n", encoding="utf-8")
        raw = {
            "api_tokens": [{"env": "INGEST_TOKEN"}, {"value": "second"}],
            "osquery_enroll_secrets": [{"file": "enroll"}],
        }

        settings = IngestSettings.model_validate(raw, context={"environ": {"INGEST_TOKEN": "from-env"}, "base_dir": tmp_path})

        assert ["from-env", "second"] == [s.reveal() for s in settings.api_tokens]
        assert ["from-file"] == [s.reveal() for s in settings.osquery_enroll_secrets]
        assert "from-env" not in repr(settings)

    def test_defaults(self) -> None:
        """Without settings the API and enroll are closed, history is kept 90 days, the cache refreshes every 30 s."""
        settings = IngestSettings()

        assert ((), (), 90, 30.0, 300, 60) == (
            settings.api_tokens, settings.osquery_enroll_secrets, settings.history_retention_days,
            settings.cache_refresh_s, settings.max_future_skew_s, settings.osquery_intervals.distributed_interval_s)

    @pytest.mark.parametrize("raw", [{"api_token": [{"value": "x"}]}, {"history_retention_days": 0}, {"api_tokens": ["plain"]}])
    def test_bad_values_are_refused(self, raw: dict[str, object]) -> None:
        """Unknown keys, out-of-range numbers and secrets not written as references are refused."""
        with pytest.raises(ValidationError):
            IngestSettings.model_validate(raw, context={"environ": {}})
