"""The worker: holds the lease on the invalidator and runs it while it holds it.

With the Redis backend one worker runs at a time (``manage.py reactive_worker``); a second one
waits as a standby, and takes over within the lease's lifetime when the first stops renewing
it, resuming from the last processed version with the live instances the first one stored.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from django.db import close_old_connections, connection

from .backends.base import Backend
from .invalidation import Invalidator

logger = logging.getLogger("reactive.worker")

STANDBY_POLL_SECONDS = 0.25
REAP_EVERY_SECONDS = 2.0


class Worker:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.token = uuid.uuid4().hex
        self.stopping = threading.Event()
        self.leading = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.backend.acquire_lease(self.token):
                    self._lead()
                else:
                    time.sleep(STANDBY_POLL_SECONDS)
            except Exception:
                logger.exception("Worker error; retrying")
                self.leading.clear()
                connection.close()
                time.sleep(0.5)
        self.backend.release_lease(self.token)
        close_old_connections()

    def _lead(self) -> None:
        invalidator = Invalidator(self.backend, start_version=self.backend.load_progress())
        invalidator.restore(self.backend.load_instances())
        self.backend.invalidator = invalidator
        self.leading.set()
        logger.info("Worker %s leads from version %s", self.token[:8], invalidator.version)
        last_reap = 0.0
        while not self.stopping.is_set():
            invalidator.step(timeout=0.5)
            if time.monotonic() - last_reap > REAP_EVERY_SECONDS:
                invalidator.reap_dead_hubs()
                invalidator.cleanup_if_due()
                last_reap = time.monotonic()
            if not self.backend.acquire_lease(self.token):
                logger.warning("Worker %s lost its lease; standing by", self.token[:8])
                break
        self.leading.clear()
