"""Column-aware invalidation: which columns of each table a query's result depends on
(``ReadSet.columns``), and which columns an UPDATE's change record says it changed.

An UPDATE that matches a read's rows but changes none of the columns the read depends on leaves
its result as it was; these tests pin what the read-set builder records for common query shapes
(read through the real capture, on the test database) and what the write capture records.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from django.db.models import Count, Exists, F, OuterRef, Sum
from django.db.models.functions import Length

from project.chat.models import Channel, Message
from reactive.backends.changelog import DatabaseLog
from reactive.capture.tracking import track_reads
from reactive.records import ReadSet, RowChange, decode_change, encode_change
from tests.testapp.models import Channel as ItemChannel
from tests.testapp.models import Item, Owner

pytestmark = pytest.mark.django_db(transaction=True)

ITEM = Item._meta.db_table
CHANNEL = ItemChannel._meta.db_table
ALL_ITEM_COLUMNS = frozenset(field.column for field in Item._meta.concrete_fields)


def columns(run: Callable[[], object]) -> dict[str, frozenset[str] | None]:
    """Per table read, the columns the reads of ``run`` depend on (None: every column)."""
    with track_reads() as tracker:
        run()
    return {table: tracker.read_set.columns_of(table) for table in tracker.read_set.tables}


def test_count_depends_on_its_filter_columns_only() -> None:
    assert columns(lambda: Item.objects.filter(channel_id=1).count()) == {ITEM: {"channel_id"}}
    assert columns(lambda: Item.objects.count()) == {ITEM: frozenset()}


def test_exists_depends_on_its_filter_columns_only() -> None:
    assert columns(lambda: Item.objects.filter(channel_id=1, flag=True).exists()) == {
        ITEM: {"channel_id", "flag"}
    }


def test_values_and_values_list_depend_on_what_they_select_filter_and_order_by() -> None:
    assert columns(lambda: list(Item.objects.filter(channel_id=1).values("title"))) == {
        ITEM: {"title", "channel_id"}
    }
    run = lambda: list(Item.objects.filter(number__gt=2).order_by("-ratio").values_list("title", flat=True))  # noqa: E731
    assert columns(run) == {ITEM: {"title", "number", "ratio"}}


def test_model_instances_depend_on_every_column_fetched() -> None:
    assert columns(lambda: list(Item.objects.filter(channel_id=1))) == {ITEM: ALL_ITEM_COLUMNS}
    assert columns(lambda: list(Item.objects.only("title").filter(flag=True))) == {
        ITEM: {"id", "title", "flag"}
    }
    deferred = columns(lambda: list(Item.objects.defer("body")))[ITEM]
    assert deferred == ALL_ITEM_COLUMNS - {"body"}


def test_aggregates_depend_on_their_arguments() -> None:
    assert columns(lambda: Item.objects.filter(channel_id=1).aggregate(Sum("number"))) == {
        ITEM: {"number", "channel_id"}
    }
    # A sliced query aggregates in a subquery (AggregateQuery): still its columns only.
    assert columns(lambda: Item.objects.order_by("id")[:3].count()) == {ITEM: {"id"}}


def test_annotations_and_joins_depend_on_the_columns_they_use() -> None:
    run = lambda: list(ItemChannel.objects.values("id", "name").annotate(n=Count("items")))  # noqa: E731
    assert columns(run) == {CHANNEL: {"id", "name"}, ITEM: {"id", "channel_id"}}
    # annotate() before values() groups by every column of the model: all of them are read.
    run = lambda: list(ItemChannel.objects.annotate(n=Count("items")).values("name", "n"))  # noqa: E731
    assert columns(run)[CHANNEL] == {field.column for field in ItemChannel._meta.concrete_fields}
    run = lambda: list(Item.objects.annotate(size=Length("body")).values_list("id", "size"))  # noqa: E731
    assert columns(run) == {ITEM: {"id", "body"}}
    run = lambda: list(Item.objects.filter(number=F("external")).values_list("id", flat=True))  # noqa: E731
    assert columns(run) == {ITEM: {"id", "number", "ext_ref"}}


def test_a_subquery_adds_the_outer_columns_it_refers_to() -> None:
    inner = Item.objects.filter(channel=OuterRef("pk"), flag=True)
    run = lambda: list(ItemChannel.objects.annotate(any=Exists(inner)).values_list("name", "any"))  # noqa: E731
    assert columns(run) == {CHANNEL: {"id", "name"}, ITEM: {"channel_id", "flag"}}


def test_select_related_and_prefetch_depend_on_every_column_of_what_they_fetch() -> None:
    run = lambda: list(Item.objects.select_related("channel").filter(number=1))  # noqa: E731
    assert columns(run) == {
        ITEM: ALL_ITEM_COLUMNS,
        CHANNEL: frozenset(field.column for field in ItemChannel._meta.concrete_fields),
    }
    ItemChannel.objects.create(name="prefetched", owner=Owner.objects.create(name="an owner"))
    run = lambda: [list(channel.items.all()) for channel in ItemChannel.objects.prefetch_related("items")]  # noqa: E731
    assert columns(run)[ITEM] == ALL_ITEM_COLUMNS


def test_what_the_builder_cannot_analyse_depends_on_every_column() -> None:
    raw = columns(lambda: list(Item.objects.raw(f"SELECT id FROM {ITEM}")))
    assert ITEM in raw and set(raw.values()) == {None}
    run = lambda: list(Item.objects.extra(where=["number > 1"]).values_list("id", flat=True))  # noqa: E731
    assert columns(run)[ITEM] is None  # (and the fragment names no table: every table is read)
    # Ordered by a relation: by the related model's own ordering, not analysed.
    run = lambda: list(Item.objects.order_by("channel").values_list("id", flat=True))  # noqa: E731
    assert set(columns(run).values()) == {None}
    run = lambda: list(Item.objects.values_list("id").union(Item.objects.values_list("id")))  # noqa: E731
    assert columns(run) == {ITEM: None}


def test_merging_reads_unites_columns_and_every_column_wins() -> None:
    read_set = ReadSet()
    read_set.add(ITEM, frozenset({("channel_id", 1)}), columns=("title",))
    read_set.add(ITEM, frozenset({("channel_id", 2)}), columns=("number",))
    assert read_set.columns_of(ITEM) == {"title", "number"}
    other = ReadSet()
    other.add_table(ITEM)
    read_set.merge(other)
    assert read_set.columns_of(ITEM) is None


# The change record's columns ----------------------------------------------------------------


def updated_columns(write: Callable[[], object]) -> list[frozenset[str] | None]:
    start = DatabaseLog().head()
    write()
    return [
        row.columns
        for record in DatabaseLog().read_after(start, 100)
        for row in record.rows
        if row.table == "chat_message"
    ]


def test_an_update_records_the_columns_it_assigned(watched_channel: None) -> None:
    channel = Channel.objects.create(name="columns")
    message = Message.objects.create(channel=channel, body="first")
    assert updated_columns(lambda: Message.objects.filter(pk=message.pk).update(edited=True)) == [{"edited"}]
    assert updated_columns(lambda: Message.objects.filter(pk=message.pk).update(created=F("created"))) == [
        {"created"}
    ]
    message.body = "second"
    assert updated_columns(lambda: message.save(update_fields=["body"])) == [{"body"}]


def test_a_save_leaves_out_the_watched_columns_it_did_not_change(watched_channel: None) -> None:
    channel = Channel.objects.create(name="columns")
    other = Channel.objects.create(name="other")
    message = Message.objects.create(channel=channel, body="first")
    message.body = "second"
    # save() assigns every column; channel_id (watched, so its old value is known) kept its value.
    assert updated_columns(message.save) == [{"author_id", "body", "created", "edited"}]
    message.channel = other
    assert updated_columns(message.save) == [{"author_id", "body", "channel_id", "created", "edited"}]


def test_a_record_keeps_its_columns_and_an_earlier_record_changed_every_column() -> None:
    update = RowChange("chat_message", {"id": 1}, {"id": 1}, frozenset({"body"}))
    insert = RowChange("chat_message", None, {"id": 2}, frozenset({"body"}))
    (kept, inserted) = decode_change(7, encode_change([update, insert], ())).rows
    assert kept.changed_columns == {"body"}
    assert inserted.changed_columns is None  # an insert changes every column
    earlier = '{"rows": [["chat_message", {"id": "i1"}, {"id": "i1"}]], "opaque": []}'
    (row,) = decode_change(8, earlier).rows
    assert row.columns is None and row.changed_columns is None
    # The columns travel beside the rows: a reader of the earlier format reads the rows as before.
    data = orjson.loads(encode_change([update, insert], ()))
    assert [(table, old, new) for table, old, new in data["rows"]] == [
        ("chat_message", {"id": "i1"}, {"id": "i1"}),
        ("chat_message", None, {"id": "i2"}),
    ]
    assert data["columns"] == [["body"], None]
