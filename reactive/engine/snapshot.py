"""One read-only database snapshot for every re-run of an invalidator pass (guarantee 5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

from ..capture import logtable
from ..capture.patches import deferred_sqlite_transactions


@contextmanager
def read_snapshot() -> Iterator[logtable.Seen | None]:
    """A read-only transaction: REPEATABLE READ on Postgres; on SQLite a deferred transaction,
    which sees one snapshot from its first read (WAL) without taking the write lock.

    Yields the change records that snapshot sees (``version in seen``; None where the database
    cannot say): what runs in it has their changes already."""
    deferred_sqlite_transactions(connection)
    with transaction.atomic():
        # Postgres: the isolation level, in the same round trip as the first read.
        first = (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
            if connection.vendor == "postgresql"
            else ""
        )
        yield logtable.seen(connection, first)
