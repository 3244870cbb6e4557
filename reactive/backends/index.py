"""The read-set index: from a written row to the query instances that read it.

After django-cacheops' layout: per table, the *schemes* (sets of columns some live query
constrains) and, per scheme, the instances bound by each tuple of values. A written row yields,
per scheme, one lookup with its old values and one with its new values; a column missing from a
row image matches every value (it widens). A reverse index per instance removes exactly its
entries when it re-runs or goes away, so nothing grows without bound.

Values are kept as their typed text (``records.value_text``), the form row images have when they
are read back from the change log, so a match is a string compare (as in Redis).

Per instance, the index also keeps the columns each table's result depends on (``ReadSet.columns``;
a table missing there depends on every column). An update row that names the columns it assigned
affects a matched instance only if one of them is among those.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from ..records import ANY_TABLE, ChangeRecord, ReadSet, RowImage, depends_on, value_text
from .base import ReadSetIndex

Scheme = tuple[str, ...]  # sorted column names; () = every row of the table
Entry = tuple[str, Scheme, tuple[Hashable, ...]]


def entries_of(read_set: ReadSet) -> list[Entry]:
    """The (table, scheme, values) entries of a read set."""
    entries = []
    for table, conjunctions in read_set.tables.items():
        for conjunction in conjunctions:
            pairs = sorted(conjunction, key=lambda pair: pair[0])
            entries.append((table, tuple(c for c, _ in pairs), tuple(v for _, v in pairs)))
    return entries


def keys_for_image(scheme: Scheme, image: RowImage) -> tuple[Hashable, ...] | None:
    """The values tuple a row image gives for a scheme, or None if a column is unknown."""
    try:
        return tuple(image[column] for column in scheme)
    except KeyError:
        return None


def partially_matches(scheme: Scheme, values: tuple, image: RowImage) -> bool:
    return all(
        column not in image or image[column] == value for column, value in zip(scheme, values, strict=True)
    )


class InMemoryIndex(ReadSetIndex):
    """The index in dicts, owned by the invalidator thread; ``watched_columns`` may be read from
    any thread (it reads one immutable value)."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[Scheme, dict[tuple, set[str]]]] = {}
        self._by_instance: dict[str, list[Entry]] = {}
        self._columns: dict[str, dict[str, frozenset[str]]] = {}  # instance -> table -> columns
        self._watched: dict[str, frozenset[str]] = {}

    def watched_columns(self, table: str) -> frozenset[str] | None:
        return self._watched.get(table)

    def set(self, instance_id: str, read_set: ReadSet) -> None:
        self.remove(instance_id)
        entries = [
            (table, scheme, tuple(value_text(value) for value in values))
            for table, scheme, values in entries_of(read_set)
        ]
        self._by_instance[instance_id] = entries
        if read_set.columns:
            self._columns[instance_id] = dict(read_set.columns)
        for table, scheme, values in entries:
            self._buckets.setdefault(table, {}).setdefault(scheme, {}).setdefault(values, set()).add(
                instance_id
            )
        self._refresh_watched({table for table, _, _ in entries})

    def remove(self, instance_id: str) -> None:
        entries = self._by_instance.pop(instance_id, None)
        self._columns.pop(instance_id, None)
        if not entries:
            return
        for table, scheme, values in entries:
            schemes = self._buckets[table]
            bucket = schemes[scheme]
            bucket[values].discard(instance_id)
            if not bucket[values]:
                del bucket[values]
                if not bucket:
                    del schemes[scheme]
                    if not schemes:
                        del self._buckets[table]
        self._refresh_watched({table for table, _, _ in entries})

    def _refresh_watched(self, tables: Iterable[str]) -> None:
        for table in tables:
            schemes = self._buckets.get(table)
            if schemes:
                self._watched[table] = frozenset(column for scheme in schemes for column in scheme)
            else:
                self._watched.pop(table, None)

    def instance_ids(self) -> set[str]:
        return set(self._by_instance)

    def _all_of(self, table: str) -> set[str]:
        found: set[str] = set()
        for bucket in self._buckets.get(table, {}).values():
            for instance_ids in bucket.values():
                found |= instance_ids
        return found

    def match(self, record: ChangeRecord) -> set[str]:
        if ANY_TABLE in record.opaque_tables:
            return self.instance_ids()
        affected = self._all_of(ANY_TABLE) if ANY_TABLE in self._buckets else set()
        for table in record.opaque_tables:
            affected |= self._all_of(table)
        for row in record.rows:
            schemes = self._buckets.get(row.table)
            if not schemes:
                continue
            found: set[str] = set()
            for image in (row.old, row.new):
                if image is None:
                    continue
                for scheme, bucket in schemes.items():
                    values = keys_for_image(scheme, image)
                    if values is not None:
                        found |= bucket.get(values, set())
                    else:
                        for bucket_values, instance_ids in bucket.items():
                            if partially_matches(scheme, bucket_values, image):
                                found |= instance_ids
            changed = row.changed_columns
            if changed is not None:
                found = {
                    instance_id
                    for instance_id in found - affected
                    if depends_on(self._columns.get(instance_id, {}).get(row.table), changed)
                }
            affected |= found
        return affected
