"""The one reading of a store DSN: three slashes are absolute, no slashes are relative to the configuration.

Checked on the function, through ``gatehouse check-config`` and on a gateway started behind the production listener.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.cli.commands.config import check_config
from gateway.config.settings import load_settings
from gateway.store import sqlite_file
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_config, ingest_headers, mac_item

CONFIG_DIR = Path("/etc/gatehouse")


class TestSqliteFile:
    @pytest.mark.parametrize(("dsn", "expected"), [
        ("sqlite:///var/lib/gatehouse/g.db", Path("/var/lib/gatehouse/g.db")),
        ("sqlite:////var/lib/gatehouse/g.db", Path("/var/lib/gatehouse/g.db")),
        ("sqlite:/var/lib/gatehouse/g.db", Path("/var/lib/gatehouse/g.db")),
        ("sqlite:var/g.db", CONFIG_DIR / "var" / "g.db"),
        ("sqlite:g.db", CONFIG_DIR / "g.db"),
    ])
    def test_names_the_file(self, dsn: str, expected: Path) -> None:
        """Three (or more) slashes name an absolute path; a path right after the colon is the configuration's."""
        assert expected == sqlite_file(dsn, base_dir=CONFIG_DIR)

    @pytest.mark.parametrize("dsn", ["postgresql://g@db/g", "postgres://g@db/g"])
    def test_postgresql_is_no_file(self, dsn: str) -> None:
        """A PostgreSQL DSN names no SQLite file."""
        assert None is sqlite_file(dsn)

    @pytest.mark.parametrize(("dsn", "message"), [
        ("sqlite://var/g.db", "names the host `var`"),
        ("sqlite:///var/g.db?mode=ro", "options after `?` or `#`"),
        ("sqlite:///", "names no file"),
        ("sqlite:///var/lib/", "names no file"),
        ("sqlite:", "names no file"),
        ("mysql://x/y", "`mysql` is not supported"),
        ("/var/g.db", "`/var/g.db` is not supported"),
    ])
    def test_anything_else_is_refused(self, dsn: str, message: str) -> None:
        """A DSN that could be read two ways, or not at all, is refused with what to write."""
        with pytest.raises(ValueError, match=re.escape(message)) as caught:
            sqlite_file(dsn, base_dir=CONFIG_DIR)

        assert "`sqlite:///absolute/path" in str(caught.value) or "`sqlite:///var/g.db`" in str(caught.value)

    def test_relative_path_needs_the_configuration_folder(self) -> None:
        """Without a configuration folder a relative file is refused rather than read from the working directory."""
        with pytest.raises(ValueError, match="relative"):
            sqlite_file("sqlite:var/g.db")


class TestConfiguredStore:
    async def test_started_gateway_writes_the_absolute_file(self, aiohttp_client: Any, tmp_path: Path) -> None:
        """A gateway configured with `sqlite:///abs/path` keeps its snapshots in /abs/path, nowhere under its configuration."""
        config = tmp_path / "etc" / "gatehouse.yaml"
        config.parent.mkdir()
        keys = Keys(tmp_path / "keys")
        clock = MovableClock()
        raw = gatehouse_config(keys, store=f"sqlite://{tmp_path}/data/g.db", upstream="http://127.0.0.1:9")
        config.write_text(yaml.safe_dump(raw))
        client = await aiohttp_client(create_app(load_settings(config, {}), clock=clock))

        response = await client.post("/.gatehouse/api/v1/snapshots", headers=ingest_headers(),
                                     json={"snapshots": [mac_item("C02ABS", at=clock())]})

        assert 200 == response.status, await response.text()
        assert (tmp_path / "data" / "g.db").is_file()
        assert [] == [p for p in config.parent.rglob("*.db")]

    def test_check_config_names_a_store_with_a_host(self, tmp_path: Path) -> None:
        """`gatehouse check-config` refuses `sqlite://name/...` and shows both spellings to choose from."""
        config = tmp_path / "gatehouse.yaml"
        config.write_text("listeners: [{address: '127.0.0.1:8080'}]\nstore: sqlite://var/g.db\n")
        out = io.StringIO()

        code = check_config(config, out=out, environ={})

        assert 1 == code
        assert "store: store `sqlite://var/g.db` names the host `var`" in out.getvalue()
        assert "`sqlite:///var/g.db` for the absolute path or `sqlite:var/g.db`" in out.getvalue()
