"""The invalidator: the one ordering point between commits and pushed results.

It takes the change records in log order, matches their rows against the read-set index, re-runs
every affected query instance once, all in one database snapshot, drops results that did not
change, and hands one ``Batch`` per pass to the hubs. New subscriptions are run here too, in the
same pass, and their read sets registered before the next records are read: a write committed
after a subscription's first run has a later version, so it is matched against the registered
read set (invariant 1 of ARCHITECTURE.md). The other way round, a record committed before a run but
read after it (it was in flight, or waited behind an older transaction) re-runs nothing that run
saw it: each instance keeps the records its last run's snapshot saw.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..auth import active_user
from ..backends.base import Backend, Batch, DropHub, Ensure, InstanceUpdate, Release, Subscribed
from ..capture import origin
from ..capture.logtable import Seen
from ..errors import ProtocolError
from ..functions import encoding
from ..functions.context import Context
from ..functions.registry import Function, get_function
from ..models import MutationRecord
from ..records import ANY_TABLE, ANYONE, ChangeRecord
from ..settings import reactive_settings
from .execution import QueryRun, run_query, server_error
from .instances import SHARED, candidate_ids, identity_of, instance_base, instance_id
from .snapshot import read_snapshot
from .stats import STATS_TABLE, InvalidatorStats, worker_source

logger = logging.getLogger("reactive.invalidation")

_CLEANUP_EVERY_SECONDS = 600


@dataclass(slots=True)
class Instance:
    id: str
    function: Function
    args: dict[str, Any]
    canonical_args: dict[str, Any]  # what the arguments were validated from (stored for a standby)
    user_id: object | None  # the identity it runs as; None for shared and anonymous instances
    identity_bound: bool
    payload: bytes
    is_error: bool
    hubs: set[str]
    # The change records its last run's snapshot saw (``version in seen``), or None: unknown.
    seen: Seen | None = None


class Hooks:
    """Test hooks: deterministic places to interleave a write with the invalidator's work."""

    # Called with the pass's Batch after its queries ran, before their read sets are registered.
    before_register: Callable[[Batch], None] | None = None
    # Called with the pass's requests after its records were read, before its snapshot is taken.
    before_snapshot: Callable[[list], None] | None = None


hooks = Hooks()


class Invalidator:
    def __init__(self, backend: Backend, start_version: int) -> None:
        self.backend = backend
        self.version = start_version
        self.instances: dict[str, Instance] = {}
        # Runs per function name: tests and benchmarks read it to prove one run per instance.
        self.runs: Counter[str] = Counter()
        self.instance_runs: Counter[str] = Counter()
        self._last_cleanup = 0.0
        # Instances created or changed (to store), and dropped (to forget), in this pass.
        self._changed: set[str] = set()
        self._dropped: set[str] = set()
        self._hubs_of: dict[str, set[str]] = {}
        self._rerun_all = False
        # For the admin's dashboard (engine/stats.py); the worker names its snapshot.
        self.stats = InvalidatorStats()
        self.stats_source = worker_source(f"{origin.process_name()}:{id(self):x}")

    # One pass ----------------------------------------------------------------------------

    def step(self, timeout: float) -> bool:
        wait = 0 if self._rerun_all else min(timeout, self.stats.seconds_to_tick())
        records, requests = self.backend.next_work(self.version, wait)
        ticked = self._stats_tick()
        if not records and not requests and not self._rerun_all and not ticked:
            return False
        batch = Batch(records[-1].version if records else self.version)
        batch.revoked = frozenset().union(*(record.revoked for record in records))
        affected: set[str] = set(self.instances) if self._rerun_all else set()
        if self._rerun_all:  # the backend lost its state, and the records with it
            batch.revoked = frozenset({ANYONE})
        self._rerun_all = False
        # Records pruned before we read them come back as one record of every table: it matches
        # every instance (backends/changelog.py).
        matched = [
            self._unseen(record, ids)
            for record, ids in zip(records, self.backend.index.match_each(records), strict=True)
        ]
        affected |= set().union(ticked, *matched)
        self.stats.passed(records, matched)
        ensures = []
        for request in requests:
            if isinstance(request, Ensure):
                ensures.append(request)
            elif isinstance(request, Release):
                self._release(request.hub_id, request.instance_id)
            elif isinstance(request, DropHub):
                for instance in list(self.instances.values()):
                    self._release(request.hub_id, instance.id)
        runs: dict[str, QueryRun] = {}
        # Hubs per instance before the runs: those of an instance dropped in the pass (it began to
        # read the caller's identity) must still be told to resubscribe.
        self._hubs_of = {i: set(instance.hubs) for i, instance in self.instances.items()}
        if hooks.before_snapshot is not None:
            hooks.before_snapshot(requests)
        rerun = sorted(affected & self.instances.keys())
        if rerun or ensures:
            with read_snapshot() as seen:
                for instance_id_ in rerun:
                    self._rerun(self.instances[instance_id_], batch, runs, seen)
                for ensure in ensures:
                    self._ensure(ensure, batch, runs, seen)
        if hooks.before_register is not None:
            hooks.before_register(batch)
        self.backend.index.set_all(
            {
                instance_id_: run.read_set
                for instance_id_, run in runs.items()
                if instance_id_ in self.instances
            }
        )
        self._persist()
        for instance_id_ in [u.instance_id for u in batch.updates] + batch.resubscribe:
            instance = self.instances.get(instance_id_)
            hubs = instance.hubs if instance is not None else self._hubs_of.get(instance_id_, ())
            batch.audience[instance_id_] = frozenset(hubs)
        self.version = batch.version
        self.backend.deliver(batch)
        self.backend.save_progress(self.version)
        return True

    def _unseen(self, record: ChangeRecord, instance_ids: set[str]) -> set[str]:
        """Of the instances ``record`` matches, those whose last run did not see it. (A pruned
        stretch of the log, a record of every table, stands for records a snapshot that saw its
        version may not have seen on Postgres: it re-runs them all.)"""
        if not instance_ids or ANY_TABLE in record.opaque_tables:
            return instance_ids
        unseen = set()
        for instance_id_ in instance_ids:
            instance = self.instances.get(instance_id_)
            if instance is None or instance.seen is None or record.version not in instance.seen:
                unseen.add(instance_id_)
        return unseen

    def _stats_tick(self) -> set[str]:
        """About once a second, while a dashboard watches: publish this worker's statistics, and
        return the instances that show them (they read ``STATS_TABLE``), to re-run in this pass."""
        if not self.stats.tick_due() or self.backend.index.watched_columns(STATS_TABLE) is None:
            return set()
        try:
            snapshot = self.stats.snapshot(
                head=self.backend.log.head(), processed=self.version, live=len(self.instances)
            )
            snapshot.update(
                kind="worker", role="leader", source=self.stats_source, process=origin.process_name()
            )
            self.backend.publish_stats(self.stats_source, orjson.dumps(snapshot))
        except Exception:  # the dashboard shows older numbers; the queries go on
            logger.exception("Could not publish the invalidator's statistics")
        return self.backend.index.match(ChangeRecord(self.version, opaque_tables=frozenset({STATS_TABLE})))

    def tick(self) -> None:
        """Deliver an empty batch at the current version."""
        self.backend.deliver(Batch(self.version))

    def rebuild(self) -> None:
        """Store every instance again and re-run them all in the next pass."""
        self._changed |= set(self.instances)
        self._persist()
        self._rerun_all = True

    def restore(self, stored: list[dict[str, Any]]) -> None:
        """Take over the live instances a previous worker stored (after a failover)."""
        for data in stored:
            try:
                function = get_function(data["name"], "query")
                args = function.validate_args(data["args"])
            except ProtocolError:
                self.backend.store_instances([], {data["id"]})
                self.backend.index.remove(data["id"])
                continue
            self.instances[data["id"]] = Instance(
                id=data["id"],
                function=function,
                args=args,
                canonical_args=data["args"],
                user_id=data["user_id"],
                identity_bound=data["identity_bound"],
                payload=data["payload"],
                is_error=data["is_error"],
                hubs=data["hubs"],
            )

    def reap_dead_hubs(self) -> None:
        """Release what hubs that stopped heartbeating held (a server process died, or stalled:
        then it is told, and subscribes everything again)."""
        live = self.backend.live_hubs()
        if live is None:
            return
        released: set[str] = set()
        for instance in list(self.instances.values()):
            for hub_id in instance.hubs - live:
                self._release(hub_id, instance.id)
                released.add(hub_id)
        self._persist()
        if released:
            self.backend.deliver(Batch(self.version, released_hubs=frozenset(released)))

    def _persist(self) -> None:
        changed = [self.instances[i] for i in self._changed - self._dropped if i in self.instances]
        if changed or self._dropped:
            self.backend.store_instances(changed, self._dropped)
        self._changed.clear()
        self._dropped.clear()

    def _run(
        self, function: Function, args: dict[str, Any], user_id: object | None
    ) -> tuple[QueryRun, float]:
        self.runs[function.name] += 1
        began = time.perf_counter()
        run = run_query(function, args, Context(_user_loader(user_id), kind="query"))
        return run, time.perf_counter() - began

    def _rerun(self, instance: Instance, batch: Batch, runs: dict[str, QueryRun], seen: Seen | None) -> None:
        self.instance_runs[instance.id] += 1
        run, seconds = self._run(instance.function, instance.args, instance.user_id)
        instance.seen = seen
        if run.read_identity and not instance.identity_bound:
            # A shared instance now reads the caller: each subscriber re-subscribes as itself.
            self._drop(instance.id)
            batch.resubscribe.append(instance.id)
            return
        runs[instance.id] = run
        changed = run.payload != instance.payload or run.is_error != instance.is_error
        if changed:
            instance.payload, instance.is_error = run.payload, run.is_error
            self._changed.add(instance.id)
            batch.updates.append(InstanceUpdate(instance.id, run.payload, run.is_error))
        self.stats.ran(instance.id, instance.function.name, instance.canonical_args, run, seconds, changed)

    def _ensure(self, request: Ensure, batch: Batch, runs: dict[str, QueryRun], seen: Seen | None) -> None:
        try:
            function = get_function(request.name, "query")
            args, canonical = function.validate(request.args)
        except ProtocolError as exc:
            batch.replies.append(
                Subscribed(request.request_id, request.hub_id, "", encoding.dumps(exc.as_dict()), True, False)
            )
            return
        base = instance_base(function.name, canonical)
        for candidate in candidate_ids(base, request.user_id):
            instance = self.instances.get(candidate)
            if instance is not None:
                self._attach(instance, request, batch)
                return
        run, seconds = self._run(function, args, request.user_id)
        bound = run.read_identity
        instance = Instance(
            id=instance_id(base, identity_of(request.user_id) if bound else SHARED),
            function=function,
            args=args,
            canonical_args=request.args,
            user_id=request.user_id if bound else None,
            identity_bound=bound,
            payload=run.payload,
            is_error=run.is_error,
            hubs=set(),
            seen=seen,
        )
        self.instances[instance.id] = instance
        self.instance_runs[instance.id] += 1
        self.stats.ran(instance.id, function.name, request.args, run, seconds, True)
        runs[instance.id] = run
        self._attach(instance, request, batch)

    def _attach(self, instance: Instance, request: Ensure, batch: Batch) -> None:
        if request.hub_id not in instance.hubs:
            instance.hubs.add(request.hub_id)
            self._changed.add(instance.id)
        batch.replies.append(
            Subscribed(
                request.request_id,
                request.hub_id,
                instance.id,
                instance.payload,
                instance.is_error,
                instance.identity_bound,
            )
        )

    def _release(self, hub_id: str, instance_id_: str) -> None:
        instance = self.instances.get(instance_id_)
        if instance is None:
            return
        if hub_id in instance.hubs:
            instance.hubs.discard(hub_id)
            self._changed.add(instance_id_)
        if not instance.hubs:
            self._drop(instance_id_)

    def _drop(self, instance_id_: str) -> None:
        self.instances.pop(instance_id_, None)
        self.stats.forget(instance_id_)
        self.backend.index.remove(instance_id_)
        self._dropped.add(instance_id_)

    def cleanup_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_cleanup < _CLEANUP_EVERY_SECONDS:
            return
        self._last_cleanup = now
        try:
            MutationRecord.delete_expired(reactive_settings.MUTATION_RESULT_TTL_HOURS)
        except Exception as exc:
            server_error("reactive.cleanup", exc)


def _user_loader(user_id: object | None) -> Callable[[], Any]:
    # As Django loads a signed-in user: an inactive one (with the default backend) is nobody.
    if user_id is None:
        return lambda: None
    return lambda: active_user(user_id)
