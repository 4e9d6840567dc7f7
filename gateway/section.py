"""The base of every configuration section: frozen, unknown keys rejected.

Owns: Section.
Must not import: anything from gateway (feature config modules and settings.py both build on it).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")
