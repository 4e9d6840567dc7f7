"""The views package's public names: the written-out ``__all__`` and the lazy exports agree."""

from __future__ import annotations

import gateway.web.views as views


def test_all_lists_every_lazy_export() -> None:
    """``__all__`` names exactly the lazily exported names, so checkers and imports see the same set."""
    expected = sorted(views._MODULE_OF)

    assert expected == sorted(views.__all__)


def test_every_public_name_resolves() -> None:
    """Each name in ``__all__`` loads from the module the export table names."""
    missing = [name for name in views.__all__ if getattr(views, name, None) is None]

    assert [] == missing
