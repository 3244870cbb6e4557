"""The Redis backend's keys and how values are written into them.

Every key starts with ``reactive:``. Values are written as typed text (``i5``, ``sabc``, ``~`` for
NULL), the same for reads (the index) and writes (row images), so a match is a string compare.
The Lua scripts are files in ``lua/``, loaded by :func:`script`.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import redis

from ...records import ReadSet, RowImage
from ..index import entries_of

PREFIX = "reactive:"
VERSION = PREFIX + "version"
LOG = PREFIX + "log"
REQUESTS = PREFIX + "requests"
PROGRESS = PREFIX + "progress"  # hash: version, requests (the worker's position in both streams)
LEASE = PREFIX + "lease"
EPOCH = PREFIX + "epoch"  # the leading worker's epoch: gone if Redis lost its data
HUBS = PREFIX + "hubs"  # sorted set: hub id -> heartbeat deadline (unix seconds)
INSTANCE = PREFIX + "instance:"  # hash per live instance, for a new worker after a failover
INSTANCE_IDS = PREFIX + "live"  # set of live instance ids

HEARTBEAT_SECONDS = 2.0
HUB_TIMEOUT_SECONDS = 10.0
# A process that hears nothing from a leading worker for this long reconnects its clients.
SILENCE_SECONDS = 10.0
LEASE_MS = 5000
REQUESTS_LENGTH = 100_000
WATCHED_CACHE_SECONDS = 1.0

_LUA = Path(__file__).resolve().parent / "lua"


def key_text(value: Hashable) -> str:
    """A canonical value as text, identical for reads (index) and writes (row images)."""
    if value is None:
        return "~"
    if value is True or value is False:
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value!r}"
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bytes):
        return "x" + value.hex()
    if isinstance(value, tuple):
        return "t(" + ",".join(key_text(item) for item in value) + ")"
    return "r" + repr(value)


def image_text(image: RowImage | None) -> dict[str, str] | None:
    return None if image is None else {column: key_text(value) for column, value in image.items()}


def index_entries(read_set: ReadSet) -> list[list[str]]:
    return [
        [table, ",".join(scheme), "\x1f".join(key_text(value) for value in values)]
        for table, scheme, values in entries_of(read_set)
    ]


def script(client: redis.Redis, name: str) -> Any:
    return client.register_script((_LUA / f"{name}.lua").read_text())
