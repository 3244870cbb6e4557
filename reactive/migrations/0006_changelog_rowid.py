"""SQLite: the change log's ids without AUTOINCREMENT.

AUTOINCREMENT keeps each table's highest id in ``sqlite_sequence``, a page written at every
commit besides the log's own: on a write made in autocommit mode, that is one more page of three
(the data, the record, the sequence) for SQLite to write and checkpoint. Without it SQLite gives
a new row the highest id in the table plus one, which never goes back as long as the newest
record is never deleted: pruning keeps it (``capture/logtable.py``). Postgres is left as it was:
its versions are transaction ids.

Rows are copied with their ids. If the sequence had gone past the newest record (its rows
deleted by hand), an empty record takes the sequence's id, so the numbering never goes back.
From now on a trigger refuses to delete the newest record, with a message, so that emptying the
table by hand cannot restart the numbering either (readers would wait for numbers given before).
"""

from django.db import migrations

TABLE = "reactive_changelog"
COLUMNS = (
    '"id" integer NOT NULL PRIMARY KEY, "xid" bigint NULL, "created" datetime NOT NULL, '
    '"changes" text NOT NULL'
)
EMPTY_RECORD = '{"rows":[],"opaque":[]}'
KEEP_NEWEST = (
    f'CREATE TRIGGER IF NOT EXISTS "reactive_changelog_keeps_newest" BEFORE DELETE ON "{TABLE}" '
    f'WHEN OLD.id = (SELECT max(id) FROM "{TABLE}") '
    "BEGIN SELECT RAISE(ABORT, 'The newest record of reactive_changelog is never deleted: readers "
    "hold positions in the log, and SQLite would give its id again. Shorten the log with "
    "CHANGE_LOG_LENGTH and CHANGE_LOG_RETENTION_SECONDS (the reader prunes it).'); END"
)


def drop_autoincrement(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s", [TABLE])
        row = cursor.fetchone()
        if row is None:
            return
        if "AUTOINCREMENT" in row[0].upper():
            _rebuild(cursor)
        cursor.execute(KEEP_NEWEST)


def _rebuild(cursor) -> None:
    """The table again without AUTOINCREMENT, with its rows, ids and index."""
    cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [TABLE])
    sequence = cursor.fetchone()
    cursor.execute(f'CREATE TABLE "{TABLE}__new" ({COLUMNS})')
    cursor.execute(
        f'INSERT INTO "{TABLE}__new" (id, xid, created, changes) '
        f'SELECT id, xid, created, changes FROM "{TABLE}"'
    )
    if sequence is not None:
        cursor.execute(
            f'INSERT INTO "{TABLE}__new" (id, created, changes) SELECT %s, CURRENT_TIMESTAMP, %s '
            f'WHERE %s > (SELECT COALESCE(max(id), 0) FROM "{TABLE}__new")',
            [sequence[0], EMPTY_RECORD, sequence[0]],
        )
    cursor.execute(f'DROP TABLE "{TABLE}"')
    cursor.execute(f'ALTER TABLE "{TABLE}__new" RENAME TO "{TABLE}"')
    cursor.execute(f'CREATE INDEX "reactive_changelog_xid" ON "{TABLE}" ("xid") WHERE "xid" IS NOT NULL')


class Migration(migrations.Migration):
    dependencies = [
        ("reactive", "0005_changelog_outlives_flush"),
    ]

    operations = [
        # Back to 0005 leaves the table as it is: ids without AUTOINCREMENT serve it as well.
        migrations.RunPython(drop_autoincrement, migrations.RunPython.noop),
    ]
