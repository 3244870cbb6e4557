"""One read-only database snapshot for every re-run of an invalidator pass (guarantee 5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

from ..capture.patches import deferred_sqlite_transactions


@contextmanager
def read_snapshot() -> Iterator[None]:
    """A read-only transaction: REPEATABLE READ on Postgres; on SQLite a deferred transaction,
    which sees one snapshot from its first read (WAL) without taking the write lock."""
    deferred_sqlite_transactions(connection)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield
