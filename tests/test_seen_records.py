"""A change record committed before a query's run but read after it re-runs only what did not see it.

The invalidator reads the log, then runs queries in a snapshot of its own. A commit can land in
between, or (Postgres) wait unread behind an older transaction still in progress while a run's
snapshot already sees it. Its record then arrives after a run that has its changes: that run must
not be repeated for it, and every run that did not see it must be (invariant 1 of
ARCHITECTURE.md). The invalidator is driven pass by pass, on the configured database: SQLite in
the embedded pass, Postgres in the Redis + Postgres pass.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import close_old_connections, connection, transaction

from reactive.backends.base import Ensure
from reactive.backends.embedded import EmbeddedBackend
from reactive.engine.execution import call_query
from reactive.engine.invalidator import Invalidator, hooks
from reactive.functions import encoding
from tests import writes
from tests.conftest import commit_in_another_thread

pytestmark = pytest.mark.django_db(transaction=True)


def _subscribe(
    backend: EmbeddedBackend, invalidator: Invalidator, request_id: int, name: str, args: dict
) -> str:
    backend.submit(Ensure(request_id, "hub.seen", name, args, None))
    before = set(invalidator.instances)
    assert invalidator.step(timeout=0)
    (instance_id,) = set(invalidator.instances) - before
    return instance_id


def _read_up_to_head(backend: EmbeddedBackend, invalidator: Invalidator) -> None:
    head = backend.log.head()
    deadline = time.monotonic() + 10
    while invalidator.version < head:
        assert time.monotonic() < deadline, f"the invalidator is at {invalidator.version}, the log at {head}"
        invalidator.step(timeout=0.05)


def _value(invalidator: Invalidator, instance_id: str):
    return encoding.loads(invalidator.instances[instance_id].payload)


def test_a_record_committed_between_the_log_read_and_the_snapshot_reruns_only_the_older_runs():
    (channel,) = writes.make_channels(count=1, messages=0)
    backend = EmbeddedBackend()
    try:
        invalidator = Invalidator(backend, backend.log.head())
        count = _subscribe(backend, invalidator, 1, "chat.message_count", {"channel": channel})

        def commit_a_message(requests: list) -> None:
            # In the pass that first runs the list: after its records were read, before its runs.
            if any(
                isinstance(request, Ensure) and request.name == "chat.list_messages" for request in requests
            ):
                commit_in_another_thread(writes.create, channel=channel)

        hooks.before_snapshot = commit_a_message
        try:
            messages = _subscribe(backend, invalidator, 2, "chat.list_messages", {"channel": channel})
        finally:
            hooks.before_snapshot = None
        assert len(_value(invalidator, messages)) == 1  # its first run saw the message
        assert _value(invalidator, count) == 0  # this one ran before it

        _read_up_to_head(backend, invalidator)

        assert invalidator.instance_runs[messages] == 1
        assert invalidator.instance_runs[count] == 2
        assert _value(invalidator, count) == 1
        assert _value(invalidator, messages) == call_query("chat.list_messages", {"channel": channel}, None)
    finally:
        backend.close()


@pytest.mark.redis_only
def test_a_record_waiting_behind_an_older_transaction_reruns_only_the_runs_that_did_not_see_it():
    if connection.vendor != "postgresql":
        pytest.skip("records wait behind an open transaction on Postgres only")
    seen_by_run, unseen_by_run = writes.make_channels(count=2, messages=0)
    backend = EmbeddedBackend()
    older_wrote = threading.Event()
    finish_older = threading.Event()
    failures: list[BaseException] = []

    def older_transaction() -> None:
        # Writes first (so it has the oldest transaction id), commits last.
        try:
            with transaction.atomic():
                writes.create(channel=unseen_by_run)
                older_wrote.set()
                assert finish_older.wait(30)
        except BaseException as exc:
            failures.append(exc)
            older_wrote.set()
        finally:
            close_old_connections()

    older = threading.Thread(target=older_transaction)
    try:
        invalidator = Invalidator(backend, backend.log.head())
        older.start()
        assert older_wrote.wait(30) and not failures
        commit_in_another_thread(writes.create, channel=seen_by_run)
        # Its record waits behind the older transaction, but a snapshot sees its message.
        seen = _subscribe(backend, invalidator, 1, "chat.list_messages", {"channel": seen_by_run})
        unseen = _subscribe(backend, invalidator, 2, "chat.list_messages", {"channel": unseen_by_run})
        assert len(_value(invalidator, seen)) == 1
        assert _value(invalidator, unseen) == []
        assert backend.log.read(invalidator.version, 10) == ([], True)  # nothing readable yet

        finish_older.set()
        older.join()
        assert not failures
        _read_up_to_head(backend, invalidator)

        assert invalidator.instance_runs[seen] == 1
        assert invalidator.instance_runs[unseen] == 2
        for instance_id, channel in ((seen, seen_by_run), (unseen, unseen_by_run)):
            fresh = call_query("chat.list_messages", {"channel": channel}, None)
            assert len(fresh) == 1
            assert _value(invalidator, instance_id) == fresh
    finally:
        finish_older.set()
        if older.is_alive():
            older.join()
        backend.close()
