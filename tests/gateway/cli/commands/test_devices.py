"""`gatehouse devices assign|unassign|owners|import`: the owner inventory from the command line, on a real SQLite store."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import orjson

from gateway.cli.main import main
from gateway.cli.commands import assign_owners, import_owners, list_owners, unassign_owners
from gateway.store import open_store
from tests.gateway.cli.test_main import write_config

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


async def held(config: Path, tmp_path: Path, serial: str) -> tuple[str, ...] | None:
    store = await open_store(f"sqlite:///{tmp_path / 'gatehouse.db'}")
    try:
        record = await store.owners(serial)
    finally:
        await store.close()
    return record.owners if record else None


class TestAssign:
    async def test_assign_adds_lower_cased_owners_and_records_who(self, tmp_path: Path) -> None:
        """Assigning twice adds owners, lower-cased, once each; the listing names who set them, when and how."""
        config = write_config(tmp_path)
        out = io.StringIO()

        first = await assign_owners("C02DEMO1", ["Alice@Example.com"], config, clock=clock, by="cli:ops", out=out)
        second = await assign_owners("C02DEMO1", ["bob@example.com", "alice@example.com"], config, clock=clock, by="cli:ops", out=out)
        listed = io.StringIO()
        code = await list_owners(config, "C02DEMO1", fmt="json", out=listed)

        assert (0, 0, 0) == (first, second, code)
        assert {"devices": [{"serial": "C02DEMO1", "owners": ["alice@example.com", "bob@example.com"], "set_by": "cli:ops",
                             "set_at": NOW.isoformat(), "source": "cli"}]} == orjson.loads(listed.getvalue())

    async def test_bad_serial_and_email_are_usage_errors_naming_both(self, tmp_path: Path) -> None:
        """A placeholder serial or a malformed email is refused with exit 2, saying what is expected."""
        config = write_config(tmp_path)
        err = io.StringIO()

        serial = await assign_owners("0", ["alice@example.com"], config, clock=clock, err=err)
        email = await assign_owners("C02DEMO1", ["alice"], config, clock=clock, err=err)

        assert (2, 2) == (serial, email)
        assert "serial: a real hardware serial number" in err.getvalue()
        assert "owner: an email address such as `alice@corp.example`, not `alice`" in err.getvalue()


class TestUnassign:
    async def test_unassign_one_then_all(self, tmp_path: Path) -> None:
        """Unassigning a named owner keeps the others; unassigning without names empties the entry; a second time is refused."""
        config = write_config(tmp_path)
        await assign_owners("C02DEMO1", ["alice@example.com", "bob@example.com"], config, clock=clock, out=io.StringIO())

        one = await unassign_owners("C02DEMO1", ["ALICE@example.com"], config, clock=clock, out=io.StringIO())
        after_one = await held(config, tmp_path, "C02DEMO1")
        every = await unassign_owners("C02DEMO1", [], config, clock=clock, out=io.StringIO())
        err = io.StringIO()
        again = await unassign_owners("C02DEMO1", [], config, clock=clock, err=err)

        assert (0, ("bob@example.com",), 0, None, 1) == (one, after_one, every, await held(config, tmp_path, "C02DEMO1"), again)
        assert "`C02DEMO1` has no owners in the inventory" in err.getvalue()


class TestImport:
    async def test_csv_export_with_several_rows_and_joined_owners_replaces_lists(self, tmp_path: Path) -> None:
        """An MDM-style CSV (extra columns, several rows per serial, `;`-joined cells) sets each listed serial's owners."""
        config = write_config(tmp_path)
        await assign_owners("C02OLD", ["carol@example.com"], config, clock=clock, out=io.StringIO())
        await assign_owners("C02KEEP", ["dave@example.com"], config, clock=clock, out=io.StringIO())
        path = tmp_path / "jamf.csv"
        path.write_text("Serial,Owner,Model\nC02OLD,alice@example.com,MacBook Pro\nC02OLD,bob@example.com,MacBook Pro\n"
                        "PF3NEW,erin@example.com; frank@example.com,ThinkPad\n")
        out = io.StringIO()

        code = await import_owners(path, config, clock=clock, out=out)

        assert 0 == code
        assert "imported 2 device(s) from" in out.getvalue()
        assert (("alice@example.com", "bob@example.com"), ("erin@example.com", "frank@example.com"), ("dave@example.com",)) == (
            await held(config, tmp_path, "C02OLD"), await held(config, tmp_path, "PF3NEW"), await held(config, tmp_path, "C02KEEP"))

    async def test_json_dry_run_shows_changes_and_writes_nothing(self, tmp_path: Path) -> None:
        """A dry run lists what would change and leaves the inventory as it was."""
        config = write_config(tmp_path)
        path = tmp_path / "hr.json"
        path.write_text('{"devices": [{"serial": "C02A", "owners": ["Alice@Example.com"]}]}')
        await assign_owners("C02OTHER", ["carol@example.com"], config, clock=clock, out=io.StringIO())
        out = io.StringIO()

        code = await import_owners(path, config, clock=clock, dry_run=True, out=out)

        assert 0 == code
        assert "would set C02A: nobody -> alice@example.com" in out.getvalue() and "nothing was written" in out.getvalue()
        assert None is await held(config, tmp_path, "C02A")

    async def test_every_bad_row_is_named_and_nothing_is_imported(self, tmp_path: Path) -> None:
        """Each problem names its line, field and what is expected; with any problem, no row is written."""
        config = write_config(tmp_path)
        path = tmp_path / "bad.csv"
        path.write_text("serial,owner\nC02GOOD,alice@example.com\n0,bob@example.com\nC02X,\nC02Y,not-an-email\n")
        err = io.StringIO()

        code = await import_owners(path, config, clock=clock, err=err)

        lines = err.getvalue().splitlines()
        assert 1 == code
        assert [f"{path}: line 3: serial:", f"{path}: line 4: owner:", f"{path}: line 5: owner: an email address such as"] == [
            line[: len(prefix)] for line, prefix in zip(lines, (f"{path}: line 3: serial:", f"{path}: line 4: owner:",
                                                                f"{path}: line 5: owner: an email address such as"))]
        assert "nothing was imported: 3 problem(s)" in lines[-1]
        assert None is await held(config, tmp_path, "C02GOOD")

    async def test_json_problems_name_the_item(self, tmp_path: Path) -> None:
        """JSON items are named `devices[i]` with the field that is wrong."""
        config = write_config(tmp_path)
        path = tmp_path / "bad.json"
        path.write_text('{"devices": [{"serial": "C02A", "owners": []}, {"serial": "", "owners": ["a@b.example"]}, 7]}')
        err = io.StringIO()

        code = await import_owners(path, config, clock=clock, err=err)

        assert 1 == code
        assert [f"{path}: devices[0].owners: a non-empty list", f"{path}: devices[1].serial: a real hardware serial",
                f"{path}: devices[2]: an object with `serial` and `owners`"] == [
            line[: len(p)] for line, p in zip(err.getvalue().splitlines(), (
                f"{path}: devices[0].owners: a non-empty list", f"{path}: devices[1].serial: a real hardware serial",
                f"{path}: devices[2]: an object with `serial` and `owners`"))]


def test_the_cli_wires_the_devices_commands(tmp_path: Path, capsys: object) -> None:
    """`gatehouse devices assign` then `gatehouse devices owners` through the real argument parser."""
    config = write_config(tmp_path)

    assigned = main(["devices", "assign", "C02DEMO1", "alice@example.com", "--config", str(config), "--by", "cli:ops"], clock=clock)
    listed = main(["devices", "owners", "--config", str(config)], clock=clock)

    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert (0, 0) == (assigned, listed)
    assert "C02DEMO1: alice@example.com (set by cli:ops via cli at 2026-11-22T15:00:00+00:00)" in out
