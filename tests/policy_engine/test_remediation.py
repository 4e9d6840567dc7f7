"""Remediation entries and how a policy overrides the defaults."""

from __future__ import annotations

from policy_engine import DEFAULT_REMEDIATION, OsFamily, RemediationSpec
from policy_engine.remediation import merge_remediation


class TestMerge:
    def test_override_keeps_unspecified_fields(self) -> None:
        """A policy entry with only a doc_url and a Linux step keeps the default title and other steps."""
        base = DEFAULT_REMEDIATION["firewall"]
        spec = RemediationSpec("firewall", steps=((OsFamily.LINUX, "Run `corp-firewall on`."),), doc_url="https://wiki/x")

        merged = merge_remediation(base, spec)

        assert (base.title, "https://wiki/x", "Run `corp-firewall on`.", base.steps[OsFamily.DARWIN]) == (
            merged.title, merged.doc_url, merged.steps[OsFamily.LINUX], merged.steps[OsFamily.DARWIN])

    def test_unknown_platform_gets_every_platforms_steps(self) -> None:
        """A device whose platform is unknown sees all steps, each under its platform's name."""
        entry = DEFAULT_REMEDIATION["firewall"]

        text = entry.steps_for(OsFamily.UNKNOWN)

        assert "**macOS**" in text and "**Windows**" in text and "**Linux**" in text

    def test_to_dict_is_plain_data(self) -> None:
        """Steps are keyed by platform name."""
        data = DEFAULT_REMEDIATION["sip"].to_dict()

        assert ["darwin"] == list(data["steps"])  # type: ignore[call-overload]
