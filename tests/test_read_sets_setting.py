"""``REACTIVE["READ_SETS"]``: "rows" keeps the conditions of a read, "tables" drops them all
(table-level invalidation, the benchmarks' baseline)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from reactive.capture.tracking import track_reads
from reactive.records import ANY_ROW
from tests.testapp.models import Channel, Item

pytestmark = pytest.mark.django_db


def reads_of_a_filtered_query() -> dict:
    with track_reads() as tracker:
        list(Item.objects.filter(number=5))
        list(Channel.objects.filter(pk=3))
    return tracker.read_set.tables


def test_rows_mode_keeps_the_conditions_that_bound_the_rows_read():
    tables = reads_of_a_filtered_query()
    assert tables[Item._meta.db_table] == {frozenset({("number", 5)})}
    assert tables[Channel._meta.db_table] == {frozenset({("id", 3)})}


def test_tables_mode_reads_every_row_of_each_table_read():
    with override_settings(REACTIVE={"READ_SETS": "tables"}):
        tables = reads_of_a_filtered_query()
    assert tables == {Item._meta.db_table: {ANY_ROW}, Channel._meta.db_table: {ANY_ROW}}


def test_tables_mode_depends_on_every_column_and_rows_mode_on_those_read() -> None:
    def columns() -> dict:
        with track_reads() as tracker:
            Item.objects.filter(number=5).count()
        return tracker.read_set.columns

    assert columns() == {Item._meta.db_table: {"number"}}
    with override_settings(REACTIVE={"READ_SETS": "tables"}):
        assert columns() == {}  # no table named: every column of each
