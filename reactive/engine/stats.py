"""The invalidator's statistics, for the admin's live dashboard: what ran, what it cost, and why.

Collected by the invalidator's own thread (the only writer, so no lock): plain counters, and
bounded deques for run times, recent change records and per-second series, so memory stays
bounded whatever the load. What is expensive (medians, the explanation of why an instance
re-ran) is computed only in ``snapshot``, about once a second, and only while a dashboard
watches.

How the dashboard's queries stay live: they read ``STATS_TABLE``, a table no database has. About
once a second (``tick_due``) the invalidator publishes its snapshot and re-runs the instances
that read that table, in an ordinary pass, as if a commit had written it (see
``Invalidator.step``). Nothing else ever reads or writes it, so no other query re-runs.
"""

from __future__ import annotations

import heapq
import statistics
import time
from collections import Counter, deque
from collections.abc import Hashable, Iterable
from typing import Any

from django.apps import apps

from ..capture import origin, tracking
from ..records import ANY_TABLE, ChangeRecord, ReadSet, RowChange, RowImage, value_text

# The table the dashboard's queries read: its name cannot be a real table's (it has a colon).
STATS_TABLE = "reactive:stats"
TICK_SECONDS = 1.0
RUN_TIMES_KEPT = 128  # per instance: the median and p99 are of its last runs
WHY_KEPT = 5  # per instance: the last writes that made it re-run
RECORDS_KEPT = 256  # recent change records, for the writes and the explanations
ROWS_KEPT = 50  # rows kept of each of them
SERIES_SECONDS = 300  # per function: runs and run time per second, for the chart
PASSES_SECONDS = 60
TOP_INSTANCES = 200  # instances in a snapshot, the costliest first
RATE_WINDOW_SECONDS = 10


def depend_on_stats() -> None:
    """Called by a query that shows statistics: it re-runs about once a second."""
    tracker = tracking.current()
    if tracker is not None:
        tracker.read_set.add_table(STATS_TABLE)


class InstanceStats:
    __slots__ = (
        "args",
        "is_error",
        "last_run",
        "name",
        "read_set",
        "runs",
        "size",
        "times",
        "total_seconds",
        "unchanged",
        "updates",
        "why",
    )

    def __init__(self, name: str, args: Any) -> None:
        self.name = name
        self.args = args
        self.runs = self.updates = self.unchanged = self.size = 0
        self.total_seconds = 0.0
        self.last_run = 0.0
        self.is_error = False
        self.times: deque[float] = deque(maxlen=RUN_TIMES_KEPT)
        self.read_set: ReadSet | None = None
        # (version of a record that matched, the read set it matched)
        self.why: deque[tuple[int, ReadSet]] = deque(maxlen=WHY_KEPT)


class WriteEntry:
    """A recent change record, trimmed to what the dashboard shows."""

    __slots__ = ("_rows_by_table", "opaque", "origin", "rows", "time", "touched", "version")

    def __init__(self, record: ChangeRecord, touched: int, now: float) -> None:
        self.version = record.version
        self.origin = record.origin
        self.time = now
        self.touched = touched
        self.opaque = record.opaque_tables
        self.rows = record.rows
        # Counted now only when rows are dropped (a large commit); else when shown.
        self._rows_by_table: Counter[str] | None = None
        if len(record.rows) > ROWS_KEPT:
            self._rows_by_table = Counter(row.table for row in record.rows)
            self.rows = record.rows[:ROWS_KEPT]

    @property
    def rows_by_table(self) -> Counter[str]:
        if self._rows_by_table is None:
            self._rows_by_table = Counter(row.table for row in self.rows)
        return self._rows_by_table


class InvalidatorStats:
    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self.instances: dict[str, InstanceStats] = {}
        self.functions: dict[str, deque[list]] = {}  # name -> [second, runs, seconds]
        self.passes: deque[list] = deque(maxlen=PASSES_SECONDS)  # [second, passes, records]
        self.writes: deque[WriteEntry] = deque(maxlen=RECORDS_KEPT)
        self._next_tick = 0.0

    # Recorded by the invalidator ---------------------------------------------------------

    def ran(self, instance_id: str, name: str, args: Any, run: Any, seconds: float, changed: bool) -> None:
        """One run of an instance (``run`` is its ``QueryRun``); ``changed``: an update was sent."""
        stats = self.instances.get(instance_id)
        if stats is None:
            stats = self.instances[instance_id] = InstanceStats(name, args)
        now = self.clock()
        stats.runs += 1
        if changed:
            stats.updates += 1
        else:
            stats.unchanged += 1
        stats.total_seconds += seconds
        stats.times.append(seconds)
        stats.last_run = now
        stats.size = len(run.payload)
        stats.is_error = run.is_error
        stats.read_set = run.read_set
        series = self.functions.get(name)
        if series is None:
            series = self.functions[name] = deque(maxlen=SERIES_SECONDS)
        second = int(now)
        if series and series[-1][0] == second:
            series[-1][1] += 1
            series[-1][2] += seconds
        else:
            series.append([second, 1, seconds])

    def passed(self, records: list[ChangeRecord], matched: list[set[str]]) -> None:
        """One pass read ``records``; ``matched[i]``: the instances record ``i`` affected."""
        now = self.clock()
        second = int(now)
        if self.passes and self.passes[-1][0] == second:
            self.passes[-1][1] += 1
            self.passes[-1][2] += len(records)
        else:
            self.passes.append([second, 1, len(records)])
        for record, instance_ids in zip(records, matched, strict=True):
            self.writes.append(WriteEntry(record, len(instance_ids), now))
            for instance_id in instance_ids:
                stats = self.instances.get(instance_id)
                if stats is not None and stats.read_set is not None:
                    stats.why.append((record.version, stats.read_set))

    def forget(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)

    def tick_due(self) -> bool:
        """True at most once per ``TICK_SECONDS``."""
        now = time.monotonic()
        if now < self._next_tick:
            return False
        self._next_tick = now + TICK_SECONDS
        return True

    def seconds_to_tick(self) -> float:
        return max(0.0, self._next_tick - time.monotonic())

    # Read by the dashboard -----------------------------------------------------------------

    def snapshot(self, *, head: int | None, processed: int, live: int) -> dict[str, Any]:
        """The worker's statistics as JSON-ready data (the costliest instances only)."""
        now = self.clock()
        recent = [p for p in self.passes if p[0] > now - RATE_WINDOW_SECONDS]
        passes = sum(p[1] for p in recent)
        records = sum(p[2] for p in recent)
        by_version = {write.version: write for write in self.writes}
        top = heapq.nlargest(TOP_INSTANCES, self.instances.items(), key=lambda item: item[1].total_seconds)
        since = now - SERIES_SECONDS
        return {
            "time": now,
            "invalidator": {
                "head": head,
                "processed": processed,
                "lag": None if head is None else max(0, head - processed),
                "batches_per_second": passes / RATE_WINDOW_SECONDS,
                "records_per_batch": records / passes if passes else 0.0,
                "instances": live,
            },
            "instances": [_instance_data(instance_id, stats, by_version) for instance_id, stats in top],
            "instances_total": len(self.instances),
            "functions": {
                name: [point for point in series if point[0] > since]
                for name, series in self.functions.items()
            },
            "writes": [_write_data(write) for write in reversed(self.writes)],
        }


def _instance_data(instance_id: str, stats: InstanceStats, writes: dict[int, WriteEntry]) -> dict[str, Any]:
    times = sorted(stats.times)
    return {
        "id": instance_id,
        "name": stats.name,
        "args": stats.args,
        "runs": stats.runs,
        "updates": stats.updates,
        "unchanged": stats.unchanged,
        "total_ms": stats.total_seconds * 1000,
        "median_ms": statistics.median(times) * 1000 if times else None,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000 if times else None,
        "size": stats.size,
        "error": stats.is_error,
        "last_run": stats.last_run,
        "why": [
            _why_data(version, read_set, writes.get(version)) for version, read_set in reversed(stats.why)
        ],
    }


def _write_data(write: WriteEntry) -> dict[str, Any]:
    return {
        "version": write.version,
        "time": write.time,
        "origin": list(write.origin) if write.origin else None,
        "tables": dict(write.rows_by_table)
        | {table: 0 for table in write.opaque if table not in write.rows_by_table},
        "opaque": sorted(write.opaque),
        "touched": write.touched,
    }


def _why_data(version: int, read_set: ReadSet, write: WriteEntry | None) -> dict[str, Any]:
    """Why a record made an instance re-run: which rows matched which condition of its read set."""
    if write is None:
        return {"version": version, "origin": None, "matches": [], "forgotten": True}
    return {
        "version": version,
        "time": write.time,
        "origin": list(write.origin) if write.origin else None,
        "matches": explain(write.rows, write.opaque, read_set),
        "forgotten": False,
    }


def explain(
    rows: tuple[RowChange, ...], opaque: Iterable[str], read_set: ReadSet, limit: int = 5
) -> list[dict]:
    """The rows (and tables written as a whole) that hit ``read_set``, each with the condition
    it matched and the columns compared (a column the row image lacks matches any value)."""
    found: list[dict] = []
    for table in sorted(opaque):
        if table == ANY_TABLE or table in read_set.tables or ANY_TABLE in read_set.tables:
            found.append(
                {"table": table, "pk": None, "condition": "the whole table was written", "columns": []}
            )
    for row in rows:
        conjunctions = read_set.tables.get(row.table) or read_set.tables.get(ANY_TABLE)
        if not conjunctions or len(found) >= limit:
            continue
        for image in (row.new, row.old):
            hit = _matching(conjunctions, image) if image is not None else None
            if hit is not None:
                found.append(
                    {
                        "table": row.table,
                        "pk": _pk_of(row.table, image),
                        "condition": " AND ".join(f"{c} = {_shown(value_text(v))}" for c, v in hit)
                        or "any row",
                        "columns": [c for c, _ in hit if c in image],
                        "unknown": [c for c, _ in hit if c not in image],
                        "image": "new" if image is row.new else "old",
                    }
                )
                break
    return found[:limit]


def _matching(conjunctions: set, image: RowImage) -> list[tuple[str, Hashable]] | None:
    for conjunction in conjunctions:
        pairs = sorted(conjunction, key=lambda pair: pair[0])
        if all(column not in image or image[column] == value_text(value) for column, value in pairs):
            return pairs
    return None


def _shown(text: Any) -> str:
    """A value text (``i5``, ``sabc``, ``~``) as a reader would write it."""
    if not isinstance(text, str) or not text:
        return repr(text)
    kind, rest = text[0], text[1:]
    if kind == "~":
        return "NULL"
    if kind in "if":
        return rest
    if kind == "b":
        return "true" if rest == "1" else "false"
    if kind == "s":
        return repr(rest)
    return rest


_pk_columns: dict[str, str] = {}


def _pk_of(table: str, image: RowImage) -> str | None:
    if not _pk_columns:
        for model in apps.get_models(include_auto_created=True):
            _pk_columns.setdefault(model._meta.db_table, model._meta.pk.column)
    column = _pk_columns.get(table, "id")
    return _shown(image[column]) if column in image else None


def worker_source(token: str) -> str:
    return f"worker:{token}"


def standby_snapshot(token: str) -> dict[str, Any]:
    """What a standby worker publishes: that it is there."""
    return {
        "kind": "worker",
        "role": "standby",
        "source": worker_source(token),
        "process": origin.process_name(),
    }
