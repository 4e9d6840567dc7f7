"""The tamper-evident break-glass audit log: entries, their hash chain, the sink seam, verification.

Owns: AuditEntry, ChainHead, GENESIS_HASH, seal, entry_hash, encode_entry, decode_entry,
AuditSink (Protocol), InMemoryAuditSink, verify, verify_sink, VerifyReport, AuditProblem, TamperKind,
export_entries.
Must not import: gateway, policy_engine, aiohttp (stdlib and orjson only).

Canonical form
--------------
An entry's hash is the SHA-256 (lowercase hex) of::

    orjson.dumps({"v": 1, "seq": seq, "prev_hash": prev_hash, "event": {...}},
                 option=orjson.OPT_SORT_KEYS)

where ``event`` always has every key: ``kind``, ``grant_id``, ``at`` and ``expires_at`` (UTC,
``2026-11-22T15:00:00.000000+00:00`` or null), ``actor``, ``user``, ``user_email``,
``device_serial``, ``scope`` (``{"tier", "route_set", "routes": sorted list}``), ``reason``,
``duration_s`` (int or null), ``failing_checks`` (list of ``{"name", "detail"}`` in request order),
``route_id`` (or null) and ``flags`` (sorted list). The first entry has ``seq`` 1 and
``prev_hash`` ``GENESIS_HASH``; each next entry has ``seq + 1`` and the previous entry's hash.
``encode_entry`` adds ``"hash"`` to the same object: that is the stored and exported form.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Literal, Protocol

import orjson

from breakglass.errors import AuditConflict, AuditIntegrityError
from breakglass.model import AuditEvent, EventKind, FailingCheck, Scope

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""

_EVENT_KEYS = frozenset(
    {
        "kind", "grant_id", "at", "actor", "user", "user_email", "device_serial", "scope",
        "reason", "duration_s", "expires_at", "failing_checks", "route_id", "flags",
    }
)
_ENTRY_KEYS = frozenset({"v", "seq", "prev_hash", "event", "hash"})


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry of the chain: its seq and hash (``seq`` 0 and ``GENESIS_HASH`` when empty)."""

    seq: int
    hash: str


GENESIS_HEAD = ChainHead(seq=0, hash=GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event in the chain, with its position and the hashes that bind it to its neighbours."""

    seq: int
    prev_hash: str
    hash: str
    event: AuditEvent

    @property
    def head(self) -> ChainHead:
        """This entry as a chain head."""
        return ChainHead(seq=self.seq, hash=self.hash)


# --- canonical encoding -------------------------------------------------------------------------


def _dt(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _event_to_dict(event: AuditEvent) -> dict[str, object]:
    duration = event.duration
    return {
        "kind": event.kind.value,
        "grant_id": event.grant_id,
        "at": _dt(event.at),
        "actor": event.actor,
        "user": event.user,
        "user_email": event.user_email,
        "device_serial": event.device_serial,
        "scope": {
            "tier": event.scope.tier,
            "route_set": event.scope.route_set,
            "routes": sorted(event.scope.routes),
        },
        "reason": event.reason,
        # INVARIANT: durations are whole seconds (checked by AuditEvent.__post_init__).
        "duration_s": None if duration is None else duration // timedelta(seconds=1),
        "expires_at": _dt(event.expires_at),
        "failing_checks": [{"name": c.name, "detail": c.detail} for c in event.failing_checks],
        "route_id": event.route_id,
        "flags": sorted(event.flags),
    }


def _payload(seq: int, prev_hash: str, event: AuditEvent) -> dict[str, object]:
    return {"v": FORMAT_VERSION, "seq": seq, "prev_hash": prev_hash, "event": _event_to_dict(event)}


def entry_hash(seq: int, prev_hash: str, event: AuditEvent) -> str:
    """The hash an entry with these contents must carry."""
    canonical = orjson.dumps(_payload(seq, prev_hash, event), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def seal(events: Sequence[AuditEvent], *, head: ChainHead) -> tuple[AuditEntry, ...]:
    """Chain ``events`` after ``head``: consecutive seqs, each linked to the one before."""
    sealed: list[AuditEntry] = []
    seq, prev = head.seq, head.hash
    for event in events:
        seq += 1
        digest = entry_hash(seq, prev, event)
        sealed.append(AuditEntry(seq=seq, prev_hash=prev, hash=digest, event=event))
        prev = digest
    return tuple(sealed)


def encode_entry(entry: AuditEntry) -> bytes:
    """The stored and exported JSON of ``entry``: the canonical object plus its ``hash``."""
    payload = _payload(entry.seq, entry.prev_hash, entry.event)
    payload["hash"] = entry.hash
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def decode_entry(raw: bytes | str) -> AuditEntry:
    """Read an entry written by ``encode_entry``; unknown or missing keys are refused.

    The hash is not checked here (``verify`` does that, and names the entry).

    Raises:
        AuditIntegrityError: the text is not a well-formed entry.
    """
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict) or set(data) != _ENTRY_KEYS:
            raise ValueError(f"keys must be {sorted(_ENTRY_KEYS)}")
        if data["v"] != FORMAT_VERSION:
            raise ValueError(f"version `{data['v']}` is not {FORMAT_VERSION}")
        seq, prev_hash, digest = data["seq"], data["prev_hash"], data["hash"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"seq `{seq}` is not a positive integer")
        if not isinstance(prev_hash, str) or not isinstance(digest, str):
            raise ValueError("prev_hash and hash must be strings")
        event = _event_from_dict(data["event"])
    except (ValueError, TypeError, KeyError) as exc:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        raise AuditIntegrityError(
            f"unreadable audit entry `{text[:80]}`: {exc}; run `gatehouse audit verify`"
        ) from exc
    return AuditEntry(seq=seq, prev_hash=prev_hash, hash=digest, event=event)


def _str(data: dict[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"`{key}` must be a string")
    return value


def _opt_str(data: dict[str, object], key: str) -> str | None:
    value = data[key]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"`{key}` must be a string or null")
    return value


def _opt_dt(data: dict[str, object], key: str) -> datetime | None:
    text = _opt_str(data, key)
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"`{key}` has no timezone")
    return value


def _str_list(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"`{key}` must be a list of strings")
    return value


def _event_from_dict(data: object) -> AuditEvent:
    if not isinstance(data, dict) or set(data) != _EVENT_KEYS:
        raise ValueError(f"event keys must be {sorted(_EVENT_KEYS)}")
    scope = data["scope"]
    if not isinstance(scope, dict) or set(scope) != {"tier", "route_set", "routes"}:
        raise ValueError("`scope` must have tier, route_set and routes")
    checks = data["failing_checks"]
    if not isinstance(checks, list):
        raise ValueError("`failing_checks` must be a list")
    parsed_checks = []
    for check in checks:
        if not isinstance(check, dict) or set(check) != {"name", "detail"}:
            raise ValueError("each failing check must have name and detail")
        parsed_checks.append(FailingCheck(name=_str(check, "name"), detail=_str(check, "detail")))
    duration_s = data["duration_s"]
    if duration_s is not None and (not isinstance(duration_s, int) or isinstance(duration_s, bool)):
        raise ValueError("`duration_s` must be an integer or null")
    at = _opt_dt(data, "at")
    if at is None:
        raise ValueError("`at` is missing")
    return AuditEvent(
        kind=EventKind(_str(data, "kind")),
        grant_id=_str(data, "grant_id"),
        at=at,
        actor=_str(data, "actor"),
        user=_str(data, "user"),
        user_email=_str(data, "user_email"),
        device_serial=_str(data, "device_serial"),
        scope=Scope(
            tier=_str(scope, "tier"),
            route_set=_opt_str(scope, "route_set"),
            routes=frozenset(_str_list(scope["routes"], "scope.routes")),
        ),
        reason=_str(data, "reason"),
        duration=None if duration_s is None else timedelta(seconds=duration_s),
        expires_at=_opt_dt(data, "expires_at"),
        failing_checks=tuple(parsed_checks),
        route_id=_opt_str(data, "route_id"),
        flags=frozenset(_str_list(data["flags"], "flags")),
    )


# --- the sink seam ------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Durable, append-only storage of the audit chain; ``gateway/store`` implements it.

    The service computes every entry (seq, prev_hash, hash) with ``seal``; a sink stores entries,
    it never computes or changes them. Store each entry as ``encode_entry(entry)`` (plus ``seq``
    and ``hash`` columns if useful) and rebuild it with ``decode_entry``.

    Contract:

    - **Compare-and-append.** ``append(entries)`` stores the batch only if the stored head is
      exactly ``(entries[0].seq - 1, entries[0].prev_hash)``; otherwise it writes nothing and
      raises ``AuditConflict``. This check and the insert are one atomic step (one transaction:
      SQLite ``BEGIN IMMEDIATE``; PostgreSQL a primary key on ``seq`` plus ``SELECT ... FOR
      UPDATE`` of the head row). Two writers racing for the same seq therefore cannot fork the
      chain: one wins, the other gets ``AuditConflict``, reads what it missed and retries. This
      also makes the per-user self-grant limit hold across processes.
    - **All or nothing.** A batch (``requested`` + ``granted``, say) is stored entirely or not at all.
    - **Durable before return.** When ``append`` returns, the entries survive a crash or
      ``kill -9`` (committed with ``synchronous=FULL`` on SQLite, a committed transaction on
      PostgreSQL). If it raises, nothing may have been stored; when a backend cannot tell (the
      connection dropped during commit) it raises anyway and the service re-reads the log to find
      out.
    - **Head kept separately.** The sink keeps the head (seq and hash) in its own record, updated
      in the same transaction as the entries, so that deleting entries from the end is detectable
      (``verify(..., expected_head=await sink.head())``).
    - **Ordered reads.** ``entries(after_seq=n)`` returns every entry with ``seq > n`` in ascending
      seq order, exactly as stored (do not repair or skip anything: ``verify`` must see tampering).
      For verification, read ``head()`` and ``entries()`` in one read transaction or snapshot.
    - **Concurrency.** Each method may be called from concurrent tasks of one event loop; a sink
      shared between threads or processes must make ``append`` atomic as above.
    - **Never rewrite.** There is no update or delete.
    """

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """Durably store ``entries`` after the current head, all or nothing.

        Raises:
            AuditConflict: the head is not the one ``entries[0]`` follows; nothing was written.
            Exception: any storage failure (the service turns it into ``AuditWriteError``).
        """
        ...

    async def entries(self, *, after_seq: int = 0) -> Sequence[AuditEntry]:
        """Every stored entry with ``seq > after_seq``, in ascending order, unmodified."""
        ...

    async def head(self) -> ChainHead:
        """The stored head; ``GENESIS_HEAD`` for an empty log."""
        ...


def check_batch(entries: Sequence[AuditEntry], head: ChainHead) -> None:
    """The checks every sink makes before storing a batch (part of the ``AuditSink`` contract).

    Raises:
        ValueError: the batch is empty, or its entries do not link or carry wrong hashes.
        AuditConflict: the first entry does not follow ``head`` (another writer appended first).
    """
    if not entries:
        raise ValueError("an empty batch cannot be appended; pass at least one entry")
    if entries[0].seq != head.seq + 1 or entries[0].prev_hash != head.hash:
        raise AuditConflict(expected_seq=entries[0].seq, head_seq=head.seq)
    previous = head
    for entry in entries:
        if entry.seq != previous.seq + 1 or entry.prev_hash != previous.hash:
            raise ValueError(f"entry {entry.seq} does not follow entry {previous.seq}; seal the batch")
        if entry.hash != entry_hash(entry.seq, entry.prev_hash, entry.event):
            raise ValueError(f"entry {entry.seq} carries a wrong hash; seal the batch")
        previous = entry.head


class InMemoryAuditSink:
    """An ``AuditSink`` in a list: the reference for store backends, and the sink used in tests.

    Safe to share between threads and event loops (a ``threading.Lock`` guards each call, and no
    call awaits while holding it). "Durable" here means "in this process's memory".
    """

    def __init__(self, entries: Iterable[AuditEntry] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: list[AuditEntry] = list(entries)
        self._head = self._entries[-1].head if self._entries else GENESIS_HEAD

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """Store ``entries`` if they follow the head (see ``AuditSink.append``)."""
        with self._lock:
            check_batch(entries, self._head)
            self._entries.extend(entries)
            self._head = entries[-1].head

    async def entries(self, *, after_seq: int = 0) -> Sequence[AuditEntry]:
        """Entries with ``seq > after_seq`` in stored order."""
        with self._lock:
            return tuple(e for e in self._entries if e.seq > after_seq)

    async def head(self) -> ChainHead:
        """The head recorded by the last successful append."""
        with self._lock:
            return self._head

    def snapshot(self) -> tuple[ChainHead, tuple[AuditEntry, ...]]:
        """The head and every entry, read together (what ``gatehouse audit verify`` needs)."""
        with self._lock:
            return self._head, tuple(self._entries)


# --- verification -------------------------------------------------------------------------------


class TamperKind(StrEnum):
    """What ``verify`` found wrong with the chain."""

    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One sign of tampering, at the entry ``seq`` (as numbered in the log)."""

    kind: TamperKind
    seq: int
    message: str

    def __str__(self) -> str:
        return f"{self.kind.value} at entry {self.seq}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of ``verify``: how many entries were read, the last good head, every problem."""

    checked: int
    head: ChainHead
    problems: tuple[AuditProblem, ...]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def kinds(self) -> frozenset[TamperKind]:
        """The kinds of tampering found."""
        return frozenset(p.kind for p in self.problems)


_FIX = "restore the log from a backup and investigate who had write access"


def verify(entries: Iterable[AuditEntry], *, expected_head: ChainHead | None = None) -> VerifyReport:
    """Check the chain and name every modified, deleted, inserted, reordered or truncated entry.

    ``entries`` are in stored order. Pass the sink's separately stored head as ``expected_head``
    to detect entries removed from the end (and entries appended without updating the head).
    Without it, a truncated tail is indistinguishable from a shorter log.
    """
    stored = list(entries)
    problems: list[AuditProblem] = []

    content_ok = [entry_hash(e.seq, e.prev_hash, e.event) == e.hash for e in stored]
    for entry, ok in zip(stored, content_ok):
        if not ok:
            problems.append(AuditProblem(
                TamperKind.MODIFIED, entry.seq,
                f"entry {entry.seq} (grant `{entry.event.grant_id}`, {entry.event.kind.value}) "
                f"does not match its hash; it was modified; {_FIX}",
            ))

    for before, after in zip(stored, stored[1:]):
        if after.seq < before.seq:
            problems.append(AuditProblem(
                TamperKind.REORDERED, after.seq,
                f"entry {after.seq} is stored after entry {before.seq}; entries were reordered; {_FIX}",
            ))

    order = sorted(range(len(stored)), key=lambda i: stored[i].seq)
    chain = [stored[i] for i in order]
    chain_ok = [content_ok[i] for i in order]
    accepted: dict[int, str] = {0: GENESIS_HASH}
    prev = GENESIS_HEAD
    prev_ok = True
    i = 0
    while i < len(chain):
        entry = chain[i]
        nxt = chain[i + 1] if i + 1 < len(chain) else None
        after_next = chain[i + 2] if i + 2 < len(chain) else None
        links = entry.prev_hash == prev.hash
        if links and entry.seq == prev.seq + 1:
            # Two entries claim the same place: the genuine one is what the chain continues
            # from (or, at the end, what the stored head names).
            forged = (
                nxt is not None
                and nxt.seq == entry.seq
                and nxt.prev_hash == prev.hash
                and (
                    after_next.prev_hash == nxt.hash
                    if after_next is not None
                    else expected_head is not None and expected_head == nxt.head
                )
            )
            if forged:
                problems.append(_inserted(entry, prev))
                i += 1
                continue
        elif nxt is not None and entry.prev_hash == nxt.hash and nxt.prev_hash == prev.hash:
            problems.append(AuditProblem(
                TamperKind.REORDERED, entry.seq,
                f"entries {entry.seq} and {nxt.seq} were swapped: entry {entry.seq} follows "
                f"the entry numbered {nxt.seq}; {_FIX}",
            ))
            accepted[entry.seq], accepted[nxt.seq] = entry.hash, nxt.hash
            prev, prev_ok = ChainHead(max(entry.seq, nxt.seq), entry.hash), True
            i += 2
            continue
        elif entry.seq <= prev.seq or (nxt is not None and nxt.prev_hash == prev.hash):
            problems.append(_inserted(entry, prev))
            i += 1
            continue
        elif entry.seq > prev.seq + 1:
            first, last = prev.seq + 1, entry.seq - 1
            which = f"entry {first} is" if first == last else f"entries {first} to {last} are"
            problems.append(AuditProblem(
                TamperKind.DELETED, first,
                f"{which} missing before entry {entry.seq}; deleted from the log; {_FIX}",
            ))
        elif prev_ok and chain_ok[i] and prev.seq > 0:
            problems.append(AuditProblem(
                TamperKind.MODIFIED, prev.seq,
                f"entry {entry.seq} does not link to entry {prev.seq}; entry {prev.seq} was "
                f"replaced or rewritten; {_FIX}",
            ))
        elif prev_ok and chain_ok[i]:
            problems.append(AuditProblem(
                TamperKind.MODIFIED, entry.seq,
                f"entry {entry.seq} does not start from the genesis hash; it was rewritten; {_FIX}",
            ))
        accepted[entry.seq] = entry.hash
        prev, prev_ok = entry.head, chain_ok[i]
        i += 1

    if expected_head is not None:
        if prev.seq < expected_head.seq:
            first = prev.seq + 1
            problems.append(AuditProblem(
                TamperKind.TRUNCATED, first,
                f"the log ends at entry {prev.seq} but the stored head is entry {expected_head.seq}; "
                f"entries {first} to {expected_head.seq} were removed from the end; {_FIX}",
            ))
        else:
            if accepted.get(expected_head.seq) != expected_head.hash:
                problems.append(AuditProblem(
                    TamperKind.MODIFIED, expected_head.seq,
                    f"entry {expected_head.seq} does not match the stored head; the chain was "
                    f"rewritten up to it; {_FIX}",
                ))
            for seq in sorted(s for s in accepted if s > expected_head.seq):
                problems.append(AuditProblem(
                    TamperKind.INSERTED, seq,
                    f"entry {seq} is beyond the stored head (entry {expected_head.seq}); it was "
                    f"added without the head being updated; {_FIX}",
                ))

    problems.sort(key=lambda p: (p.seq, p.kind.value))
    return VerifyReport(checked=len(stored), head=prev, problems=tuple(problems))


async def verify_sink(sink: AuditSink) -> VerifyReport:
    """Verify everything in ``sink`` against its stored head, tolerating appends made meanwhile.

    Reads the head, then the entries, then the head again. When the entries reach the second
    head, they are checked against it. When the head moved past what was read (an append after
    the read), the entries up to the first head are checked against the first head, and newer
    ones are left for the next run. This is what ``gatehouse audit verify`` should call.

    Raises:
        Exception: whatever the sink raises when it cannot be read.
    """
    before = await sink.head()
    entries = list(await sink.entries())
    after = await sink.head()
    last_seq = max((e.seq for e in entries), default=0)
    if last_seq >= after.seq:
        # Everything the head covers was read; anything past it was added without the head.
        return verify(entries, expected_head=after)
    # The head is ahead of what was read: entries were truncated, or appended after the read.
    return verify([e for e in entries if e.seq <= before.seq], expected_head=before)


def _inserted(entry: AuditEntry, prev: ChainHead) -> AuditProblem:
    return AuditProblem(
        TamperKind.INSERTED, entry.seq,
        f"an entry numbered {entry.seq} (grant `{entry.event.grant_id}`, {entry.event.kind.value}, "
        f"hash {entry.hash[:12]}) is not part of the chain after entry {prev.seq}; it was "
        f"inserted; {_FIX}",
    )


# --- export -------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "seq", "at", "kind", "grant_id", "actor", "user", "user_email", "device_serial", "tier",
    "route_set", "routes", "reason", "duration_s", "expires_at", "route_id", "failing_checks",
    "flags", "prev_hash", "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells starting with these as formulas; reasons are user-written.
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_entries(
    entries: Iterable[AuditEntry],
    *,
    fmt: Literal["jsonl", "csv"] = "jsonl",
    since: datetime | None = None,
) -> Iterator[str]:
    """Yield the entries (at or after ``since``) as records, each ending in ``\\n``.

    ``jsonl`` yields ``encode_entry`` per line (re-verifiable with ``decode_entry`` + ``verify``
    when nothing is filtered out). ``csv`` yields a header, then one row per entry with the columns
    of ``CSV_COLUMNS``; cells that a spreadsheet would run as a formula get a leading ``'``, and a
    quoted reason may span lines, so write the records as they come.

    Raises:
        ValueError: ``fmt`` is neither ``jsonl`` nor ``csv``, or ``since`` has no timezone.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"export format `{fmt}` is unknown; use `jsonl` or `csv`")
    if since is not None and since.utcoffset() is None:
        raise ValueError(f"`{since.isoformat()}` has no timezone; pass a UTC date such as `2026-11-01T00:00Z`")
    selected = (e for e in entries if since is None or e.event.at >= since)
    if fmt == "jsonl":
        for entry in selected:
            yield encode_entry(entry).decode("utf-8") + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def row(values: Sequence[object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield row(CSV_COLUMNS)
    for entry in selected:
        event = entry.event
        duration = None if event.duration is None else event.duration // timedelta(seconds=1)
        yield row([
            entry.seq, _dt(event.at), event.kind.value, _cell(event.grant_id), _cell(event.actor),
            _cell(event.user), _cell(event.user_email), _cell(event.device_serial),
            _cell(event.scope.tier), _cell(event.scope.route_set),
            _cell(" ".join(sorted(event.scope.routes))), _cell(event.reason), duration,
            _dt(event.expires_at), _cell(event.route_id),
            _cell("; ".join(f"{c.name}: {c.detail}" for c in event.failing_checks)),
            " ".join(sorted(event.flags)), entry.prev_hash, entry.hash,
        ])
