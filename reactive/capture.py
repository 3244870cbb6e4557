"""Write capture: buffer what a transaction writes, publish one change record per commit.

The compiler and cursor patches (``patches.py``) call :func:`record` after each write. Inside a
transaction the rows are buffered per savepoint, dropped when their savepoint rolls back, and
published once, right after the outermost commit, by a callback of Django's own ``on_commit``
machinery. In autocommit mode a statement is its own commit and is published at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .changes import RowChange
from .settings import reactive_settings

logger = logging.getLogger("reactive.capture")

_local = threading.local()


class _Part:
    __slots__ = ("opaque_tables", "rows", "savepoints")

    def __init__(self, savepoints: set[str], rows: list[RowChange], opaque_tables: set[str]) -> None:
        self.savepoints = savepoints
        self.rows = rows
        self.opaque_tables = opaque_tables


class PendingCommit:
    """The writes of one open transaction on one connection."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.parts: list[_Part] = []

    def add(self, rows: list[RowChange], opaque_tables: set[str]) -> None:
        self.parts.append(_Part(set(self.connection.savepoint_ids), rows, opaque_tables))

    def drop_savepoint(self, sid: str) -> None:
        self.parts = [part for part in self.parts if sid not in part.savepoints]

    def flush(self) -> None:
        """Run by Django right after the outermost commit."""
        if getattr(self.connection, "_reactive_pending", None) is self:
            self.connection._reactive_pending = None
        parts, self.parts = self.parts, []
        publish(
            [row for part in parts for row in part.rows],
            {table for part in parts for table in part.opaque_tables},
        )


def record(connection, rows: list[RowChange], opaque_tables: Iterable[str] = ()) -> None:
    """Note writes made on ``connection``; they are published when (if) they commit."""
    ignored = reactive_settings.IGNORED_TABLES
    rows = [row for row in rows if row.table not in ignored]
    opaque = {table for table in opaque_tables if table not in ignored}
    if not rows and not opaque:
        return
    if connection.in_atomic_block:
        _pending_commit(connection).add(rows, opaque)
    elif connection.get_autocommit():
        publish(rows, opaque)
    else:
        # Manual transaction management: published by the commit() patch, dropped by rollback().
        manual = connection.__dict__.setdefault("_reactive_manual", [])
        manual.append((rows, opaque))


def _pending_commit(connection) -> PendingCommit:
    pending = getattr(connection, "_reactive_pending", None)
    if pending is not None and any(entry[1] == pending.flush for entry in connection.run_on_commit):
        return pending
    # A rollback clears run_on_commit and with it a previous transaction's pending writes.
    pending = PendingCommit(connection)
    connection._reactive_pending = pending
    # First in line and bound to no savepoint: a failing user callback registered earlier
    # cannot keep the change from being published, and savepoint rollbacks are handled by
    # drop_savepoint() for the rows themselves.
    connection.run_on_commit.insert(0, (set(), pending.flush, True))
    return pending


def savepoint_rolled_back(connection, sid: str) -> None:
    pending = getattr(connection, "_reactive_pending", None)
    if pending is not None:
        pending.drop_savepoint(sid)


def manual_commit_done(connection) -> None:
    manual = connection.__dict__.pop("_reactive_manual", None)
    if manual:
        publish([row for rows, _ in manual for row in rows], {t for _, opaque in manual for t in opaque})


def manual_rollback_done(connection) -> None:
    connection.__dict__.pop("_reactive_manual", None)


def publish(rows: list[RowChange], opaque_tables: set[str]) -> int | None:
    """Append one change record to the log; remember its version for this thread.

    The commit has happened: if the log cannot be reached, the record is kept and appended by
    a background thread as soon as it can be (in order), rather than lost.
    """
    record = (tuple(rows), frozenset(opaque_tables))
    version = _retrier.append(record)
    versions = getattr(_local, "versions", None)
    if versions is not None and version is not None:
        versions.append(version)
    return version


class _Retrier:
    """Appends records the log refused, oldest first, until it accepts them."""

    def __init__(self) -> None:
        self.pending: list[tuple[tuple[RowChange, ...], frozenset[str]]] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def append(self, record: tuple[tuple[RowChange, ...], frozenset[str]]) -> int | None:
        from .backends import get_backend

        if not self.pending:
            # The usual path takes no lock: concurrent commits may be appended in either order.
            try:
                return get_backend().log.append(*record)
            except Exception as exc:
                logger.error("Could not append a committed change to the log (%s); retrying", exc)
        with self.lock:
            self.pending.append(record)
            if self.thread is None:
                self.thread = threading.Thread(target=self._retry, name="reactive-publish-retry", daemon=True)
                self.thread.start()
        return None

    def _retry(self) -> None:
        from .backends import get_backend

        delay = 0.1
        while True:
            with self.lock:
                try:
                    while self.pending:
                        get_backend().log.append(*self.pending[0])
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
