"""The base of every configuration section: frozen, unknown keys rejected.

Owns: Section.
Must not import: anything from gateway (feature config modules and settings.py both build on it).
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def checked_networks(value: tuple[str, ...], *, example: str) -> tuple[str, ...]:
    """Validate a list of IP addresses or networks (for a field validator).

    Raises:
        ValueError: an item is not an address or network; the message shows ``example``.
    """
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"`{item}` is not an IP address or network; write e.g. `{example}`") from None
    return value
