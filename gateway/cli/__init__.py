"""The `gatehouse` command: argument parsing (main), one module per command group (commands/), the demo."""

from __future__ import annotations
