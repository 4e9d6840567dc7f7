"""The identity package's public names: the written-out ``__all__`` and the lazy exports agree."""

from __future__ import annotations

import gateway.identity as identity


def test_all_lists_every_lazy_export_in_order() -> None:
    """``__all__`` names exactly the lazily exported names, sorted, so checkers and imports see the same set."""
    expected = sorted(identity._MODULE_OF)

    assert expected == identity.__all__


def test_every_public_name_resolves() -> None:
    """Each name in ``__all__`` loads from the module the export table names."""
    missing = [name for name in identity.__all__ if getattr(identity, name, None) is None]

    assert [] == missing
