"""The one reading of a store DSN: which SQLite file it names, or that it is a PostgreSQL DSN.

Owns: sqlite_file, refuse_moved_store (the old reading of three slashes), SQLITE_FORMS.
Must not import: anything from gateway (settings, the store backends, the commands and the worker
supervisor all call this; it is a leaf on the standard library).

``sqlite:///abs/path.db`` names ``/abs/path.db``: as in a ``file:`` URL, ``//`` opens an empty host
and the path after it is absolute (``sqlite:////abs/path.db`` names the same file).
``sqlite:var/gatehouse.db`` (no slashes after the colon) names a file relative to the configuration
file's folder. Anything else that starts with ``sqlite:`` is refused, never guessed at: a host
(``sqlite://var/gatehouse.db`` would read ``var`` as a machine), options after ``?`` or ``#``, or no
file name.
"""

from __future__ import annotations

from pathlib import Path

SQLITE_FORMS = "`sqlite:///absolute/path/gatehouse.db` or `sqlite:path/relative/to/the/configuration.db`"
"""The two ways to write a SQLite store, for error messages."""

_POSTGRESQL = ("postgresql://", "postgres://")


def sqlite_file(dsn: str, *, base_dir: Path | None = None) -> Path | None:
    """The SQLite file a store DSN names, or None for a PostgreSQL DSN.

    A relative ``sqlite:path`` is resolved against ``base_dir`` (the configuration's folder); the
    settings turn it into ``sqlite:///absolute/path`` once, so every later caller passes no base_dir.

    Raises:
        ValueError: the scheme is neither sqlite nor postgresql; a sqlite DSN names a host, carries
            ``?``/``#`` options or no file name; a relative path comes without ``base_dir``.
    """
    if dsn.startswith(_POSTGRESQL):
        return None
    scheme, colon, rest = dsn.partition(":")
    if not colon or scheme != "sqlite":
        raise ValueError(f"store scheme `{scheme}` is not supported; write {SQLITE_FORMS} or `postgresql://user@host/db`")
    if "?" in rest or "#" in rest:
        raise ValueError(f"store `{dsn}` carries options after `?` or `#`, which a SQLite store does not take; write {SQLITE_FORMS}")
    if rest.startswith("//"):
        host, _, path = rest[2:].partition("/")
        if host:
            raise ValueError(
                f"store `{dsn}` names the host `{host}`, but a SQLite store is a local file; write "
                f"`sqlite:///{host}/{path}` for the absolute path or `sqlite:{host}/{path}` for a path relative to the configuration"
            )
        rest = "/" + path.lstrip("/")
    if rest == "" or rest.endswith("/"):
        raise ValueError(f"store `{dsn}` names no file; write {SQLITE_FORMS}")
    file = Path(rest)
    if file.is_absolute():
        return file
    if base_dir is None:
        raise ValueError(f"store `{dsn}` is relative, and no configuration folder is known here; write `sqlite:///absolute/path/gatehouse.db`")
    return (base_dir / file).resolve()


def refuse_moved_store(dsn: str, path: Path, base_dir: Path) -> None:
    """Refuse ``sqlite:///x`` when ``/x`` is missing but the configuration's ``x`` exists.

    Earlier versions read three slashes relative to the configuration's folder; starting on an empty
    store at the absolute path would look like lost data, so the choice is left to the operator.

    Raises:
        ValueError: the store file is not at the absolute path but is at the old relative one.
    """
    old = (base_dir / str(path).lstrip("/")).resolve()
    three_slashes = dsn.startswith("sqlite:///") and not dsn.startswith("sqlite:////")  # four were always absolute
    if three_slashes and old != path and not path.exists() and old.exists():
        raise ValueError(
            f"`{dsn}` names `{path}`, which does not exist, but `{old}` does (three slashes mean an absolute path; "
            f"earlier versions read it relative to the configuration); write `sqlite:{str(path).lstrip('/')}` to keep "
            f"using `{old}`, or move the file to `{path}`"
        )
