"""`gatehouse device-ca create --out DIR`: a new device certificate authority for laptop enrollment.

Owns: create_ca.
Must not import: argparse, cli. The CA itself is gateway.identity.device_ca's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from gateway.cli.commands.common import EXIT_OK, Refused
from gateway.identity.device_ca import create_device_ca


def create_ca(out_dir: Path, *, clock: Callable[[], datetime], out: TextIO | None = None) -> int:
    """Write ``device-ca.pem`` and ``device-ca.key`` (0600) into ``out_dir`` and print the settings that use them."""
    out = out or sys.stdout
    try:
        cert, key = create_device_ca(out_dir, now=clock())
    except FileExistsError as exc:
        raise Refused(f"`{exc.args[0]}` exists; a device CA is never overwritten. To rotate, create the new one in another "
                      f"directory (`gatehouse device-ca create --out {out_dir.parent / 'device-ca-new'}`) and list the old "
                      "certificate under `identity.device.ca.previous`") from None
    except OSError as exc:
        raise Refused(f"cannot write the device CA into `{out_dir}`: {exc.strerror or exc}; choose a writable directory") from None
    print(f"wrote {cert} (certificate) and {key} (private key, readable only by you)", file=out)
    print("use them in the configuration:\n"
          "identity:\n  device:\n    sources: [mtls]\n    ca:\n"
          f"      cert: {cert}\n      key: {{file: {key}}}\n      validity_days: 30", file=out)
    return EXIT_OK
