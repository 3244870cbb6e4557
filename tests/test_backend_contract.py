"""What every backend must do, pinned once and run against each (after Channels' test_layers.py).

The embedded backend runs in both passes; the Redis backend where ``REDIS_URL`` is set (the
Redis + Postgres pass), on a Redis database of its own so that it never meets the test servers'.
Both read the change log of the test database (SQLite in the embedded pass, Postgres in the
Redis pass), which every committed transaction appends to.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.test import override_settings

from harness.processes import ROOT, django_env, manage_command
from project.chat.models import Channel, Message
from reactive.backends.base import Backend, Batch, DropHub, Ensure, InstanceUpdate, Release
from reactive.backends.embedded import EmbeddedBackend
from reactive.models import ChangeLogEntry
from reactive.records import ANY_TABLE, ReadSet, RowChange
from tests.conftest import private_redis_database

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def redis_url() -> str:
    """One Redis database of this module's own, emptied before each test."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("the Redis backend's contract runs in the Redis pass (REDIS_URL)")
    return private_redis_database(url)


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "embedded":
        made: Backend = EmbeddedBackend()
    else:
        import redis

        from reactive.backends.redis import RedisBackend

        url = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        made = RedisBackend(url)
    yield made
    made.close()


def channel_read_set(channel: int) -> ReadSet:
    read_set = ReadSet()
    read_set.add("chat_message", frozenset({("channel_id", channel)}))
    return read_set


def append(backend: Backend, *rows: RowChange, opaque: frozenset[str] = frozenset()) -> int:
    return backend.log.append(tuple(rows), opaque)


def matched(backend: Backend, version: int) -> set[str]:
    """The instances the record appended at ``version``, as read back from the log, matches."""
    (record,) = [r for r in backend.log.read_after(version - 1, 10) if r.version == version]
    return backend.index.match_all([record])


# The change log -------------------------------------------------------------------------------


def test_versions_grow_and_head_is_the_last_appended(backend: Backend) -> None:
    first = append(backend, RowChange("chat_message", None, {"id": 1}))
    second = append(backend, RowChange("chat_message", None, {"id": 2}))
    assert second > first
    assert backend.log.head() == second


def test_read_after_returns_later_records_oldest_first_with_their_versions(backend: Backend) -> None:
    start = backend.log.head()
    versions = [append(backend, RowChange("chat_message", None, {"id": i})) for i in range(5)]
    records = backend.log.read_after(start, 100)
    assert [r.version for r in records] == versions
    assert [r.version for r in backend.log.read_after(versions[1], 2)] == versions[2:4]
    assert backend.log.read_after(versions[-1], 100) == []


def test_a_transaction_appends_one_record_when_it_commits_and_none_when_it_rolls_back(
    backend: Backend,
) -> None:
    start = backend.log.head()
    channel = Channel.objects.create(name="one record")
    with transaction.atomic():
        Message.objects.create(channel=channel, body="a")
        Message.objects.create(channel=channel, body="b")
    with pytest.raises(RuntimeError), transaction.atomic():
        Message.objects.create(channel=channel, body="rolled back")
        raise RuntimeError
    records = backend.log.read_after(start, 100)
    assert [[row.table for row in r.rows] for r in records] == [["chat_channel"], ["chat_message"] * 2]
    assert [row.new["body"] for row in records[1].rows] == ["sa", "sb"]  # values as typed text
    assert backend.log.head() == records[-1].version


def test_records_keep_their_tables_and_opaque_tables(backend: Backend) -> None:
    version = append(
        backend,
        RowChange("chat_message", {"id": 1}, None),
        RowChange("chat_channel", None, {"id": 2}),
        opaque=frozenset({"tasks_task"}),
    )
    (record,) = backend.log.read_after(version - 1, 1)
    assert [row.table for row in record.rows] == ["chat_message", "chat_channel"]
    assert record.rows[0].new is None and record.rows[1].old is None
    assert record.opaque_tables == {"tasks_task"}


# The read-set index ---------------------------------------------------------------------------


def test_a_row_matches_by_its_new_values_and_by_its_old_values(backend: Backend) -> None:
    backend.index.set("rq.a", channel_read_set(5))
    inserted = append(backend, RowChange("chat_message", None, {"id": 1, "channel_id": 5}))
    moved_away = append(
        backend, RowChange("chat_message", {"id": 1, "channel_id": 5}, {"id": 1, "channel_id": 6})
    )
    elsewhere = append(backend, RowChange("chat_message", None, {"id": 2, "channel_id": 6}))
    assert matched(backend, inserted) == {"rq.a"}
    assert matched(backend, moved_away) == {"rq.a"}
    assert matched(backend, elsewhere) == set()


def test_an_unknown_column_widens_the_match(backend: Backend) -> None:
    backend.index.set("rq.a", channel_read_set(5))
    version = append(backend, RowChange("chat_message", None, {"id": 1}))
    assert matched(backend, version) == {"rq.a"}


def test_values_of_different_types_never_meet(backend: Backend) -> None:
    backend.index.set("rq.a", channel_read_set(5))
    version = append(backend, RowChange("chat_message", None, {"id": 1, "channel_id": "5"}))
    assert matched(backend, version) == set()


def test_a_table_written_opaquely_matches_every_reader_of_it(backend: Backend) -> None:
    backend.index.set("rq.a", channel_read_set(5))
    whole = ReadSet()
    whole.add_table("tasks_task")
    backend.index.set("rq.b", whole)
    version = append(backend, opaque=frozenset({"chat_message"}))
    assert matched(backend, version) == {"rq.a"}
    everything = append(backend, opaque=frozenset({ANY_TABLE}))
    assert matched(backend, everything) == {"rq.a", "rq.b"}


def test_an_update_affects_a_reader_only_through_the_columns_it_depends_on(backend: Backend) -> None:
    count = ReadSet()
    count.add("chat_message", frozenset({("channel_id", 5)}), columns=("channel_id",))  # COUNT(*)
    backend.index.set("rq.count", count)
    bodies = ReadSet()
    bodies.add("chat_message", frozenset({("channel_id", 5)}), columns=("channel_id", "body"))
    backend.index.set("rq.bodies", bodies)
    backend.index.set("rq.all", channel_read_set(5))  # no columns: every column

    def update(columns: frozenset[str] | None) -> int:
        image = {"id": 1, "channel_id": 5}
        return append(backend, RowChange("chat_message", image, image, columns))

    assert matched(backend, update(frozenset({"edited"}))) == {"rq.all"}
    assert matched(backend, update(frozenset({"body", "edited"}))) == {"rq.bodies", "rq.all"}
    assert matched(backend, update(frozenset())) == {"rq.all"}  # no column changed
    # Unknown columns (a record of the earlier format, too), an insert, a delete: every reader.
    assert matched(backend, update(None)) == {"rq.count", "rq.bodies", "rq.all"}
    inserted = append(backend, RowChange("chat_message", None, {"id": 2, "channel_id": 5}))
    assert matched(backend, inserted) == {"rq.count", "rq.bodies", "rq.all"}
    # A row moving out changes the filtered column: the count re-runs.
    moved = append(
        backend,
        RowChange(
            "chat_message", {"id": 1, "channel_id": 5}, {"id": 1, "channel_id": 6}, frozenset({"channel_id"})
        ),
    )
    assert matched(backend, moved) == {"rq.count", "rq.bodies", "rq.all"}
    # Re-registered without columns, the instance depends on every column again.
    backend.index.set("rq.count", channel_read_set(5))
    assert matched(backend, update(frozenset({"edited"}))) == {"rq.count", "rq.all"}


def test_watched_columns_name_what_live_read_sets_constrain(backend: Backend) -> None:
    # Asked first while nothing watches the tables: a backend may cache the answer (a stale one
    # only makes other processes' writers widen), but what its own index registers counts at once.
    assert backend.index.watched_columns("chat_message") is None
    assert backend.index.watched_columns("tasks_task") is None
    backend.index.set("rq.a", channel_read_set(5))
    assert backend.index.watched_columns("chat_message") == {"channel_id"}
    edited = ReadSet()
    edited.add("chat_message", frozenset({("edited", True)}))
    backend.index.set_all({"rq.b": edited})
    assert backend.index.watched_columns("chat_message") == {"channel_id", "edited"}
    assert backend.index.watched_columns("tasks_task") is None


def test_set_replaces_and_remove_forgets_an_instance(backend: Backend) -> None:
    backend.index.set("rq.a", channel_read_set(5))
    backend.index.set("rq.a", channel_read_set(6))
    on_five = append(backend, RowChange("chat_message", None, {"id": 1, "channel_id": 5}))
    on_six = append(backend, RowChange("chat_message", None, {"id": 2, "channel_id": 6}))
    assert matched(backend, on_five) == set()
    assert matched(backend, on_six) == {"rq.a"}
    backend.index.remove("rq.a")
    assert matched(backend, on_six) == set()
    assert "rq.a" not in backend.index.instance_ids()


# Requests and batches -------------------------------------------------------------------------


def test_requests_reach_the_invalidator_in_order_with_the_records_after_its_version(
    backend: Backend,
) -> None:
    after = backend.load_progress()
    version = append(backend, RowChange("chat_message", None, {"id": 1}))
    sent = [
        Ensure(1, "hub.a", "chat.list_messages", {"channel": 5}, None),
        Release("hub.a", "rq.a"),
        DropHub("hub.a"),
    ]
    for request in sent:
        backend.submit(request)
    # A backend may hand them over in more than one call (Redis reads requests ahead in a thread).
    records, requests = [], []
    deadline = time.monotonic() + 10
    while len(requests) < len(sent) or not records:
        assert time.monotonic() < deadline, (records, requests)
        more_records, more_requests = backend.next_work(records[-1].version if records else after, 1.0)
        records += more_records
        requests += more_requests
    assert [r.version for r in records] == [version]
    assert requests == sent
    assert backend.next_work(version, timeout=0.05) == ([], [])


def test_a_commit_in_another_process_ends_the_invalidators_wait(backend: Backend) -> None:
    # The wait is long (60 s): only the database's signal (SQLite's data_version, Postgres'
    # NOTIFY) can end it in time; this process's own commits are not involved.
    after = backend.log.head()
    backend.next_work(after, timeout=0)  # the tail starts watching the database
    found: list = []

    def wait_for_records() -> None:
        while not found:  # a wake-up may come without records (the watcher's first look)
            found.extend(backend.next_work(after, timeout=60)[0])

    waiting = threading.Thread(target=wait_for_records, daemon=True)
    waiting.start()
    code = "from project.chat.models import Channel; Channel.objects.create(name='from a shell')"
    shell = run_manage("shell", "-c", code)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    waiting.join(timeout=30)
    assert not waiting.is_alive(), "the invalidator slept through another process's commit"
    assert [row.new["name"] for record in found for row in record.rows] == ["sfrom a shell"]


def run_manage(*args: str) -> subprocess.CompletedProcess:
    """A management command in another process, on the test database (and no Redis: writers
    need none, the record goes to the database)."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "postgresql":
        base = os.environ["DATABASE_URL"].rpartition("/")[0]
        env = django_env("tests.settings", DATABASE_URL=f"{base}/{name}", REDIS_URL=None)
    else:
        env = django_env("tests.settings", SQLITE_PATH=name, DATABASE_URL=None, REDIS_URL=None)
    command = manage_command(*args)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_pruned_records_come_back_as_one_record_of_every_table(backend: Backend) -> None:
    behind = backend.log.head()
    versions = [append(backend, RowChange("chat_message", None, {"id": i})) for i in range(6)]
    with override_settings(REACTIVE={**settings.REACTIVE, "CHANGE_LOG_LENGTH": 2}):
        assert backend.log.prune() > 0
    assert ChangeLogEntry.objects.count() == 3  # the newest two, and the marker before them
    records = backend.log.read_after(behind, 100)
    assert [r.version for r in records] == versions[3:]
    assert records[0].rows == () and records[0].opaque_tables == {ANY_TABLE}
    assert [r.rows[0].new for r in records[1:]] == [{"id": "i4"}, {"id": "i5"}]
    # A reader that had read the dropped records reads on as before.
    assert backend.log.read_after(versions[3], 100) == records[1:]


def test_the_log_stays_bounded_while_an_invalidator_reads_it(backend: Backend) -> None:
    cap = 20
    after = backend.log.head()
    written, read = [], []
    with override_settings(REACTIVE={**settings.REACTIVE, "CHANGE_LOG_LENGTH": cap}):
        for batch in range(60):  # 300 commits, read after every 5 as a busy invalidator would
            written += [
                append(backend, RowChange("chat_message", None, {"id": batch * 5 + i})) for i in range(5)
            ]
            while not read or read[-1] < written[-1]:
                records, _ = backend.next_work(read[-1] if read else after, timeout=0)
                read += [record.version for record in records]
            # Pruned after the read: the newest `cap` records and the marker before them.
            assert ChangeLogEntry.objects.count() <= cap + 1
    assert read == written  # nothing it had not read yet was pruned


def test_pruning_gives_up_at_once_while_another_process_holds_sqlites_write_lock(backend: Backend) -> None:
    if connection.vendor != "sqlite" or not isinstance(backend, EmbeddedBackend):
        pytest.skip("SQLite's one write lock (Postgres prunes rows no writer holds)")
    import sqlite3

    append(backend, RowChange("chat_message", None, {"id": 1}))
    later = time.time() + 2 * 3600
    outcome: list[BaseException | int] = []

    def prune() -> None:
        try:
            outcome.append(backend.log.prune(now=later))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connection.close()

    writer = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a long transaction of another process, say
        pruning = threading.Thread(target=prune, daemon=True)
        pruning.start()
        # Waiting out the database's busy timeout (20 s in these settings) would stall the pass.
        pruning.join(timeout=10)
        assert not pruning.is_alive(), "pruning waited for the write lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    (failed,) = outcome
    assert isinstance(failed, OperationalError) and "locked" in str(failed)
    assert backend.log.prune(now=later) > 0  # the next prune, with the lock free, does it


def test_records_older_than_the_retention_are_pruned(backend: Backend) -> None:
    versions = [append(backend, RowChange("chat_message", None, {"id": i})) for i in range(3)]
    assert backend.log.prune(now=time.time()) == 0  # nothing is an hour old
    assert backend.log.prune(now=time.time() + 3600 + 60) > 0
    remaining = list(ChangeLogEntry.objects.order_by("id").values_list("changes", flat=True))
    assert len(remaining) == 1 and ANY_TABLE in remaining[0]
    assert [r.version for r in backend.log.read_after(versions[0] - 1, 10)] == versions[-1:]


class _Hub:
    """The side of a hub a backend talks to: it only collects what arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.hub_id = "hub.contract"
        self.loop = loop
        self.instances: dict[str, object] = {}
        self.batches: list[Batch] = []
        self.arrived = asyncio.Event()
        self.failures: list[str] = []

    def apply_batch(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.arrived.set()

    def deliver_threadsafe(self, batch: Batch) -> None:
        self.loop.call_soon_threadsafe(self.apply_batch, batch)

    def fail(self, reason: str) -> None:
        self.failures.append(reason)


async def test_a_connected_hub_gets_every_batch_delivered_after_in_order(backend: Backend) -> None:
    hub = _Hub(asyncio.get_running_loop())
    await backend.connect_hub(hub)
    try:
        await asyncio.sleep(0)
        for version in (10, 11, 12):
            batch = Batch(version, updates=[InstanceUpdate("rq.a", b'{"n":%d}' % version, False)])
            batch.audience["rq.a"] = frozenset({hub.hub_id})
            await asyncio.to_thread(backend.deliver, batch)
        async with asyncio.timeout(10):
            while len([b for b in hub.batches if b.updates]) < 3:
                hub.arrived.clear()
                await hub.arrived.wait()
        delivered = [b for b in hub.batches if b.updates]
        assert [b.version for b in delivered] == [10, 11, 12]
        assert [bytes(b.updates[0].payload) for b in delivered] == [b'{"n":10}', b'{"n":11}', b'{"n":12}']
        assert hub.failures == []
    finally:
        backend.disconnect_hub(hub)
