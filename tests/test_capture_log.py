"""What the write capture appends to the change log, write by write, on the test database.

Writes made in autocommit mode run in a transaction the capture opens on the database connection
itself (not ``atomic()``): the write and its record commit together, a failed write leaves
neither and no transaction open. Watched updates and deletes take the old values of the watched
columns from the write itself (``RETURNING``) where they can. A transaction that writes only
ignored tables appends nothing.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from datetime import date, timedelta
from datetime import time as time_of_day
from decimal import Decimal

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from project.chat.models import Channel, Message
from reactive.backends.changelog import DatabaseLog
from reactive.capture import commits
from reactive.models import MutationRecord
from reactive.records import ChangeRecord
from tests.testapp.models import Channel as ItemChannel
from tests.testapp.models import Item, Legacy, Owner, Tag

pytestmark = pytest.mark.django_db(transaction=True)


def autocommit_outside_any_transaction() -> bool:
    connection = connections["default"]  # the wrapper itself, not the proxy
    return connection.get_autocommit() and not commits.pending_commit(connection).own


def statements(queries: CaptureQueriesContext) -> list[str]:
    """The kind of each statement sent, transaction control left out (on Postgres the BEGIN of a
    write made in autocommit mode is sent in front of its statement)."""
    kinds = [part.split()[0] for query in queries for part in query["sql"].split("; ")]
    return [kind for kind in kinds if kind not in ("BEGIN", "COMMIT")]


def records_since(start: int) -> list[ChangeRecord]:
    return DatabaseLog().read_after(start, 100)


def test_an_autocommit_write_commits_with_one_record_of_its_own() -> None:
    start = DatabaseLog().head()
    with commits.commit_versions() as versions:
        channel = Channel.objects.create(name="autocommit")
    (record,) = records_since(start)
    assert record.version == versions.last
    assert [(row.table, row.old, row.new["id"]) for row in record.rows] == [
        ("chat_channel", None, f"i{channel.pk}")
    ]
    assert autocommit_outside_any_transaction()


def test_a_record_is_never_older_than_its_commit_and_survives_a_new_connection() -> None:
    # The capture keeps a cursor for its own statements on SQLite: a connection closed and opened
    # again gets a new one, and its writes are recorded as before.
    from reactive.models import ChangeLogEntry

    before = timezone.now()
    Channel.objects.create(name="before the reconnect")
    connections["default"].close()
    start = DatabaseLog().head()
    channel = Channel.objects.create(name="after the reconnect")
    (record,) = records_since(start)
    assert record.rows[0].new["id"] == f"i{channel.pk}"
    created = ChangeLogEntry.objects.order_by("-pk").values_list("created", flat=True)[0]
    # Retention counts whole seconds: a record's time is never before its commit's.
    assert before <= created <= timezone.now() + timedelta(seconds=2)


def test_a_failed_autocommit_write_leaves_no_record_and_no_open_transaction() -> None:
    # On Postgres the insert, its record and the COMMIT are one string: it fails as a whole.
    Channel.objects.create(name="taken")
    start = DatabaseLog().head()
    with pytest.raises(IntegrityError):
        Channel.objects.create(name="taken")
    assert records_since(start) == []
    assert autocommit_outside_any_transaction()
    # The connection is back in autocommit mode, outside any transaction: the next write commits.
    Channel.objects.create(name="after the failure")
    assert [[row.table for row in r.rows] for r in records_since(start)] == [["chat_channel"]]
    assert Channel.objects.filter(name="after the failure").exists()


def test_a_row_created_alone_is_recorded_as_one_created_in_a_transaction() -> None:
    # A create in autocommit mode makes its record straight from the row, its image made text as
    # it is read (``patches._inserted_record``); a create in atomic() goes through the
    # transaction's buffer and ``encode_change``. Every field type, a NULL, a key the database
    # gives and a key given: the two records hold the same images.
    owner = Owner.objects.create(name="a user")
    channel = ItemChannel.objects.create(name="a channel", owner=owner)
    values = {
        "number": 7,
        "flag": True,
        "title": "a title",
        "price": Decimal("1.50"),
        "created": timezone.now(),
        "day": date(2026, 12, 1),
        "at": time_of_day(12, 30),
        "duration": timedelta(seconds=90),
        "ratio": 0.25,
        "token": uuid.uuid4(),
        "data": {"k": [1, "x"]},
        "blob": b"\x00\x01",
        "nickname": None,
        "external": 5,
        "channel": channel,
        "editor": owner,
    }
    start = DatabaseLog().head()
    alone = Item.objects.create(**values)
    with transaction.atomic():
        in_transaction = Item.objects.create(**values)
    Tag.objects.create(slug="alone", label="a label")
    with transaction.atomic():
        Tag.objects.create(slug="in-transaction", label="a label")
    records = records_since(start)
    assert [record.origin for record in records] == [records[0].origin] * 4

    def image(record: ChangeRecord, key_column: str, key: str) -> dict:
        (row,) = record.rows
        assert (row.table, row.old) == ({"id": Item, "slug": Tag}[key_column]._meta.db_table, None)
        new = dict(row.new)
        assert new.pop(key_column) == key
        return new

    items = image(records[0], "id", f"i{alone.pk}"), image(records[1], "id", f"i{in_transaction.pk}")
    assert items[0] == items[1]
    assert items[0]["number"] == "i7" and items[0]["nickname"] == "~"
    assert image(records[2], "slug", "salone") == image(records[3], "slug", "sin-transaction")


@contextmanager
def log_refusing_records():
    """The database refuses every new change record (a trigger on the log table), so the
    record's append fails inside the write's transaction. Made on the DB-API connection, which
    the capture does not see."""
    connection = connections["default"]
    connection.ensure_connection()
    raw = connection.connection
    if connection.vendor == "postgresql":
        raw.execute(
            "CREATE FUNCTION refuse_record() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the log refuses records'; END $$"
        )
        raw.execute(
            "CREATE TRIGGER refuse_record BEFORE INSERT ON reactive_changelog "
            "FOR EACH ROW EXECUTE FUNCTION refuse_record()"
        )
        drops = ["DROP TRIGGER refuse_record ON reactive_changelog", "DROP FUNCTION refuse_record()"]
    else:
        raw.execute(
            "CREATE TRIGGER refuse_record BEFORE INSERT ON reactive_changelog "
            "BEGIN SELECT RAISE(ABORT, 'the log refuses records'); END"
        )
        drops = ["DROP TRIGGER refuse_record"]
    try:
        yield
    finally:
        for drop in drops:
            raw.execute(drop)


@pytest.mark.parametrize("write", ["create", "update", "delete", "atomic create"])
def test_a_write_whose_record_cannot_be_appended_is_rolled_back_with_a_django_error(write) -> None:
    channel = Channel.objects.create(name="kept")
    start = DatabaseLog().head()
    with log_refusing_records(), pytest.raises(DatabaseError, match="the log refuses records"):
        if write == "create":
            Channel.objects.create(name="refused")
        elif write == "update":
            Channel.objects.filter(pk=channel.pk).update(name="refused")
        elif write == "delete":
            Channel.objects.filter(pk=channel.pk).delete()
        else:
            with transaction.atomic():
                Channel.objects.create(name="refused")
    assert autocommit_outside_any_transaction()
    assert list(Channel.objects.values_list("name", flat=True)) == ["kept"]
    assert records_since(start) == []
    Channel.objects.create(name="after")  # the connection goes on, and records again
    assert [[row.table for row in r.rows] for r in records_since(start)] == [["chat_channel"]]


def test_a_transaction_writing_only_ignored_tables_appends_no_record() -> None:
    start = DatabaseLog().head()
    session = SessionStore()
    session["seen"] = 1
    session.save()  # a session created, in autocommit mode
    session["seen"] = 2
    session.save()  # and updated
    with transaction.atomic():
        MutationRecord.objects.create(
            identity="anonymous", session_id="s", request_id=1, fingerprint="f", payload=b"null"
        )
        session["seen"] = 3
        session.save()
    MutationRecord.objects.filter(session_id="s").update(payload=b"1")
    assert records_since(start) == []


def test_a_projects_own_ignored_tables_append_no_record_in_any_collection_type() -> None:
    """``IGNORED_TABLES`` as the project gives it (a tuple here, a list by default): a table of
    its own in it is never recorded, alone or beside a table that is."""
    ignored = ("reactive_changelog", "reactive_mutationrecord", "django_session", "chat_channel")
    with override_settings(REACTIVE={"IGNORED_TABLES": ignored}):
        start = DatabaseLog().head()
        channel = Channel.objects.create(name="ignored")
        Channel.objects.filter(pk=channel.pk).update(name="still ignored")
        assert records_since(start) == []
        with transaction.atomic():
            Channel.objects.filter(pk=channel.pk).update(name="beside a message")
            Message.objects.create(channel=channel, body="recorded")
        (record,) = records_since(start)
        assert [row.table for row in record.rows] == ["chat_message"]
        assert record.opaque_tables == frozenset()


def test_a_watched_update_records_the_old_values_of_the_watched_columns(watched_channel) -> None:
    a, b = Channel.objects.create(name="a"), Channel.objects.create(name="b")
    message = Message.objects.create(channel=a, body="x")
    start = DatabaseLog().head()
    with CaptureQueriesContext(connections["default"]) as queries:
        Message.objects.filter(pk=message.pk).update(body="y")  # the watched column is not set
    # One statement: the old values come back from the UPDATE itself.
    assert statements(queries) == ["UPDATE"]
    Message.objects.filter(pk=message.pk).update(body=F("body"))  # nor here, by an expression
    Message.objects.filter(pk=message.pk).update(channel=b)  # here it is: read before
    message.refresh_from_db()
    message.channel = a
    with CaptureQueriesContext(connections["default"]) as queries:
        message.save()  # an UPDATE of every column
    # Its old values by one SELECT on the key alone, then the UPDATE.
    assert statements(queries) == ["SELECT", "UPDATE"]
    select = connections["default"].ops.quote_name("id")
    assert queries[0]["sql"].split(" WHERE ")[-1].startswith(f"{select} = ")
    images = [(row.old, row.new) for record in records_since(start) for row in record.rows]
    pk, in_a, in_b = f"i{message.pk}", f"i{a.pk}", f"i{b.pk}"
    assert [(old["id"], old["channel_id"], new["channel_id"]) for old, new in images] == [
        (pk, in_a, in_a),
        (pk, in_a, in_a),
        (pk, in_a, in_b),
        (pk, in_b, in_a),
    ]
    assert images[0][1]["body"] == "sy"


def test_the_old_values_read_follow_the_columns_watched_as_they_change(watched_channel) -> None:
    # What an update reads is kept per connection (``patches._image_fields``): by model and the
    # set of columns watched, so a column watched later is read from the next write on.
    from reactive.backends import get_backend
    from reactive.records import ReadSet

    channel = Channel.objects.create(name="a")
    message = Message.objects.create(channel=channel, body="x")
    index = get_backend().index

    def saved_and_read(body: str) -> set[str]:
        start = DatabaseLog().head()
        message.body = body
        message.save()
        (record,) = records_since(start)
        (row,) = record.rows
        return set(row.old)

    assert saved_and_read("y") == {"id", "channel_id"}
    index.set("test-watched-body", ReadSet({"chat_message": {frozenset({("body", "sz")})}}))
    try:
        assert saved_and_read("z") == {"id", "channel_id", "body"}
    finally:
        index.remove("test-watched-body")
    # No longer watched: not read any more, once the writer knows (on the Redis backend its answer
    # is cached for up to a second, ``WATCHED_CACHE_SECONDS``, which only widens). Waited for here,
    # so that no later test starts with the wider answer.
    deadline = time.monotonic() + 10
    while "body" in (commits.watched_columns("chat_message", "update") or ()):
        assert time.monotonic() < deadline, "the writer still watches body 10 s after its removal"
        time.sleep(0.05)
    assert saved_and_read("w") == {"id", "channel_id"}


def test_a_watched_delete_records_the_rows_it_deleted(watched_channel) -> None:
    a, b = Channel.objects.create(name="a"), Channel.objects.create(name="b")
    kept = Message.objects.create(channel=a, body="kept")
    gone = [Message.objects.create(channel=channel, body="gone") for channel in (a, b)]
    start = DatabaseLog().head()
    with CaptureQueriesContext(connections["default"]) as queries:
        assert Message.objects.filter(body="gone").delete() == (2, {"chat.Message": 2})
    assert statements(queries) == ["DELETE"]
    assert Message.objects.filter(body="nothing").delete() == (0, {})
    (record,) = records_since(start)
    assert sorted((row.old["id"], row.old["channel_id"], row.new) for row in record.rows) == sorted(
        (f"i{m.pk}", f"i{m.channel_id}", None) for m in gone
    )
    assert list(Message.objects.values_list("pk", flat=True)) == [kept.pk]


def test_a_rolled_back_savepoint_drops_its_writes_from_the_record(watched_channel) -> None:
    channel = Channel.objects.create(name="a")
    start = DatabaseLog().head()
    with transaction.atomic():
        Message.objects.create(channel=channel, body="kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            Message.objects.filter(channel=channel).update(body="undone")
            Message.objects.create(channel=channel, body="undone")
            raise RuntimeError
    (record,) = records_since(start)
    assert [(row.old, row.new["body"]) for row in record.rows] == [(None, "skept")]


def only_on_postgres() -> None:
    if connections["default"].vendor != "postgresql":
        pytest.skip("round trips are Postgres's: run in the Redis + Postgres pass")


def test_on_postgres_an_autocommit_write_known_before_it_runs_is_one_round_trip() -> None:
    """A one-row insert, and an update and a delete of a table no query watches: the BEGIN, the
    statement, the change record and the COMMIT go in one string."""
    only_on_postgres()
    start = DatabaseLog().head()
    with commits.commit_versions() as versions, CaptureQueriesContext(connections["default"]) as queries:
        channel = Channel.objects.create(name="50% off")  # a "%" survives the parameters' formatting
        # Django reads the statement's own result: the rows it counted.
        assert Channel.objects.filter(pk=channel.pk).update(name="renamed") == 1
        assert Channel.objects.filter(name="nothing").update(name="nothing either") == 0
        MutationRecord.objects.create(
            identity="anonymous", session_id="s", request_id=1, fingerprint="f", payload=b"null"
        )  # an ignored table: no transaction, no record
    sent = [query["sql"] for query in queries]
    assert len(sent) == 4
    for statement in sent[:3]:
        assert statement.startswith("BEGIN; ") and statement.endswith("; COMMIT")
        assert "reactive_changelog" in statement
    assert "COMMIT" not in sent[3]
    records = records_since(start)
    assert [record.version for record in records] == versions.versions
    inserted, updated, none_updated = records
    assert [(row.table, row.old, row.new) for row in inserted.rows] == [
        ("chat_channel", None, {"id": f"i{channel.pk}", "name": "s50% off"})
    ]
    assert updated.opaque_tables == none_updated.opaque_tables == {"chat_channel"}
    assert Channel.objects.get(pk=channel.pk).name == "renamed"
    assert autocommit_outside_any_transaction()


def test_on_postgres_an_inserted_key_no_sequence_gave_is_left_out_of_the_record() -> None:
    """A key from a default no sequence owns (a legacy table): the record's image goes without
    it, which matches more queries, never fewer."""
    only_on_postgres()
    table = Legacy._meta.db_table
    with connections["default"].cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP IDENTITY")
        cursor.execute("CREATE SEQUENCE legacy_free_ids START 1000")  # owned by no column
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('legacy_free_ids')")
    try:
        start = DatabaseLog().head()
        row = Legacy.objects.create(code=7)
        assert row.pk >= 1000
        (record,) = records_since(start)
        assert [(change.old, change.new) for change in record.rows] == [(None, {"code": "i7", "note": "s"})]
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
            cursor.execute("DROP SEQUENCE legacy_free_ids")
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
