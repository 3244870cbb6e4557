"""The change log as a Redis stream: ``lua/append.lua`` allocates the version and appends in one call."""

from __future__ import annotations

import orjson
import redis

from ...records import ChangeRecord, RowChange
from ...settings import reactive_settings
from ..base import ChangeLog
from .keys import LOG, VERSION, image_text, script


class RedisLog(ChangeLog):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._append = script(client, "append")

    def append(
        self,
        rows: tuple[RowChange, ...],
        opaque_tables: frozenset[str],
        revoked: frozenset[str] = frozenset(),
    ) -> int:
        record = {
            "rows": [[row.table, image_text(row.old), image_text(row.new)] for row in rows],
            "opaque": sorted(opaque_tables),
        }
        if revoked:  # rare: most records end no sign-in
            record["revoked"] = sorted(revoked)
        payload = orjson.dumps(record)
        return int(self._append(keys=[VERSION, LOG], args=[payload, reactive_settings.CHANGE_LOG_LENGTH]))

    def head(self) -> int:
        return int(self.client.get(VERSION) or 0)

    def read_after(self, version: int, limit: int) -> list[ChangeRecord]:
        entries = self.client.xrange(LOG, min=f"({version}-0", max="+", count=limit)
        return [record_of(entry_id, fields) for entry_id, fields in entries]


def record_of(entry_id: bytes, fields: dict[bytes, bytes]) -> ChangeRecord:
    """A change record read back from the stream; its row images hold key texts."""
    data = orjson.loads(fields[b"d"])
    rows = tuple(RowChange(table, old, new) for table, old, new in data["rows"])
    return ChangeRecord(
        int(entry_id.split(b"-")[0]), rows, frozenset(data["opaque"]), frozenset(data.get("revoked", ()))
    )
