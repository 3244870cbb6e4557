"""The embedded backend: everything in one server process, nothing to install.

The change log is a bounded in-memory deque, the index a dict of dicts, and the invalidator a
thread of the server process. Batches go to the hub straight through the event loop: one
thread hop per batch, no copy of the results (Channels' in-memory layer deep-copies every
message, caps each channel at 100 messages and drops group messages beyond that).

Writes made by other processes (a ``manage.py shell``, a second server) are not seen: that is
what the Redis backend is for.
"""

from __future__ import annotations

import collections
import threading
import time

from ..records import ChangeRecord, RowChange
from ..settings import reactive_settings
from .base import Backend, Batch, ChangeLog, DropHub, Request
from .index import InMemoryIndex


class EmbeddedLog(ChangeLog):
    def __init__(self, maxlen: int, wakeup: threading.Condition) -> None:
        self._records: collections.deque[ChangeRecord] = collections.deque(maxlen=maxlen)
        self._wakeup = wakeup
        # Versions continue from the clock (in microseconds), so a restarted server never hands
        # a client a version lower than one it saw before.
        self._version = time.time_ns() // 1000

    def append(
        self,
        rows: tuple[RowChange, ...],
        opaque_tables: frozenset[str],
        revoked: frozenset[str] = frozenset(),
    ) -> int:
        with self._wakeup:
            self._version += 1
            self._records.append(ChangeRecord(self._version, rows, opaque_tables, revoked))
            self._wakeup.notify_all()
            return self._version

    def head(self) -> int:
        return self._version

    def read_after(self, version: int, limit: int) -> list[ChangeRecord]:
        with self._wakeup:
            if self._version <= version:
                return []
            records = self._records
            # Records are consecutive: index straight to the first one after `version`.
            start = max(0, len(records) - (self._version - version))
            return [records[i] for i in range(start, min(len(records), start + limit))]


class EmbeddedBackend(Backend):
    def __init__(self) -> None:
        super().__init__()
        self._wakeup = threading.Condition()
        self.log = EmbeddedLog(reactive_settings.CHANGE_LOG_LENGTH, self._wakeup)
        self.index = InMemoryIndex()
        self._requests: collections.deque[Request] = collections.deque()
        self._hubs: dict[str, object] = {}

    def submit(self, request: Request) -> None:
        with self._wakeup:
            self._requests.append(request)
            self._wakeup.notify_all()

    async def connect_hub(self, hub) -> None:
        self._hubs[hub.hub_id] = hub

    def disconnect_hub(self, hub) -> None:
        if self._hubs.pop(hub.hub_id, None) is not None:
            self.submit(DropHub(hub.hub_id))

    def next_work(self, after: int, timeout: float) -> tuple[list[ChangeRecord], list[Request]]:
        with self._wakeup:
            if self.log.head() <= after and not self._requests:
                self._wakeup.wait(timeout)
            requests = list(self._requests)
            self._requests.clear()
        return self.log.read_after(after, 1000), requests

    def deliver(self, batch: Batch) -> None:
        for hub in list(self._hubs.values()):
            hub.deliver_threadsafe(batch)

    def close(self) -> None:
        super().close()
        self._hubs.clear()
