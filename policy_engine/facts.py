"""The snapshot facts a check may name, their kinds, and the comparisons each kind accepts.

Owns: FactKind, BUILTIN_FACTS, OPERATORS_BY_KIND, fact_kind.
Must not import: anything outside the standard library and policy_engine.document.
"""

from __future__ import annotations

import re
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping

from policy_engine.document import Operator

CUSTOM_PREFIX = "custom."
CUSTOM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


class FactKind(StrEnum):
    """The type of a fact, which decides the comparisons a check on it may use."""

    BOOL = "bool"
    INT = "int"
    STR = "str"
    VERSION = "version"
    CUSTOM = "custom"
    """``custom.<name>``: str, int, float or bool, checked when evaluated."""


BUILTIN_FACTS: Mapping[str, FactKind] = MappingProxyType(
    {
        "firewall_enabled": FactKind.BOOL,
        "disk_encrypted": FactKind.BOOL,
        "screen_lock_enabled": FactKind.BOOL,
        "remote_login_enabled": FactKind.BOOL,
        "auto_updates_enabled": FactKind.BOOL,
        "sip_enabled": FactKind.BOOL,
        "gatekeeper_enabled": FactKind.BOOL,
        "screen_lock_delay_s": FactKind.INT,
        "os_version": FactKind.VERSION,
        "agent_version": FactKind.VERSION,
        "platform": FactKind.STR,
        "os_name": FactKind.STR,
        "distribution": FactKind.STR,
        "os_build": FactKind.STR,
        "agent_name": FactKind.STR,
        "source": FactKind.STR,
    }
)
"""Snapshot fields a check may name; identity and timestamps are not health facts."""

_NUMERIC = frozenset({Operator.AT_MOST, Operator.AT_LEAST, Operator.BELOW, Operator.ABOVE})
_SET = frozenset({Operator.EQUALS, Operator.ONE_OF, Operator.NONE_OF})

OPERATORS_BY_KIND: Mapping[FactKind, frozenset[Operator]] = MappingProxyType(
    {
        FactKind.BOOL: frozenset({Operator.EQUALS}),
        FactKind.INT: _SET | _NUMERIC,
        FactKind.STR: _SET,
        FactKind.VERSION: frozenset({Operator.MIN_VERSION}),
        FactKind.CUSTOM: frozenset(Operator),
    }
)


def fact_kind(fact: str) -> FactKind | None:
    """The kind of a fact name, or None when no snapshot field or valid custom name matches."""
    kind = BUILTIN_FACTS.get(fact)
    if kind is not None:
        return kind
    if fact.startswith(CUSTOM_PREFIX) and CUSTOM_NAME.fullmatch(fact[len(CUSTOM_PREFIX) :]):
        return FactKind.CUSTOM
    return None
