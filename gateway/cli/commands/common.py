"""What every command shares: refusing with a fix, dates, the configuration, the store and the audit log.

Owns: Refused, command (turns Refused into printed text and an exit code), parse_moment,
load_config, opened_store, opened_gateway_store, opened_audit_sink, streams, output_to, Progress.
Must not import: argparse, cli (the command modules and cli.py import this).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TextIO, TypeVar, cast

from gateway.cli.audit_cli import parse_since
from gateway.errors import ConfigError
from gateway.config.settings import Settings, load_settings
from gateway.store import Store, StoreError, open_store, sqlite_file

if TYPE_CHECKING:
    from breakglass import AuditSink

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

P = ParamSpec("P")
T = TypeVar("T")


class Refused(Exception):
    """A command cannot go on: the text to print (ending with the command that fixes it) and the exit code."""

    def __init__(self, text: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


def command(fn: Callable[P, T]) -> Callable[P, T]:
    """Let a command function (sync or async, with an ``err`` keyword) raise Refused: print it, return its code."""

    def report(exc: Refused, kwargs: Mapping[str, object]) -> int:
        err = cast(TextIO, kwargs.get("err") or sys.stderr)
        print(exc.text.rstrip("\n"), file=err)
        return exc.code

    if inspect.iscoroutinefunction(fn):
        async_fn = cast(Callable[P, Awaitable[int]], fn)

        @functools.wraps(fn)
        async def run_async(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return await async_fn(*args, **kwargs)
            except Refused as exc:
                return report(exc, kwargs)

        return cast(Callable[P, T], run_async)

    sync_fn = cast(Callable[P, int], fn)

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return sync_fn(*args, **kwargs)
        except Refused as exc:
            return report(exc, kwargs)

    return cast(Callable[P, T], run)


def parse_moment(value: str, *, option: str, example: str) -> datetime:
    """``2026-11-01`` (midnight UTC) or an RFC 3339 time with a zone, as an aware datetime.

    Raises:
        Refused: exit 2, saying what is expected and showing ``example`` (a command that works).
    """
    try:
        moment = parse_since(value)
    except ValueError as exc:
        raise Refused(f"{option}: {exc}\n  {example}", EXIT_USAGE) from None
    assert moment is not None  # INVARIANT: parse_since returns None only for None
    return moment


def load_config(path: Path, environ: Mapping[str, str] | None) -> Settings:
    """The settings in ``path``.

    Raises:
        Refused: the file has problems (every one listed).
    """
    try:
        return load_settings(path, os.environ if environ is None else environ)
    except ConfigError as exc:
        raise Refused(f"{exc}\nfix the problems above, then check with `gatehouse check-config {path}`") from None


def _require_sqlite_file(settings: Settings, config: Path, fix: str) -> None:
    try:
        path = sqlite_file(settings.store.reveal())
    except ValueError as exc:
        raise Refused(f"{exc}\nfix `store:` in {config}, then run `gatehouse check-config {config}`") from None
    if path is not None and not path.exists():
        raise Refused(f"there is no store at `{path}` (`store:` in {config})\n{fix}")


@asynccontextmanager
async def opened_store(settings: Settings, config: Path, *, create: bool = False, fix: str = "") -> AsyncIterator[Store]:
    """The configuration's store, closed on the way out; a store failure inside becomes Refused.

    Without ``create``, a SQLite file that does not exist is refused (``fix`` says what creates it)
    instead of being created empty.
    """
    if not create:
        _require_sqlite_file(settings, config, fix or f"import snapshots first with `gatehouse import FILE --config {config}`")
    try:
        store = await open_store(settings.store.reveal())
    except (StoreError, ValueError, OSError) as exc:
        raise Refused(f"cannot open the store: {exc}\ncheck `store:` in {config}, then run `gatehouse check-config {config}`") from None
    try:
        yield store
    except StoreError as exc:
        raise Refused(f"the store failed: {exc}\ncheck the store, then run the same command again") from None
    finally:
        await store.close()


def opened_gateway_store(settings: Settings, config: Path) -> AbstractAsyncContextManager[Store]:
    """``opened_store`` for what only a running gateway writes (history, the ledger): a missing store is refused, saying so."""
    return opened_store(settings, config, fix="the store is created when Gatehouse first runs or imports; "
                        f"check `store:`, then run `gatehouse check-config {config}`")


def streams(out: TextIO | None, err: TextIO | None) -> tuple[TextIO, TextIO]:
    """A command's output and error streams: the ones given (tests), else the process's."""
    return out or sys.stdout, err or sys.stderr


@asynccontextmanager
async def opened_audit_sink(settings: Settings, config: Path) -> AsyncIterator[AuditSink]:
    """The break-glass audit log the gateway writes for this configuration: its store's ``audit_sink()``."""
    async with opened_store(settings, config, fix=f"point `store:` at the gateway's store, then run `gatehouse check-config {config}`") as store:
        yield await store.audit_sink()


def check_period(since: datetime, until: datetime | None, example: str) -> None:
    """Refuse (usage, exit 2) a period whose end is not after its start, with the command to run instead.

    Raises:
        Refused: ``until`` is at or before ``since``.
    """
    if until is not None and until <= since:
        raise Refused(f"--until `{until.isoformat()}` is not after --since `{since.isoformat()}`; give a later end\n  {example}",
                      EXIT_USAGE)


@contextmanager
def output_to(path: Path | None, stdout: TextIO) -> Iterator[TextIO]:
    """``stdout``, or a file written beside ``path`` and moved into place only when the block succeeds."""
    if path is None:
        yield stdout
        return
    partial = path.with_name(f".{path.name}.partial")
    try:
        handle = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise Refused(f"cannot write `{path}`: {exc.strerror or exc}\nchoose a writable place with `-o FILE`") from None
    try:
        with handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


class Progress:
    """One self-overwriting status line on a terminal; nothing at all when ``stream`` is not one."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._shown = False

    @property
    def live(self) -> bool:
        """True when progress is shown."""
        return self._live

    def update(self, text: str) -> None:
        """Replace the status line with ``text``."""
        if self._live:
            self._stream.write(f"\r\x1b[K{text}")
            self._stream.flush()
            self._shown = True

    def done(self) -> None:
        """Clear the status line so the summary starts on a clean line."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False
