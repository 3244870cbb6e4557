"""The Redis backend's keys and how values are written into them.

Every key starts with ``reactive:``. Values are written as typed text (``i5``, ``sabc``, ``~`` for
NULL: ``records.value_text``), the form row images have in the change log, so a match is a string
compare. The Lua scripts are files in ``lua/``, loaded by :func:`script`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import redis

from ...records import ReadSet, value_text
from ..index import entries_of

PREFIX = "reactive:"
REQUESTS = PREFIX + "requests"
PROGRESS = PREFIX + "progress"  # hash: version (in the change log), requests (in the requests stream)
LEASE = PREFIX + "lease"
EPOCH = PREFIX + "epoch"  # the leading worker's epoch: gone if Redis lost its data
HUBS = PREFIX + "hubs"  # sorted set: hub id -> heartbeat deadline (unix seconds)
INSTANCE = PREFIX + "instance:"  # hash per live instance, for a new worker after a failover
INSTANCE_IDS = PREFIX + "live"  # set of live instance ids
STATS = PREFIX + "stats"  # sorted set: statistics source -> expiry (unix seconds)
STATS_SNAPSHOT = PREFIX + "stats:"  # one JSON snapshot per source, with a TTL

HEARTBEAT_SECONDS = 2.0
HUB_TIMEOUT_SECONDS = 10.0
LEASE_MS = 5000
REQUESTS_LENGTH = 100_000
WATCHED_CACHE_SECONDS = 1.0

_LUA = Path(__file__).resolve().parent / "lua"


def index_entries(read_set: ReadSet) -> list[list[str]]:
    return [
        [table, ",".join(scheme), "\x1f".join(value_text(value) for value in values)]
        for table, scheme, values in entries_of(read_set)
    ]


def register_args(instance_id: str, read_set: ReadSet) -> list:
    """``lua/register.lua``'s arguments: the entries, and the tables whose dependency columns
    are known, each with them joined by "," (a table left out depends on every column)."""
    columns = {table: ",".join(sorted(names)) for table, names in read_set.columns.items()}
    return [PREFIX, instance_id, orjson.dumps(index_entries(read_set)), orjson.dumps(columns)]


def script(client: redis.Redis, name: str) -> Any:
    return client.register_script((_LUA / f"{name}.lua").read_text())
