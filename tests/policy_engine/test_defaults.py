"""The built-in remediation catalog covers every built-in fact on every platform."""

from __future__ import annotations

from policy_engine import BUILTIN_FACTS, DEFAULT_KEY_BY_FACT, DEFAULT_REMEDIATION, OsFamily

MAC_ONLY = {"sip", "gatekeeper"}


class TestDefaults:
    def test_every_builtin_fact_has_a_default_entry(self) -> None:
        """Each built-in fact maps to an existing catalog entry."""
        missing = [fact for fact in BUILTIN_FACTS if DEFAULT_KEY_BY_FACT.get(fact) not in DEFAULT_REMEDIATION]

        assert [] == missing

    def test_entries_have_title_why_and_steps_per_platform(self) -> None:
        """Every entry has a title, a reason and steps for macOS, Windows and Linux (macOS-only ones for macOS)."""
        incomplete = []
        for key, entry in DEFAULT_REMEDIATION.items():
            platforms = {OsFamily.DARWIN} if key in MAC_ONLY else {OsFamily.DARWIN, OsFamily.WINDOWS, OsFamily.LINUX}
            if not entry.title or not entry.why or not platforms <= set(entry.steps):
                incomplete.append(key)

        assert [] == incomplete

    def test_doc_urls_are_https(self) -> None:
        """Default documentation links, where given, are https."""
        bad = [e.key for e in DEFAULT_REMEDIATION.values() if e.doc_url and not e.doc_url.startswith("https://")]

        assert [] == bad
