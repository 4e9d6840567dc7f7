"""`gatehouse demo run|token`: the demo `make run` starts, and user tokens for trying it.

Owns: demo_run, demo_token.
Must not import: argparse, cli. The demo itself is gateway.cli.demo's.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.cli import demo
from gateway.cli.commands.common import EXIT_OK, EXIT_USAGE, Refused, command, streams

if TYPE_CHECKING:
    from gateway.config.settings import Settings


@command
def demo_run(var: Path) -> int:
    """Run the demo (Gatehouse, a demo upstream and demo devices, state under ``var``) until Ctrl-C."""
    from gateway.cli.demo_history import seed_demo_history

    def seed(settings: Settings) -> Awaitable[object]:
        return seed_demo_history(settings, now=datetime.now(UTC))

    return demo.run_demo(var, seed=seed)


@command
def demo_token(
    var: Path,
    *,
    user: str,
    device: str,
    now: datetime,
    groups: tuple[str, ...] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print a user token signed by the demo key for ``user`` on ``device``; exit 1 when the demo never ran."""
    out, err = streams(out, err)
    if "@" not in user:
        raise Refused(f"--user: `{user}` is not an email address\n"
                      f"  gatehouse demo token --user alice@example.com --device {device or 'C02DEMOMAC1'}", EXIT_USAGE)
    if not device.strip():
        raise Refused(f"--device: give the device's serial\n  gatehouse demo token --user {user} --device C02DEMOMAC1", EXIT_USAGE)
    try:
        token = demo.mint_demo_token(var, user=user, device=device.strip(), now=now, groups=groups)
    except FileNotFoundError as exc:
        raise Refused(str(exc)) from None
    print(token, file=out)
    return EXIT_OK
