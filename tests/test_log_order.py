"""Postgres: the change log is read in commit order, each committed record exactly once.

Ids (and transaction ids) are allocated when a transaction starts writing, not when it commits:
with transactions overlapping, a record with a later id can commit first, so a reader that goes
on from the last id it read skips whatever commits late. The log is read below the oldest
transaction still in progress instead (``capture/logtable.py``). Many writer threads run long
and short transactions, interleaved, sleeping for random times inside them after their write,
and single writes in autocommit mode; a reader tails the log all along. Nothing committed may be
skipped, nothing read twice, and nothing read that did not commit.

Runs in the Redis + Postgres pass (on SQLite, one writer at a time makes id order commit order).
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.db import connection, transaction

from project.tasks.models import Task
from reactive.backends.changelog import DatabaseLog
from reactive.capture import commits

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

WRITERS = 8
TRANSACTIONS_PER_WRITER = 25
SEED = 20261201


def test_overlapping_transactions_are_read_once_each_in_commit_order() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the ordering hazard is Postgres's: run in the Redis + Postgres pass")
    log = DatabaseLog()
    start = log.head()
    committed: dict[str, int] = {}  # task text -> the version its commit returned
    commit_order: list[str] = []  # as the commits returned
    rolled_back: set[str] = set()
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()
    failures: list[BaseException] = []

    def writer(number: int) -> None:
        chance = random.Random(SEED + number)
        try:
            for index in range(TRANSACTIONS_PER_WRITER):
                text = f"w{number}-{index}"
                long = chance.random() < 0.3
                abort = chance.random() < 0.1
                if chance.random() < 0.3:
                    # In autocommit mode: the capture opens the transaction of write and record.
                    with commits.commit_versions() as versions:
                        Task.objects.create(text=text)
                    with lock:
                        committed[text] = versions.last
                        commit_order.append(text)
                    continue
                try:
                    with commits.commit_versions() as versions, transaction.atomic():
                        Task.objects.create(text=text)
                        # The transaction has its id now; it commits after others that began later.
                        time.sleep(chance.uniform(0.02, 0.12) if long else chance.uniform(0, 0.005))
                        if abort:
                            raise _RollBack
                except _RollBack:
                    with lock:
                        rolled_back.add(text)
                    continue
                with lock:
                    committed[text] = versions.last
                    commit_order.append(text)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()  # the test database is dropped at the end

    read: list[tuple[int, str]] = []

    def reader() -> None:
        position = start
        try:
            while True:
                finished = not writing.is_set()  # read once more after the writers are done
                # A small limit: the reader also goes on from the middle of a horizon's records.
                records = log.read_after(position, 7)
                for record in records:
                    (row,) = record.rows
                    read.append((record.version, row.new["text"][1:]))  # "s" + the text
                if records:
                    position = records[-1].version
                elif finished:
                    return
                else:
                    time.sleep(0.002)  # between polls of this test's own reader, not a wait
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()  # the test database is dropped at the end

    tailing = threading.Thread(target=reader)
    tailing.start()
    writers = [threading.Thread(target=writer, args=(number,)) for number in range(WRITERS)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    writing.clear()
    tailing.join(timeout=60)
    assert not failures, failures
    assert not tailing.is_alive() and not any(thread.is_alive() for thread in writers)

    versions = [version for version, _ in read]
    texts = [text for _, text in read]
    assert len(committed) + len(rolled_back) == WRITERS * TRANSACTIONS_PER_WRITER
    assert len(set(texts)) == len(texts), "a record was read twice"
    skipped, invented = sorted(set(committed) - set(texts)), sorted(set(texts) - set(committed))
    assert not skipped and not invented, f"skipped: {skipped}, never committed: {invented}"
    assert versions == sorted(versions), "records were read out of version order"
    # Each record is read with the version its commit returned (what read-your-writes waits for).
    assert dict(zip(texts, versions, strict=True)) == committed
    # The workload did commit records out of version order (else this test would prove nothing).
    assert commit_order != sorted(commit_order, key=committed.__getitem__)


class _RollBack(Exception):
    pass
