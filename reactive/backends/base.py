"""The backend contract: what the engine needs from a log, an index and a transport.

The invalidator (``engine/invalidator.py``) and the per-process hub (``server/hub.py``) are
written against these classes only; the embedded backend implements them in memory, the Redis
backend with Redis streams, Lua scripts and channels_redis. ``tests/test_backend_contract.py``
pins what every backend must do.

Both backends read the same change log, the ``reactive_changelog`` table that every committing
transaction appends to (``changelog.py``); they differ in where the index lives and how batches
reach server processes.

A backend runs no engine code: the server starts the invalidator (``engine.worker``) where
``worker_in_server`` says, and the backend only carries what the invalidator reads and sends.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..records import ChangeRecord, ReadSet, RowChange

# A published statistics snapshot that is not renewed for this long is gone (its process is).
STATS_TTL_SECONDS = 5.0


class BackendUnavailable(Exception):
    """The backend cannot be reached (raised by a backend only: what a request carries never
    makes a process give up on its backend)."""


# Messages from a hub to the invalidator ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ensure:
    """Make the query instance live for this hub and reply with its current value."""

    request_id: int
    hub_id: str
    name: str
    args: dict
    user_id: object | None  # the user's primary key, None when signed out


@dataclass(frozen=True, slots=True)
class Release:
    """This hub no longer has subscribers of the instance."""

    hub_id: str
    instance_id: str


@dataclass(frozen=True, slots=True)
class DropHub:
    """The hub is gone: release everything it held."""

    hub_id: str


Request = Ensure | Release | DropHub

# Messages from the invalidator to hubs -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceUpdate:
    instance_id: str
    payload: bytes
    is_error: bool


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The reply to an ``Ensure``: the instance the request maps to, and its value."""

    request_id: int
    hub_id: str
    instance_id: str
    payload: bytes
    is_error: bool
    identity_bound: bool


@dataclass(slots=True)
class Batch:
    """Everything one invalidator pass produced, computed in one snapshot at ``version``.

    ``resubscribe``: shared instances whose re-run read the caller's identity; each subscriber
    must subscribe again as itself.
    ``revoked``: the sign-ins the pass's commits may have ended (``ChangeRecord.revoked``); each
    hub re-checks the connections they name.
    """

    version: int
    updates: list[InstanceUpdate] = field(default_factory=list)
    replies: list[Subscribed] = field(default_factory=list)
    resubscribe: list[str] = field(default_factory=list)
    revoked: frozenset[str] = frozenset()
    # The hubs watching each updated or resubscribed instance, for backends that route by hub.
    audience: dict[str, frozenset[str]] = field(default_factory=dict)
    # Hubs whose instances the invalidator released because they stopped heartbeating: if one
    # is alive after all, it must subscribe everything again.
    released_hubs: frozenset[str] = frozenset()


# The parts -----------------------------------------------------------------------------------


class ChangeLog(ABC):
    """The log of change records in commit order. Committing transactions append to it
    themselves (``capture/commits.py``); versions only grow, survive restarts and stay below
    2**53. Records a reader had not read when they were pruned come back as one record of
    ``ANY_TABLE``: the reader re-runs everything instead of missing a change."""

    @abstractmethod
    def append(
        self,
        rows: tuple[RowChange, ...],
        opaque_tables: frozenset[str],
        revoked: frozenset[str] = frozenset(),
    ) -> int:
        """Commit one change record on its own (and the sign-ins it may have ended); return its
        version."""

    @abstractmethod
    def head(self) -> int:
        """The version of the latest record a reader can read now."""

    @abstractmethod
    def read_after(self, version: int, limit: int) -> list[ChangeRecord]:
        """Records with a larger version, in commit order: each committed record exactly once
        to a reader that goes on from the version of the last record it read."""


class ReadSetIndex(ABC):
    """Which live query instances depend on which rows."""

    @abstractmethod
    def watched_columns(self, table: str) -> frozenset[str] | None:
        """Columns that some live instance constrains on ``table``; None if none reads it."""

    @abstractmethod
    def set(self, instance_id: str, read_set: ReadSet) -> None:
        """Replace the read set of an instance."""

    @abstractmethod
    def remove(self, instance_id: str) -> None: ...

    @abstractmethod
    def match(self, record: ChangeRecord) -> set[str]:
        """The instances whose read set one of the record's rows (old or new values) hits."""

    def match_each(self, records: list[ChangeRecord]) -> list[set[str]]:
        """``match`` of each of a pass's records (a backend may do it in one round trip)."""
        return [self.match(record) for record in records]

    def match_all(self, records: list[ChangeRecord]) -> set[str]:
        """The instances any of a pass's records affects."""
        return set().union(*self.match_each(records))

    def set_all(self, read_sets: dict[str, ReadSet]) -> None:
        """``set`` for a pass's re-run instances."""
        for instance_id, read_set in read_sets.items():
            self.set(instance_id, read_set)

    @abstractmethod
    def instance_ids(self) -> set[str]: ...


class Backend(ABC):
    log: ChangeLog
    index: ReadSetIndex
    # Whether each server process runs the invalidator (``engine.worker.ensure_running``); if not,
    # ``manage.py reactive_worker`` does.
    worker_in_server: bool = True
    # The invalidator this process runs, if any (set by the worker; tests read its counters).
    invalidator: Any = None
    # The (BACKEND, REDIS_URL) settings it was made from: a change of either makes a new one.
    configured_as: tuple[Any, Any] | None = None

    def __init__(self) -> None:
        self._on_close: list[Callable[[], None]] = []
        self._stats: dict[str, tuple[float, bytes]] = {}

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the backend closes (the worker stops with it)."""
        self._on_close.append(callback)

    @abstractmethod
    def submit(self, request: Request) -> None:
        """Send a request from a hub to the invalidator (any thread)."""

    def log_committed(self, version: int) -> None:  # noqa: B027
        """This process committed the change record at ``version``: a tail in this process reads
        at once rather than when the database tells it (any thread)."""

    @abstractmethod
    async def connect_hub(self, hub) -> None:
        """Deliver batches to ``hub`` from now on."""

    @abstractmethod
    def disconnect_hub(self, hub) -> None: ...

    @abstractmethod
    def next_work(self, after: int, timeout: float) -> tuple[list[ChangeRecord], list[Request]]:
        """Invalidator side: wait up to ``timeout`` for records after ``after`` or requests."""

    @abstractmethod
    def deliver(self, batch: Batch) -> None:
        """Invalidator side: hand a finished batch to the hubs."""

    # The worker's durable state: a backend whose worker can fail over keeps it; the embedded
    # backend's worker lives and dies with its only server process, so these do nothing.

    def save_progress(self, version: int) -> None:  # noqa: B027
        """The version the worker has processed (and its place among the requests)."""

    def load_progress(self) -> int:
        """Where a (new) worker resumes: the saved progress, else the log's head."""
        return self.log.head()

    def store_instances(self, changed: list, dropped: set[str]) -> None:  # noqa: B027
        """Store live instances (query, arguments, identity, latest result, hubs) and forget
        dropped ones."""

    def load_instances(self) -> list[dict]:
        return []

    def live_hubs(self) -> set[str] | None:
        """Hubs known to be alive, or None if liveness is not tracked (one process)."""
        return None

    def mark_state(self) -> None:  # noqa: B027
        """Leave a mark that ``state_intact`` checks (a new worker epoch)."""

    def other_leader_since(self) -> bool:
        """Whether another worker led since this one marked the state (so its memory is stale)."""
        return False

    def state_intact(self) -> bool:
        """False if the backend lost its state since ``mark_state`` (Redis restarted empty)."""
        return True

    def acquire_lease(self, token: str) -> bool:
        """Take or renew the right to run the invalidator."""
        return True

    def release_lease(self, token: str) -> None:  # noqa: B027
        pass

    # Live statistics, for the admin's dashboard (``engine/stats.py``, ``server/stats.py``): each
    # process publishes a snapshot of its own about once a second; the dashboard's queries read
    # them all. In this process's memory by default; the Redis backend shares them.

    def publish_stats(self, source: str, snapshot: bytes) -> None:
        """Keep ``source``'s latest snapshot (JSON) for ``STATS_TTL_SECONDS`` (any thread)."""
        self._stats[source] = (time.monotonic() + STATS_TTL_SECONDS, snapshot)

    def stats_snapshots(self) -> list[bytes]:
        """The snapshots of every live source this backend reaches, in no particular order."""
        now = time.monotonic()
        return [snapshot for expires, snapshot in list(self._stats.values()) if expires > now]

    def close(self) -> None:
        """Stop background work (tests, a change of settings)."""
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()
