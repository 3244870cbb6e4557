"""The embedded backend: nothing to install; every server process tails the change log itself.

The change log is the ``reactive_changelog`` table of the application's database
(``changelog.py``), so a commit from any process (another server, a ``manage.py shell``, a
management command, a job) reaches this one. The index is a dict of dicts and the invalidator a
thread of the server process: each process re-runs what its own sockets need. Batches go to the
hub straight through the event loop: one thread hop per batch, no copy of the results (Channels'
in-memory layer deep-copies every message, caps each channel at 100 messages and drops group
messages beyond that).
"""

from __future__ import annotations

import collections
import threading

from ..records import ChangeRecord
from .base import Backend, Batch, DropHub, Request
from .changelog import DatabaseLog, LogTail
from .index import InMemoryIndex


class EmbeddedBackend(Backend):
    def __init__(self) -> None:
        super().__init__()
        self._wakeup = threading.Condition()
        self.log = DatabaseLog()
        self.tail = LogTail(self.log, self._wakeup)
        self.index = InMemoryIndex()
        self._requests: collections.deque[Request] = collections.deque()
        self._hubs: dict[str, object] = {}

    def submit(self, request: Request) -> None:
        with self._wakeup:
            self._requests.append(request)
            self._wakeup.notify_all()

    def log_committed(self, version: int) -> None:
        self.tail.committed_here()

    async def connect_hub(self, hub) -> None:
        self._hubs[hub.hub_id] = hub

    def disconnect_hub(self, hub) -> None:
        if self._hubs.pop(hub.hub_id, None) is not None:
            self.submit(DropHub(hub.hub_id))

    def next_work(self, after: int, timeout: float) -> tuple[list[ChangeRecord], list[Request]]:
        with self._wakeup:
            if not self.tail.changed and not self._requests:
                self._wakeup.wait(self.tail.wait_seconds(timeout))
            requests = list(self._requests)
            self._requests.clear()
        # Read whether woken or not: a wake-up only makes the read come sooner.
        return self.tail.read(after), requests

    def deliver(self, batch: Batch) -> None:
        for hub in list(self._hubs.values()):
            hub.deliver_threadsafe(batch)

    def close(self) -> None:
        super().close()
        self.tail.close()
        self._hubs.clear()
