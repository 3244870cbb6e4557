"""The worker: holds the lease on the invalidator and runs it while it holds it.

With the Redis backend one worker runs at a time (``manage.py reactive_worker``); a second one
waits as a standby, and takes over within the lease's lifetime when the first stops renewing
it, resuming from the last processed version with the live instances the first one stored.
On the embedded backend (and the Redis one with ``RUN_WORKER_IN_SERVER``) the server process
runs it in a thread: ``ensure_running`` starts it when the first socket connects.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import orjson
from django.db import close_old_connections, connection

from ..backends.base import Backend
from .invalidator import Invalidator
from .stats import TICK_SECONDS as STATS_SECONDS
from .stats import standby_snapshot, worker_source

logger = logging.getLogger("reactive.worker")

STANDBY_POLL_SECONDS = 0.25
REAP_EVERY_SECONDS = 2.0
TICK_SECONDS = 1.0
# After a rebuild, server processes need a heartbeat or two before their liveness means anything.
HUB_GRACE_SECONDS = 6.0


class Worker:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.token = uuid.uuid4().hex
        self.stopping = threading.Event()
        self.leading = threading.Event()
        # Set once the first try for the lease has ended (leading, or standing by).
        self.started = threading.Event()
        self.invalidator: Invalidator | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run_forever(self) -> None:
        last_published = 0.0
        while not self.stopping.is_set():
            try:
                if self.backend.acquire_lease(self.token):
                    self._lead()
                else:
                    self.invalidator = None  # another worker leads: its state is the truth
                    self.started.set()
                    if time.monotonic() - last_published > STATS_SECONDS:  # for the dashboard
                        last_published = time.monotonic()
                        self.backend.publish_stats(
                            worker_source(self.token), orjson.dumps(standby_snapshot(self.token))
                        )
                    time.sleep(STANDBY_POLL_SECONDS)
            except Exception:
                # Typically the backend went away; keep what this worker knows and retry.
                logger.exception("Worker error; retrying")
                self.started.set()
                self.leading.clear()
                connection.close()
                time.sleep(0.5)
        self.backend.release_lease(self.token)
        close_old_connections()

    def _lead(self) -> None:
        """Run the invalidator while the lease holds. After an error (the backend went away) the
        same invalidator goes on: its memory holds the live instances if Redis lost them."""
        if self.invalidator is None or self.backend.other_leader_since():
            self.invalidator = Invalidator(self.backend, start_version=self.backend.load_progress())
            self.invalidator.stats_source = worker_source(self.token)
            self.invalidator.restore(self.backend.load_instances())
            self.backend.mark_state()
            logger.info("Worker %s leads from version %s", self.token[:8], self.invalidator.version)
        invalidator = self.backend.invalidator = self.invalidator
        self.leading.set()
        self.started.set()
        last_reap = last_batch = time.monotonic()
        while not self.stopping.is_set():
            if not self.backend.state_intact():
                # Redis lost its data (a restart without persistence): store the instances
                # again and re-run them all (which registers their read sets again); processes
                # see the new epoch and resync. Hubs get time to heartbeat before any reaping.
                logger.warning("Worker %s: the backend lost its state; rebuilding", self.token[:8])
                self.backend.mark_state()
                invalidator.rebuild()
                last_reap = time.monotonic() + HUB_GRACE_SECONDS
            if invalidator.step(timeout=0.5):
                last_batch = time.monotonic()
            elif time.monotonic() - last_batch > TICK_SECONDS and self.backend.live_hubs() is not None:
                # An empty batch now and then: a process that missed messages (or a new
                # epoch) notices and resyncs even when nothing is written.
                invalidator.tick()
                last_batch = time.monotonic()
            if time.monotonic() - last_reap > REAP_EVERY_SECONDS:
                invalidator.reap_dead_hubs()
                invalidator.cleanup_if_due()
                last_reap = time.monotonic()
            if not self.backend.acquire_lease(self.token):
                logger.warning("Worker %s lost its lease; standing by", self.token[:8])
                self.invalidator = None
                break
        self.leading.clear()


_started: dict[int, Worker] = {}
_started_lock = threading.Lock()


def ensure_running(backend: Backend) -> Worker | None:
    """Start this process's worker thread for ``backend`` if it runs one and has none yet.

    Returns the worker (None if the backend's worker runs elsewhere); it stops when the
    backend closes. Callers that need it leading wait on ``worker.leading``.
    """
    if not backend.worker_in_server:
        return None
    with _started_lock:
        worker = _started.get(id(backend))
        if worker is None:
            worker = _started[id(backend)] = Worker(backend)

            def stop() -> None:
                worker.stop()
                with _started_lock:
                    _started.pop(id(backend), None)

            backend.on_close(stop)
            threading.Thread(target=worker.run_forever, name="reactive-worker", daemon=True).start()
    return worker
