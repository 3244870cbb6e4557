"""Commits: buffer what a transaction writes, append one change record inside the transaction.

The write patches (``patches.py``) call :func:`record` after each write. Inside a transaction the
rows are buffered per savepoint and dropped when their savepoint or the transaction rolls back.
At the last moment before COMMIT (``patches.py`` calls :func:`before_commit`) what is left is
appended to the change log table (``logtable.py``) in the same transaction, so the
record commits or rolls back with the data, whichever process wrote it, and a process that dies
right after COMMIT loses nothing. The patches open a transaction around a write made in
autocommit mode, so that the write and its record commit together.

After the commit the sink hears of it (``ChangeSink.committed``): a process tailing the log
wakes at once for its own commits. The sink is whatever ``connect()`` was given (the app
connects the backends in ``AppConfig.ready``): this stage knows nothing of backends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from ..records import RowChange, encode_change
from ..settings import reactive_settings
from . import identities, logtable, origin


class _Local(threading.local):
    versions: list[int] | None = None  # inside commit_versions(): the versions committed


_local = _Local()


class ChangeSink(Protocol):
    """Who hears of this process's commits, and what the write patches need to capture them."""

    def committed(self, version: int) -> None:
        """This process committed the change record at ``version``."""
        ...

    def watched_columns(self, table: str) -> frozenset[str] | None:
        """Columns some live query constrains on ``table``; None if no live query reads it."""
        ...


class Hooks:
    """Test hooks: a deterministic place to stop a writer."""

    # Called right after a commit that appended a change record returns, before anything else.
    after_commit: Callable[[], None] | None = None


hooks = Hooks()

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


def tracks(table: str) -> bool:
    """Whether a write of ``table`` appends a change record (so needs a transaction around it)."""
    return _sink is not None and table not in reactive_settings.IGNORED_TABLES


_EMPTY: frozenset[str] = frozenset()
# One write of a transaction: the savepoints open when it ran, then what ``record`` was given
# (rows, tables written without rows, sign-ins ended). A plain tuple: one is made for every write.
_Part = tuple[frozenset[str], list[RowChange], frozenset[str], frozenset[str]]


class PendingCommit:
    """The open transaction of one connection: its writes, by the savepoints they were made in,
    and whether the write patches opened it (``own``: around a write made in autocommit mode,
    while Django still sees autocommit).

    Kept on the connection itself (``connection.reactive_pending``): connections are per
    thread, and one that is thrown away takes its buffer with it.
    """

    __slots__ = ("own", "parts")

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.own = False

    def drop_savepoint(self, sid: str) -> None:
        self.parts = [part for part in self.parts if sid not in part[0]]

    def clear(self) -> None:
        self.parts = []
        self.own = False

    def encoded(self) -> str | None:
        """The transaction's change record, encoded; None if it wrote nothing watchable."""
        parts = self.parts
        if not parts or _sink is None:
            return None
        if len(parts) == 1:  # most transactions: one write
            _savepoints, rows, opaque, revoked = parts[0]
        else:
            rows = [row for part in parts for row in part[1]]
            opaque = _EMPTY.union(*(part[2] for part in parts))
            revoked = _EMPTY.union(*(part[3] for part in parts))
        return encode_change(rows, opaque, revoked, origin.current(rows, opaque))


def encoded_alone(rows: list[RowChange], opaque_tables: frozenset[str]) -> str:
    """The change record of one write that is the whole of its transaction, its tables tracked
    (``tracks``): straight from its changes, without the buffer ``record`` keeps for
    transactions of several writes."""
    revoked = identities.revoked_by(rows, opaque_tables)
    return encode_change(rows, opaque_tables, revoked, origin.current(rows, opaque_tables))


def pending_commit(connection) -> PendingCommit:
    """``connection``'s open transaction, as the capture sees it."""
    try:
        return connection.reactive_pending
    except AttributeError:  # the connection's first transaction
        pending = connection.reactive_pending = PendingCommit()
        return pending


def record(
    connection,
    rows: list[RowChange],
    opaque_tables: Iterable[str] = (),
    *,
    raw_sql: bool = False,
    revoked: Iterable[str] = (),
) -> None:
    """Note writes made on ``connection``; they are logged when (if) their transaction commits.

    ``raw_sql``: the write is SQL sent straight to a cursor, of unknown kind (it may delete).
    ``revoked``: sign-ins it ends besides those its rows show (``identities.py``).
    """
    if _sink is None:
        return
    # Before dropping ignored tables: a deleted session ends a sign-in even though its table
    # never re-runs a query.
    ends = identities.revoked_by(rows, opaque_tables, raw_sql=raw_sql)
    if revoked:
        ends = ends.union(revoked)
    ignored = reactive_settings.IGNORED_TABLES
    for row in rows:  # a loop, not a comprehension: most writes keep every row
        if row.table in ignored:
            rows = [row for row in rows if row.table not in ignored]
            break
    opaque = frozenset(opaque_tables).difference(ignored) if opaque_tables else _EMPTY
    if not rows and not opaque and not ends:
        return
    pending = pending_commit(connection)
    if pending.own or connection.in_atomic_block or not connection.get_autocommit():
        savepoints = connection.savepoint_ids
        pending.parts.append((frozenset(savepoints) if savepoints else _EMPTY, rows, opaque, ends))
    else:
        # A statement the patches do not wrap (a schema change in autocommit mode) has committed
        # on its own: its record follows, in a transaction of its own on that same connection
        # (which may be one Django opened outside DATABASES, to create the test database).
        connection.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        try:
            pending.clear()
            pending.parts.append((_EMPTY, rows, opaque, ends))
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.set_autocommit(True)


def savepoint_rolled_back(connection, sid: str) -> None:
    pending_commit(connection).drop_savepoint(sid)


def before_commit(connection) -> int | None:
    """Append the transaction's change record to the log, inside the transaction; its version
    (None: the transaction wrote nothing watchable)."""
    changes = pending_commit(connection).encoded()
    return None if changes is None else logtable.append(connection, changes)


def committed(connection, version: int | None) -> None:
    """The connection's transaction committed, with the change record at ``version`` if any."""
    pending = getattr(connection, "reactive_pending", None)  # None: no write on it yet
    if pending is not None:
        pending.clear()
    if version is None:
        return
    if hooks.after_commit is not None:
        hooks.after_commit()
    versions = _local.versions
    if versions is not None:
        versions.append(version)
    if _sink is not None:
        _sink.committed(version)


def rolled_back(connection) -> None:
    """The connection's transaction rolled back (or the connection closed): forget its writes."""
    pending_commit(connection).clear()


class CommitVersions:
    """The versions of the change records this thread committed inside a ``commit_versions()`` block."""

    def __init__(self) -> None:
        self.versions: list[int] = []

    @property
    def last(self) -> int | None:
        return self.versions[-1] if self.versions else None


@contextmanager
def commit_versions() -> Iterator[CommitVersions]:
    collected = CommitVersions()
    previous = _local.versions
    _local.versions = collected.versions
    try:
        yield collected
    finally:
        _local.versions = previous
        if previous is not None:
            previous.extend(collected.versions)
