"""Commits: buffer what a transaction writes, hand one change to the log per commit.

The write patches (``patches.py``) call :func:`record` after each write. Inside a transaction
the rows are buffered per savepoint, dropped when their savepoint or the transaction rolls back,
and handed to the sink once, right after the commit (``patches.py`` calls :func:`committed`).
In autocommit mode a statement is its own commit and is handed over at once.

The sink is whatever ``connect()`` was given (the app connects the backend's change log in
``AppConfig.ready``): this stage knows nothing of backends.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from ..records import RowChange
from ..settings import reactive_settings
from . import identities

logger = logging.getLogger("reactive.capture")

_local = threading.local()


class ChangeSink(Protocol):
    """Where committed changes go, and what the write patches need to know to capture them."""

    def append(
        self, rows: tuple[RowChange, ...], opaque_tables: frozenset[str], revoked: frozenset[str]
    ) -> int:
        """Append one commit's changes to the change log; return its version."""
        ...

    def watched_columns(self, table: str) -> frozenset[str] | None:
        """Columns some live query constrains on ``table``; None if no live query reads it."""
        ...


_sink: ChangeSink | None = None


def connect(sink: ChangeSink | None) -> None:
    """Send committed changes to ``sink`` from now on (None: capture nothing)."""
    global _sink
    _sink = sink


def watched_columns(table: str, write: str) -> frozenset[str] | None:
    """Columns whose old values an ``"update"`` or ``"delete"`` of ``table`` must read (None: no
    need). The primary key is read with them, and for a write that may end a sign-in (a user
    updated or deleted, a session deleted) it is read even when no query watches the table."""
    if _sink is None:
        return None
    watched = None if table in reactive_settings.IGNORED_TABLES else _sink.watched_columns(table)
    if watched is None and identities.must_read_keys(table, write):
        return frozenset()
    return watched


class _Part:
    __slots__ = ("opaque_tables", "revoked", "rows", "savepoints")

    def __init__(
        self, savepoints: set[str], rows: list[RowChange], opaque_tables: set[str], revoked: frozenset[str]
    ) -> None:
        self.savepoints = savepoints
        self.rows = rows
        self.opaque_tables = opaque_tables
        self.revoked = revoked


class PendingCommit:
    """The writes of one open transaction on one connection, by the savepoints they were made in."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[_Part] = []

    def add(
        self, savepoints: set[str], rows: list[RowChange], opaque_tables: set[str], revoked: frozenset[str]
    ) -> None:
        self.parts.append(_Part(savepoints, rows, opaque_tables, revoked))

    def drop_savepoint(self, sid: str) -> None:
        self.parts = [part for part in self.parts if sid not in part.savepoints]


# Open transactions' writes, per connection (connections are per thread; weak, so a connection
# that is thrown away takes its buffer with it).
_pending: weakref.WeakKeyDictionary[object, PendingCommit] = weakref.WeakKeyDictionary()


def record(
    connection, rows: list[RowChange], opaque_tables: Iterable[str] = (), *, raw_sql: bool = False
) -> None:
    """Note writes made on ``connection``; they are handed over when (if) they commit.

    ``raw_sql``: the write is SQL sent straight to a cursor, of unknown kind (it may delete).
    """
    # Before dropping ignored tables: a deleted session ends a sign-in even though its table
    # never re-runs a query.
    revoked = identities.revoked_by(rows, opaque_tables, raw_sql=raw_sql)
    ignored = reactive_settings.IGNORED_TABLES
    rows = [row for row in rows if row.table not in ignored]
    opaque = {table for table in opaque_tables if table not in ignored}
    if not rows and not opaque and not revoked:
        return
    if connection.in_atomic_block or not connection.get_autocommit():
        pending = _pending.get(connection)
        if pending is None:
            pending = _pending[connection] = PendingCommit()
        pending.add(set(connection.savepoint_ids), rows, opaque, revoked)
    else:
        publish(rows, opaque, revoked)


def savepoint_rolled_back(connection, sid: str) -> None:
    pending = _pending.get(connection)
    if pending is not None:
        pending.drop_savepoint(sid)


def committed(connection) -> None:
    """The connection's transaction committed: hand its writes over as one change."""
    pending = _pending.pop(connection, None)
    if pending is not None and pending.parts:
        parts = pending.parts
        publish(
            [row for part in parts for row in part.rows],
            {table for part in parts for table in part.opaque_tables},
            frozenset().union(*(part.revoked for part in parts)),
        )


def rolled_back(connection) -> None:
    """The connection's transaction rolled back (or the connection closed): forget its writes."""
    _pending.pop(connection, None)


def publish(
    rows: list[RowChange], opaque_tables: set[str], revoked: frozenset[str] = frozenset()
) -> int | None:
    """Append one change record to the log; remember its version for this thread.

    The commit has happened: if the log cannot be reached, the record is kept and appended by
    a background thread as soon as it can be (in order), rather than lost.
    """
    if _sink is None:
        return None
    version = _retrier.append(_sink, (tuple(rows), frozenset(opaque_tables), revoked))
    versions = getattr(_local, "versions", None)
    if versions is not None and version is not None:
        versions.append(version)
    return version


_Record = tuple[tuple[RowChange, ...], frozenset[str], frozenset[str]]


class _Retrier:
    """Appends records the log refused, oldest first, until it accepts them."""

    def __init__(self) -> None:
        self.pending: list[tuple[ChangeSink, _Record]] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def append(self, sink: ChangeSink, record: _Record) -> int | None:
        if not self.pending:
            # The usual path takes no lock: concurrent commits may be appended in either order.
            try:
                return sink.append(*record)
            except Exception as exc:
                logger.error("Could not append a committed change to the log (%s); retrying", exc)
        with self.lock:
            self.pending.append((sink, record))
            if self.thread is None:
                self.thread = threading.Thread(target=self._retry, name="reactive-publish-retry", daemon=True)
                self.thread.start()
        return None

    def _retry(self) -> None:
        delay = 0.1
        while True:
            with self.lock:
                try:
                    while self.pending:
                        sink, record = self.pending[0]
                        sink.append(*record)
                        self.pending.pop(0)
                    logger.warning("Appended the changes the log had refused")
                    self.thread = None  # under the lock: a record added later starts a new one
                    return
                except Exception:
                    pass
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


_retrier = _Retrier()


class CommitVersions:
    """The versions of the change records this thread published inside a ``commit_versions()`` block."""

    def __init__(self) -> None:
        self.versions: list[int] = []

    @property
    def last(self) -> int | None:
        return self.versions[-1] if self.versions else None


@contextmanager
def commit_versions() -> Iterator[CommitVersions]:
    collected = CommitVersions()
    previous = getattr(_local, "versions", None)
    _local.versions = collected.versions
    try:
        yield collected
    finally:
        _local.versions = previous
        if previous is not None:
            previous.extend(collected.versions)
