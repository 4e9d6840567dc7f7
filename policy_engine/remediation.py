"""Remediation entries: how a user fixes a failing check, per platform.

Owns: Remediation, merge_remediation.
Must not import: anything outside the standard library and policy_engine.model/document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from policy_engine.document import RemediationSpec
from policy_engine.model import OsFamily

_NO_STEPS: Mapping[OsFamily, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Remediation:
    """What the deny page shows for a check: title, why it matters, steps per platform, a link.

    ``steps`` values are Markdown written by the policy author (links such as
    ``x-apple.systempreferences:`` or ``ms-settings:`` allowed); the page renderer must escape
    or sanitise them like any other Markdown.
    """

    key: str
    title: str
    why: str = ""
    steps: Mapping[OsFamily, str] = field(default_factory=lambda: _NO_STEPS)
    doc_url: str = ""

    def steps_for(self, platform: OsFamily) -> str:
        """The Markdown steps for a platform, or every platform's steps when it is unknown."""
        text = self.steps.get(platform)
        if text is not None:
            return text
        if platform is OsFamily.UNKNOWN:
            names = {OsFamily.DARWIN: "macOS", OsFamily.WINDOWS: "Windows", OsFamily.LINUX: "Linux"}
            return "\n\n".join(f"**{names.get(p, p.value)}**\n\n{t}" for p, t in self.steps.items())
        return ""

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {
            "key": self.key,
            "title": self.title,
            "why": self.why,
            "steps": {p.value: t for p, t in self.steps.items()},
            "doc_url": self.doc_url,
        }


def merge_remediation(base: Remediation | None, spec: RemediationSpec) -> Remediation:
    """Apply a policy's entry over a built-in one: given fields replace, steps merge per platform."""
    steps = dict(base.steps) if base is not None else {}
    steps.update(dict(spec.steps))
    return Remediation(
        key=spec.key,
        title=spec.title or (base.title if base else spec.key.replace("_", " ")),
        why=spec.why or (base.why if base else ""),
        steps=MappingProxyType(steps),
        doc_url=spec.doc_url or (base.doc_url if base else ""),
    )
