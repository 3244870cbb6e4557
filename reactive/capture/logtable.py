"""The change log table's SQL: append (at a commit, this stage), and head, read and prune (for
the readers, ``backends/changelog.py``).

The table is ``models.ChangeLogEntry``. A record's version is its id on SQLite and ``xid + 1`` on
Postgres:

- SQLite has one writer at a time, and the record is inserted while the transaction holds the
  write lock, so id order is commit order. The id is a rowid without AUTOINCREMENT (migration
  0006): SQLite gives a new row the highest id plus one, and the newest record is never deleted
  (``prune`` keeps it, and a trigger refuses anyone else), so an id is never given twice.
- Postgres allocates ids (and transaction ids) when transactions start writing, not when they
  commit, so a later id can be visible while an earlier one is still in progress. Each record
  stores its transaction's id (``pg_current_xact_id()``, 64 bits, never wraps), and readers read
  only below the horizon: the oldest transaction still in progress in the statement's snapshot
  (``pg_snapshot_xmin``). Every transaction below it has ended, so every record below it is
  visible to that statement, and one that commits later has an id at or above it.

Appending goes straight to the DB-API connection: it runs once per commit, on the hot path, and
must not be seen by the write capture it serves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ..records import EVERYTHING_CHANGED

logger = logging.getLogger("reactive.changelog")

LOG_TABLE = "reactive_changelog"  # models.ChangeLogEntry
# The Postgres channel a writing transaction notifies (delivered only if it commits).
LOG_CHANNEL = "reactive_changelog"
PRUNE_LOCK_WAIT_MS = 100


def append(connection, changes: str) -> int | None:
    """Add a record in ``connection``'s open transaction; return its version, or None if the
    database has no log table yet (before ``migrate``)."""
    if not available(connection):
        return None
    if connection.vendor == "postgresql":
        return connection.connection.execute(_PG_APPEND, (changes,)).fetchone()[0] + 1
    return capture_cursor(connection).execute(_SQLITE_APPEND, (_sqlite_created(), changes)).lastrowid


def append_and_commit(connection, changes: str | None, cursor=None) -> int | None:
    """Add a record (unless ``changes`` is None) and COMMIT the open transaction; the record's
    version. On Postgres both go in one statement string, so one round trip: the record's text
    is sent as a quoted literal, there being no parameters across several statements. On
    SQLite, through ``cursor`` (else ``capture_cursor``)."""
    if connection.vendor == "postgresql":
        raw = connection.connection
        if changes is None or not available(connection):
            raw.execute("COMMIT")
            return None
        from psycopg import sql

        literal = sql.Literal(changes).as_string(raw)
        return raw.execute(f"{_PG_APPEND % literal}; COMMIT").fetchone()[0] + 1
    if cursor is None:
        cursor = capture_cursor(connection)
    version = None
    if changes is not None and available(connection):
        version = cursor.execute(_SQLITE_APPEND, (_sqlite_created(), changes)).lastrowid
    cursor.execute("COMMIT")
    return version


class _Created:
    second: int | None = None
    text = ""


def _sqlite_created() -> str:
    """A SQLite record's ``created``, stored as text ("YYYY-MM-DD HH:MM:SS.fff", UTC): the next
    whole second. Retention is counted in seconds or more; the next second, so that a record is
    never taken for older than it is; formatted once a second, not by SQLite for every record."""
    second = int(time.time()) + 1
    if second != _Created.second:
        _Created.text = time.strftime("%Y-%m-%d %H:%M:%S.000", time.gmtime(second))
        _Created.second = second
    return _Created.text


def capture_cursor(connection):
    """A DB-API cursor kept for the write capture's own statements on ``connection``'s current
    DB-API connection: ``Connection.execute`` would make a new one for each (on SQLite BEGIN, the
    record and COMMIT: three per write made in autocommit mode)."""
    cursor = getattr(connection, "reactive_cursor", None)
    if cursor is None or cursor.connection is not connection.connection:  # a new DB-API connection
        cursor = connection.reactive_cursor = connection.connection.cursor()
    return cursor


def around_statement(connection, changes: str, inserted_key: tuple[str, str] | None) -> tuple[str, str]:
    """Postgres: the SQL to send before and after a write's statement, in the same string, so
    that the transaction, the write, its record, the NOTIFY and the COMMIT take one round trip.

    ``before`` begins the transaction and returns its id (``version_of`` gives the record's
    version) as a result of its own, ahead of the statement's; ``after`` commits. The record is
    appended by ``before`` (its ``RETURNING``), or by ``after`` when ``inserted_key`` (table,
    column) names the key the database gives the one row the statement inserts: the record gets
    it from the sequence that gave it (``currval``), or goes without it (an image without the key,
    which only widens) where no sequence did.
    """
    from psycopg import sql

    raw = connection.connection
    literal = sql.Literal(changes).as_string(raw)
    append = f"INSERT INTO {LOG_TABLE} (xid, created, changes) VALUES ({_PG_XID}, now(), %s)"
    commit = f"NOTIFY {LOG_CHANNEL}; COMMIT"
    if inserted_key is None:
        return f"BEGIN; {append % literal} RETURNING xid", commit
    table, column = inserted_key
    table = sql.Literal(connection.ops.quote_name(table)).as_string(raw)  # parsed as a name
    column = sql.Literal(column).as_string(raw)
    key = f"to_jsonb('i' || currval(pg_get_serial_sequence({table}, {column})))"
    path = f"ARRAY['rows', '0', '2', {column}]"  # the new image of the record's one row
    value = f"COALESCE(jsonb_set({literal}::jsonb, {path}, {key})::text, {literal})"
    return f"BEGIN; SELECT {_PG_XID}", f"{append % value}; {commit}"


def version_of(xid: int) -> int:
    """The version of the record a Postgres transaction ``xid`` appended."""
    return xid + 1


def head(connection) -> int:
    """The version of the latest record a reader can read now (0: none yet)."""
    with connection.cursor() as cursor:
        cursor.execute(_PG_HEAD if connection.vendor == "postgresql" else _SQLITE_HEAD)
        return int(cursor.fetchone()[0] or 0)


def read(connection, after: int, limit: int) -> tuple[list[tuple[int, str]], bool]:
    """Up to ``limit`` (version, changes) pairs after ``after``, in commit order, and whether
    committed records wait behind an older transaction still in progress (Postgres)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_READ, (after, limit))
            rows = cursor.fetchall()
            pending = bool(rows and rows[0][0])
            return [(xid + 1, changes) for _, xid, changes in rows if xid is not None], pending
        cursor.execute(_SQLITE_READ, (after, limit))
        return cursor.fetchall(), False


@dataclass(frozen=True, slots=True)
class SeenUpTo:
    """SQLite: the records a snapshot saw, every one up to the newest it saw (ids are in commit
    order). ``version in seen``: whether the snapshot saw that record's commit."""

    head: int

    def __contains__(self, version: int) -> bool:
        return version <= self.head


@dataclass(frozen=True, slots=True)
class PostgresSnapshot:
    """Postgres: the records a snapshot (``pg_current_snapshot()``) saw: those of transactions
    below ``xmin``, and those below ``xmax`` not in progress when it was taken."""

    xmin: int
    xmax: int
    in_progress: frozenset[int]

    def __contains__(self, version: int) -> bool:
        xid = version - 1
        return xid < self.xmin or (xid < self.xmax and xid not in self.in_progress)


Seen = SeenUpTo | PostgresSnapshot


def seen(connection, first: str = "") -> Seen | None:
    """The records the snapshot of ``connection``'s open transaction sees (taken by this read if
    it is the first), or None where the database cannot say. ``first``: a statement to run before
    it in the same round trip (Postgres: the transaction's isolation level)."""
    if connection.vendor not in ("sqlite", "postgresql"):
        return None
    raw = connection.connection  # Django's cursor wrapper would cost more than the read itself
    with connection.wrap_database_errors:
        if connection.vendor == "sqlite":
            if first:
                raw.execute(first)
            return SeenUpTo(int(raw.execute(_SQLITE_HEAD).fetchone()[0] or 0))
        cursor = raw.execute(f"{first}; {_PG_SNAPSHOT}" if first else _PG_SNAPSHOT)
        if first:
            cursor.nextset()
        xmin, xmax, in_progress = cursor.fetchone()[0].split(":")
    return PostgresSnapshot(
        int(xmin), int(xmax), frozenset(int(xid) for xid in in_progress.split(",") if xid)
    )


def prune(connection, keep: int, older_than: float) -> int:
    """Drop readable records beyond the newest ``keep`` and those created before the unix time
    ``older_than``. The newest record dropped stays, as a record that everything changed: a
    reader that had not read them re-runs everything instead of missing a change. Returns how
    many records were dropped or replaced."""
    postgres = connection.vendor == "postgresql"
    if postgres:
        return _prune(connection, keep, older_than, postgres)
    # SQLite: a reader prunes in its own pass, so it waits for the write lock briefly only (a long
    # writing transaction would hold the pass back with it); it tries again at its next prune.
    connection.ensure_connection()
    raw = connection.connection
    waited = int(float(connection.settings_dict["OPTIONS"].get("timeout", 5)) * 1000)
    raw.execute(f"PRAGMA busy_timeout = {PRUNE_LOCK_WAIT_MS}")
    try:
        return _prune(connection, keep, older_than, postgres)
    finally:
        raw.execute(f"PRAGMA busy_timeout = {waited}")


def _prune(connection, keep: int, older_than: float, postgres: bool) -> int:
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute(_PG_PRUNE_POINT, (keep, older_than))
        else:
            cutoff = datetime.fromtimestamp(older_than, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            cursor.execute(_SQLITE_PRUNE_POINT, (keep, cutoff))
        point = cursor.fetchone()[0]
        if point is None:
            return 0
        position = "xid" if postgres else "id"
        # The marker first: if the process dies between the two statements, the records stay
        # and a reader re-runs everything once too often, never once too few.
        cursor.execute(
            f"UPDATE {LOG_TABLE} SET changes = %s WHERE {position} = %s AND changes <> %s",
            (EVERYTHING_CHANGED, point, EVERYTHING_CHANGED),
        )
        marked = cursor.rowcount
        cursor.execute(f"DELETE FROM {LOG_TABLE} WHERE {position} < %s", (point,))
        return cursor.rowcount + marked


def available(connection) -> bool:
    """Whether the database has the log table. Cached once seen (on the connection, for the
    database it is connected to); while it is missing (before ``migrate``, or during it) every
    commit asks again, so logging starts as soon as it exists."""
    name = connection.settings_dict.get("NAME")
    if getattr(connection, "reactive_log_table_in", _UNSEEN) == name:
        return True
    key = (connection.alias, str(name))
    if key in _present or LOG_TABLE in connection.introspection.table_names():
        _present.add(key)
        connection.reactive_log_table_in = name
        return True
    if key not in _warned:
        _warned.add(key)
        # Expected while ``migrate`` creates the tables (so not a warning); a server or worker
        # reading the log fails loudly instead.
        logger.debug(
            "The %s table is missing from the database %r (run manage.py migrate): "
            "its commits reach no subscriber until it exists.",
            LOG_TABLE,
            connection.alias,
        )
    return False


_UNSEEN = object()
_present: set[tuple[str, str]] = set()
_warned: set[tuple[str, str]] = set()

_SQLITE_APPEND = f"INSERT INTO {LOG_TABLE} (created, changes) VALUES (?, ?)"
_SQLITE_HEAD = f"SELECT max(id) FROM {LOG_TABLE}"
_SQLITE_READ = f"SELECT id, changes FROM {LOG_TABLE} WHERE id > %s ORDER BY id LIMIT %s"
_SQLITE_PRUNE_POINT = (
    f"SELECT max(point) FROM ("
    f"SELECT id AS point FROM (SELECT id FROM {LOG_TABLE} ORDER BY id DESC LIMIT 1 OFFSET %s) "
    f"UNION ALL SELECT max(id) FROM {LOG_TABLE} WHERE created < %s)"
)

_PG_XID = "pg_current_xact_id()::text::bigint"
_PG_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_PG_APPEND = (
    f"WITH entry AS (INSERT INTO {LOG_TABLE} (xid, created, changes) "
    f"VALUES ({_PG_XID}, now(), %s) RETURNING xid) "
    f"SELECT entry.xid FROM entry, pg_notify('{LOG_CHANNEL}', '')"
)
_PG_SNAPSHOT = "SELECT pg_current_snapshot()::text"
_PG_HEAD = f"SELECT max(xid) + 1 FROM {LOG_TABLE} WHERE xid < {_PG_HORIZON}"
_PG_READ = (
    f"SELECT s.top >= s.horizon, r.xid, r.changes FROM "
    f"(SELECT {_PG_HORIZON} AS horizon, (SELECT max(xid) FROM {LOG_TABLE}) AS top) s "
    f"LEFT JOIN LATERAL (SELECT xid, changes FROM {LOG_TABLE} "
    f"WHERE xid >= %s AND xid < s.horizon ORDER BY xid LIMIT %s) r ON true"
)
_PG_PRUNE_POINT = (
    f"WITH readable AS (SELECT xid, created FROM {LOG_TABLE} WHERE xid < {_PG_HORIZON}) "
    f"SELECT max(point) FROM ("
    f"(SELECT xid AS point FROM readable ORDER BY xid DESC LIMIT 1 OFFSET %s) "
    f"UNION ALL SELECT max(xid) FROM readable WHERE created < to_timestamp(%s)) points"
)
