"""Gatehouse: the HTTP edge that verifies user and device and enforces device-health policy."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
