"""The change log in the application's database, read in commit order by whoever runs an invalidator.

Every transaction that writes watchable tables appends one record to ``reactive_changelog`` just
before COMMIT (``capture/commits.py``), so the log holds a change if and only if its data
committed, whichever process committed it. Both backends read it here:

- ``DatabaseLog`` is the contract's ``ChangeLog``: the records after a version, in commit order
  (``capture/logtable.py`` has the SQL: ids on SQLite, transaction ids below the oldest
  transaction still in progress on Postgres).
- ``LogTail`` is where an invalidator waits for the next records without polling the table:
  this process's own commits wake it at once (``Backend.log_committed``); other processes' commits
  wake it through a database connection of its own (SQLite: ``PRAGMA data_version``, which changes
  when another connection commits, asked every ``CHANGE_LOG_POLL_SECONDS`` unless this process
  committed meanwhile, whose wake-up reads every process's records; Postgres: ``LISTEN``, the
  writers ``NOTIFY`` inside their transaction, so only commits are heard). It also prunes.

A wake-up only says "read again": what is read is decided by versions alone, so a lost, late or
repeated wake-up can delay a record, never skip or repeat it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from ..capture import commits, logtable
from ..records import ChangeRecord, RowChange, decode_change
from ..settings import reactive_settings
from .base import ChangeLog

logger = logging.getLogger("reactive.changelog")

# Records read per pass (more are read on the next pass, at once).
READ_LIMIT = 1000
# Postgres: while committed records wait behind an open transaction (which may write nothing
# watchable, so never NOTIFY), read again after this long, doubling up to the maximum.
PENDING_POLL_SECONDS = 0.005
PENDING_POLL_MAX_SECONDS = 0.25
# Prune at least this often, and after every tenth of CHANGE_LOG_LENGTH records read.
PRUNE_EVERY_SECONDS = 60.0
WATCH_RETRY_SECONDS = 1.0


class DatabaseLog(ChangeLog):
    """The ``reactive_changelog`` table of one database, read through the calling thread's connection."""

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using

    def append(
        self,
        rows: tuple[RowChange, ...],
        opaque_tables: frozenset[str],
        revoked: frozenset[str] = frozenset(),
    ) -> int:
        """Commit one change record in a transaction of its own (as a commit of these writes would)."""
        connection = connections[self.using]
        with commits.commit_versions() as committed, transaction.atomic(using=self.using):
            commits.record(connection, list(rows), opaque_tables, revoked=revoked)
        if committed.last is None:
            raise ValueError(f"Nothing to log: {rows!r} {opaque_tables!r} write only ignored tables")
        return committed.last

    def head(self) -> int:
        return logtable.head(connections[self.using])

    def read_after(self, version: int, limit: int) -> list[ChangeRecord]:
        return self.read(version, limit)[0]

    def read(self, version: int, limit: int) -> tuple[list[ChangeRecord], bool]:
        """Records after ``version`` in commit order, and whether committed records wait behind an
        older transaction still in progress (Postgres: they are read once it ends)."""
        entries, pending = logtable.read(connections[self.using], version, limit)
        return [decode_change(entry_version, changes) for entry_version, changes in entries], pending

    def prune(self, now: float | None = None) -> int:
        """Drop records past ``CHANGE_LOG_LENGTH`` or older than ``CHANGE_LOG_RETENTION_SECONDS``
        (at the unix time ``now``); a reader that had not read them re-runs everything."""
        now = time.time() if now is None else now
        return logtable.prune(
            connections[self.using],
            keep=reactive_settings.CHANGE_LOG_LENGTH,
            older_than=now - reactive_settings.CHANGE_LOG_RETENTION_SECONDS,
        )


class LogTail:
    """Reads the log for one invalidator, and knows when reading again may find something.

    ``changed`` and ``wake()`` are guarded by ``condition``, which the backend also waits on for
    its requests; ``read`` is called by the invalidator's thread only, without the condition.
    """

    def __init__(self, log: DatabaseLog, condition: threading.Condition) -> None:
        self.log = log
        self.condition = condition
        self.changed = True  # the first pass reads
        self.pending = False
        self._pending_poll = PENDING_POLL_SECONDS
        self._watcher: _Watcher | None = None
        self._closed = False
        self._read_since_prune = 0
        self._last_prune = time.monotonic()
        self._committed_here_at = -1e9  # time.monotonic() of this process's latest commit

    def committed_here(self) -> None:
        """This process committed a record: read at once."""
        self._committed_here_at = time.monotonic()
        if not self.changed:  # else a read is due already (see wake)
            self.wake()

    def committed_here_within(self, seconds: float) -> bool:
        """Whether this process committed a record in the last ``seconds``: the read that commit
        woke reads every process's records, so asking the database for others' commits can wait."""
        return time.monotonic() - self._committed_here_at < seconds

    def wake(self) -> None:
        """The log may hold new records: the next wait ends at once."""
        if self.changed:
            # Read without the lock (one attribute, atomic): still set means the reader has not
            # yet cleared it for its next read, which so starts after the records that woke us,
            # and whoever set it woke any waiter. Most commits under load take this way.
            return
        with self.condition:
            self.changed = True
            self.condition.notify_all()

    def wait_seconds(self, timeout: float) -> float:
        """How long the reader may wait for a wake-up before it reads again anyway."""
        return min(timeout, self._pending_poll) if self.pending else timeout

    def read(self, after: int, limit: int = READ_LIMIT) -> list[ChangeRecord]:
        """The records after ``after``; starts watching the database on the first call."""
        self._start_watching()
        with self.condition:
            self.changed = False  # a commit from now on sets it again
        records, self.pending = self.log.read(after, limit)
        if len(records) >= limit:
            with self.condition:
                self.changed = True  # there is more: no waiting
        if self.pending and not records:
            self._pending_poll = min(self._pending_poll * 2, PENDING_POLL_MAX_SECONDS)
        else:
            self._pending_poll = PENDING_POLL_SECONDS
        self._prune_if_due(len(records))
        return records

    def _prune_if_due(self, read: int) -> None:
        self._read_since_prune += read
        every = max(1, reactive_settings.CHANGE_LOG_LENGTH // 10)
        if self._read_since_prune < every and time.monotonic() - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._read_since_prune = 0
        self._last_prune = time.monotonic()
        try:
            self.log.prune()
        except Exception as exc:  # the log grows a little longer; the next prune tries again
            logger.info("Could not prune the change log (will try again): %s", exc)

    def _start_watching(self) -> None:
        if self._watcher is not None or self._closed:
            return
        connection = connections[self.log.using]
        if connection.vendor not in ("sqlite", "postgresql"):
            return  # reactive.E005 reports it; reads still happen on every pass
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            return  # one process, one connection: its own commits wake it
        settings_dict = dict(connection.settings_dict)
        self._watcher = _Watcher(
            type(connection), settings_dict, self.log.using, self.wake, self.committed_here_within
        )
        self._watcher.start()

    def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.stopping.set()


class _Watcher(threading.Thread):
    """Calls ``wake`` when another connection may have committed a change record."""

    def __init__(
        self,
        wrapper_class: type,
        settings_dict: dict,
        alias: str,
        wake: Callable[[], None],
        committed_here_within: Callable[[float], bool],
    ) -> None:
        super().__init__(name="reactive-log-watcher", daemon=True)
        self.wrapper = wrapper_class(settings_dict, alias)
        self.wake = wake
        self.committed_here_within = committed_here_within
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                # A connection of its own, made by Django from the same settings, never shared.
                raw = self.wrapper.get_new_connection(self.wrapper.get_connection_params())
                try:
                    self.wake()  # commits made while nobody watched are read now
                    if self.wrapper.vendor == "postgresql":
                        self._listen(raw)
                    else:
                        self._poll_data_version(raw)
                finally:
                    raw.close()
            except Exception as exc:
                logger.warning("Watching the change log failed (%s); retrying", exc)
                self.stopping.wait(WATCH_RETRY_SECONDS)

    def _poll_data_version(self, raw) -> None:
        # PRAGMA data_version changes when another connection commits. Asking costs tens of
        # microseconds (it opens a read transaction): every 4 ms, about 1.5% of a core. A plain
        # sleep wakes the thread more cheaply than waiting on an event with a timeout. While this
        # process commits, its own wake-ups read the others' records too: no need to ask then (and
        # under a stream of writes, asking contends with the writers for the database).
        interval = reactive_settings.CHANGE_LOG_POLL_SECONDS
        cursor = raw.cursor()
        last = cursor.execute("PRAGMA data_version").fetchone()[0]
        while not self.stopping.is_set():
            time.sleep(interval)
            if self.committed_here_within(interval):
                continue
            version = cursor.execute("PRAGMA data_version").fetchone()[0]
            if version != last:
                last = version
                self.wake()

    def _listen(self, raw) -> None:
        raw.autocommit = True  # notifications arrive between transactions only
        raw.execute(f"LISTEN {logtable.LOG_CHANNEL}")
        while not self.stopping.is_set():
            for _ in raw.notifies(timeout=0.5):
                self.wake()
