"""Read tracking: while a query function runs, every SELECT it issues adds to its read set.

The compiler patches (``patches.py``) call :func:`record_compiled_read` after each SELECT runs,
and :func:`record_raw_sql` for SQL that went straight to a cursor. Tracking is per thread: a
query runs synchronously in one thread from start to end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import WriteInQuery
from ..records import ANY_ROW, ReadSet
from ..settings import reactive_settings
from .readsets import known_tables, read_set_of, read_set_of_raw_sql

logger = logging.getLogger("reactive.execution")


class ReadTracker:
    """The reads of one query run; the run is read-only while the tracker is active."""

    __slots__ = ("function_name", "read_set")

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.read_set = ReadSet()


class _Local(threading.local):
    tracker: ReadTracker | None = None


_local = _Local()


def current() -> ReadTracker | None:
    return _local.tracker


@contextmanager
def track_reads(function_name: str = "a query") -> Iterator[ReadTracker]:
    """Record every read of the query ``function_name`` in this thread until the block ends;
    writes raise ``WriteInQuery`` naming it."""
    previous = current()
    tracker = ReadTracker(function_name)
    _local.tracker = tracker
    try:
        yield tracker
    finally:
        _local.tracker = previous
        if previous is not None:
            previous.read_set.merge(tracker.read_set)


@contextmanager
def untracked() -> Iterator[None]:
    """Suspend tracking (for the app's own bookkeeping queries)."""
    previous = current()
    _local.tracker = None
    try:
        yield
    finally:
        _local.tracker = previous


def record_compiled_read(compiler, sql: object = None) -> None:
    """Add a compiled SELECT's read set; ``sql`` is the statement it ran (None if it ran none)."""
    tracker = current()
    if tracker is not None:
        sql = sql if isinstance(sql, str) or sql is None else str(sql)
        read_set = read_set_of(compiler.query, compiler.connection, sql, _selected(compiler))
        tracker.read_set.merge(_as_configured(read_set))


def _selected(compiler) -> list | None:
    """The compiler's resolved select expressions, once it has set them up (else None)."""
    select = getattr(compiler, "select", None)
    if select is None:
        return None
    return [item[0] for item in select]


def record_raw_sql_read(sql: str) -> None:
    tracker = current()
    if tracker is not None:
        tracker.read_set.merge(_as_configured(read_set_of_raw_sql(sql, known_tables())))


def _as_configured(read_set: ReadSet) -> ReadSet:
    """``REACTIVE["READ_SETS"] = "tables"`` drops every condition: each table read, any row
    (table-level invalidation, the benchmarks' baseline). The default, "rows", keeps them."""
    if reactive_settings.READ_SETS != "tables":
        return read_set
    return ReadSet({table: {ANY_ROW} for table in read_set.tables})


def forbid_write() -> None:
    """Called before any write: inside a query run it is an error."""
    tracker = _local.tracker  # current(), inline: this runs for every write
    if tracker is not None:
        error = WriteInQuery.in_function(tracker.function_name)
        # Logged here, where it happens: the query may catch the error and return normally.
        logger.warning("%s", error.message)
        raise error
