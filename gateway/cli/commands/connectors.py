"""`gatehouse connectors test NAME`: fetch one page from a configured connector and print what would be stored.

Owns: try_connector (named so pytest does not collect it).
Must not import: argparse, cli. Nothing is stored: the page is only read and parsed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

import orjson

from gateway.cli.commands.common import EXIT_OK, EXIT_REFUSED, Refused, command, load_config
from gateway.ingest.connectors import ConnectorError, ConnectorRecord, build_connector


@command
async def try_connector(
    name: str, config: Path, *, clock: Callable[[], datetime], environ: Mapping[str, str] | None = None,
    out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Print one JSON line per record of the connector's first page (snapshot or rejection), then a summary; store nothing."""
    out = out or sys.stdout
    settings = load_config(config, environ)
    entry = next((c for c in settings.ingest.connectors if c.name == name), None)
    if entry is None:
        known = ", ".join(f"`{c.name}`" for c in settings.ingest.connectors) or "none"
        raise Refused(f"no connector `{name}` in `{config}` (configured: {known}); add it under `ingest.connectors`")
    connector = build_connector(entry, sleep=asyncio.sleep, clock=clock, max_future_skew=timedelta(seconds=settings.ingest.max_future_skew_s))
    try:
        page = await connector.fetch_page("", now=clock())
    except ConnectorError as exc:
        raise Refused(f"connector `{name}`: {exc}\n  fix it, then run `gatehouse connectors test {name} --config {config}` again") from None
    finally:
        await connector.close()
    stored = 0
    for record in page.records:
        if isinstance(record, ConnectorRecord):
            stored += 1
            s = record.snapshot
            line: dict[str, object] = {
                "would_store": True, "ref": record.ref, "serial": s.serial, "source": s.source, "platform": s.platform.value,
                "os_name": s.os_name, "os_version": str(s.os_version) if s.os_version else None, "collected_at": s.collected_at.isoformat(),
                "disk_encrypted": s.disk_encrypted, "firewall_enabled": s.firewall_enabled, "sip_enabled": s.sip_enabled,
                "gatekeeper_enabled": s.gatekeeper_enabled, "custom": dict(s.custom), "owners": list(s.owners),
                "assigned_owners": list(record.assigned_owners),
            }
        else:
            line = {"would_store": False, "ref": record.ref, "serial": record.serial, "field": record.field, "expected": record.expected}
        out.write(orjson.dumps(line).decode() + "\n")
    more = "more pages follow" if page.next_cursor is not None else "this was the only page"
    out.write(f"# {name}: {stored} of {len(page.records)} records would be stored, nothing was stored ({more})\n")
    return EXIT_OK if stored or not page.records else EXIT_REFUSED
