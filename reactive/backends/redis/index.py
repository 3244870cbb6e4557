"""The read-set index in Redis, after django-cacheops: schemes, conjunction sets and a reverse
index per instance, maintained by ``lua/register.lua`` and matched by ``lua/match.lua``."""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson
import redis

from ...records import ChangeRecord, ReadSet, RowChange
from ..base import ReadSetIndex
from .keys import PREFIX, WATCHED_CACHE_SECONDS, register_args, script


class RedisIndex(ReadSetIndex):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._register = script(client, "register")
        self._match = script(client, "match")
        self._watched: dict[str, tuple[float, frozenset[str] | None]] = {}

    def watched_columns(self, table: str) -> frozenset[str] | None:
        # A stale answer is safe: a column missing from a row image, or a table written as a
        # whole, widens the match. A second's cache saves a round trip per write; what this
        # process registers itself widens it at once (``_registered``).
        # Writers never need Redis to commit: while it cannot be reached, the table is written as
        # a whole (None), which matches every reader of it.
        now = time.monotonic()
        cached = self._watched.get(table)
        if cached is not None and now - cached[0] < WATCHED_CACHE_SECONDS:
            return cached[1]
        try:
            schemes = self.client.smembers(PREFIX + "schemes:" + table)
        except redis.RedisError:
            self._watched[table] = (now, None)
            return None
        columns = frozenset(c for s in schemes for c in s.decode().split(",") if c) if schemes else None
        self._watched[table] = (now, columns)
        return columns

    def set(self, instance_id: str, read_set: ReadSet) -> None:
        self._register(args=register_args(instance_id, read_set))
        self._registered([read_set])

    def remove(self, instance_id: str) -> None:
        self._register(args=[PREFIX, instance_id, ""])

    def match(self, record: ChangeRecord) -> set[str]:
        return self.match_all([record])

    def match_each(self, records: list[ChangeRecord]) -> list[set[str]]:
        # One match.lua call per change record, all of a pass's in one pipelined round trip.
        if not records:
            return []
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            payload = orjson.dumps(
                {
                    "rows": [_row_entry(row) for row in record.rows],
                    "opaque": sorted(record.opaque_tables),
                }
            )
            self._match(args=[PREFIX, payload], client=pipe)
        return [{member.decode() for member in members} for members in pipe.execute()]

    def set_all(self, read_sets: dict[str, ReadSet]) -> None:
        if not read_sets:
            return
        pipe = self.client.pipeline(transaction=False)
        for instance_id, read_set in read_sets.items():
            self._register(args=register_args(instance_id, read_set), client=pipe)
        pipe.execute()
        self._registered(read_sets.values())

    def _registered(self, read_sets: Iterable[ReadSet]) -> None:
        """Forget the cached watched columns of a table these read sets watch more of: this
        process's writes see its own invalidator's registrations at once (other processes' within
        ``WATCHED_CACHE_SECONDS``), and so write row images, not the whole table."""
        for read_set in read_sets:
            for table, conjunctions in read_set.tables.items():
                cached = self._watched.get(table)
                if cached is None:
                    continue
                columns = cached[1]
                if columns is None or any(
                    c not in columns for conjunction in conjunctions for c, _ in conjunction
                ):
                    self._watched.pop(table, None)

    def instance_ids(self) -> set[str]:
        return {member.decode() for member in self.client.smembers(PREFIX + "instances")}


def _row_entry(row: RowChange) -> list:
    """``[table, old, new]``, with the columns an update changed when they are known."""
    changed = row.changed_columns
    if changed is None:
        return [row.table, row.old, row.new]
    return [row.table, row.old, row.new, sorted(changed)]
