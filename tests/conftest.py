"""Shared fixtures: real servers and a harness that runs each behaviour test two ways.

- ``inprocess``: a uvicorn server in a thread of the test process. Writes run directly in the
  test process (like a shell or a view in the server's process would).
- ``socket``: a Daphne server in a subprocess with its own database. Writes run in the server's
  process through the ``testapp.write`` action.

Both are reached over a real WebSocket with ``reactive.client``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.cluster import copy_database
from harness.ports import Listening, free_port, wait_for_port
from harness.processes import DAPHNE_LIMITS, Process, daphne_command, django_env
from harness.processes import migrate as migrate_database
from reactive.client import ReactiveClient
from reactive.client.testing import InstrumentedClient
from tests import clock


@dataclass
class InProcessServer(Listening):
    """A uvicorn server in a thread of the test process."""

    port: int


def server_env(db_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a server subprocess: its own database (and Redis database)."""
    env = django_env("tests.settings", SQLITE_PATH=str(db_path), REACTIVE_LOG_LEVEL="WARNING")
    if db_path not in _private_urls:
        database, redis_url = env.get("DATABASE_URL"), env.get("REDIS_URL")
        _private_urls[db_path] = {
            "DATABASE_URL": database and private_database(database, db_path.parent.name),
            "REDIS_URL": redis_url and private_redis_database(redis_url),
        }
    env.update({name: url for name, url in _private_urls[db_path].items() if url})
    env.update(extra)
    return env


# One private database (and Redis database) per server database path, made once.
_private_urls: dict[Path, dict[str, str | None]] = {}


def private_database(url: str, name: str) -> str:
    """A fresh Postgres database next to the one in ``url``, for one server subprocess."""
    import psycopg

    name = "reactive_" + "".join(c if c.isalnum() else "_" for c in name.lower())
    base, _, _ = url.rpartition("/")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


_redis_databases = iter(range(1, 16))


def private_redis_database(url: str) -> str:
    """Another Redis database number (the in-process server uses the one in ``url``)."""
    base, _, _ = url.rpartition("/")
    number = next(_redis_databases)
    import redis

    redis.Redis.from_url(f"{base}/{number}").flushdb()
    return f"{base}/{number}"


_sqlite_template: list[Path] = []  # the migrated SQLite file, made once per run


def migrated(env: dict[str, str]) -> None:
    """The database ``env`` names (``server_env``), fresh with the migrated schema, as
    ``manage.py migrate`` leaves it: a copy of one migrated once per test run (Postgres:
    ``CREATE DATABASE ... TEMPLATE``; SQLite: the file copied with SQLite's backup API)."""
    url = env.get("DATABASE_URL")
    if url:
        copy_database(os.environ["DATABASE_URL"], env["DJANGO_SETTINGS_MODULE"], url.rpartition("/")[2])
        return
    if not _sqlite_template:
        directory = Path(tempfile.mkdtemp(prefix="reactive-template-"))
        atexit.register(shutil.rmtree, directory, True)
        template = directory / "db.sqlite3"
        migrate_database({**env, "SQLITE_PATH": str(template)})
        _sqlite_template.append(template)
    with (
        contextlib.closing(sqlite3.connect(_sqlite_template[0])) as source,
        contextlib.closing(sqlite3.connect(env["SQLITE_PATH"])) as copy,
    ):
        source.backup(copy)


def start_daphne(db_path: Path, log_path: Path, migrate: bool = True, port: int | None = None) -> Process:
    """A Daphne server in a subprocess on its own database (``server_env``), once it listens."""
    env = server_env(db_path)
    if migrate:
        migrated(env)
    port = port or free_port()
    server = Process.start("daphne", daphne_command(port, *DAPHNE_LIMITS), env, log_path, port)
    try:
        server.wait_until_listening()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def socket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    directory = tmp_path_factory.mktemp("socket-server")
    server = start_daphne(directory / "db.sqlite3", directory / "daphne.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def inprocess_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[InProcessServer]:
    import uvicorn

    # The server's threads use the database between tests too.
    django_db_blocker.unblock()
    from project.asgi import application

    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for_port(port)
    yield InProcessServer(port)
    server.should_exit = True
    thread.join(timeout=10)
    from django.db import connection

    from reactive.backends import reset_backend

    reset_backend()  # its worker thread stops, and with it its use of the test database
    for worker in [running for running in threading.enumerate() if running.name == "reactive-worker"]:
        worker.join(timeout=10)
    if connection.vendor == "postgresql":
        # The sessions the server's threads opened, idle now, would hold the test database: its
        # DROP waits five seconds for them to end, then fails.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def _in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    from django.db import close_old_connections

    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


def commit_in_another_thread(func: Any, **kwargs: Any) -> None:
    """``func(**kwargs)`` on a connection of another thread, as another process would write; back
    once it returned (and committed, in autocommit mode)."""
    thread = threading.Thread(target=_in_thread, args=(func,), kwargs=kwargs)
    thread.start()
    thread.join()


class Harness:
    """One way of running a behaviour test: where the server is and where writes happen."""

    def __init__(self, mode: str, server: Listening) -> None:
        self.mode = mode
        self.server = server
        self._control: ReactiveClient | None = None

    @asynccontextmanager
    async def client(self, **options: Any) -> AsyncIterator[InstrumentedClient]:
        client = InstrumentedClient(self.server.ws_url, **options)
        await client.connect()
        try:
            yield client
        finally:
            await client.close()

    async def control(self) -> ReactiveClient:
        if self._control is None:
            self._control = ReactiveClient(self.server.ws_url)
            await self._control.connect()
        return self._control

    async def call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a function in the server's process (in-process: a worker thread of this one)."""
        return await asyncio.to_thread(_in_thread, func, *args, **kwargs)

    async def write(self, path: str, **kwargs: Any) -> Any:
        if self.mode == "inprocess":
            from tests import writes

            return await self.call(writes.run, path, **kwargs)
        return await (await self.control()).action(
            "testapp.write", {"path": path, "kwargs": kwargs}, timeout=30
        )

    async def fresh(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """A fresh run of a query: the oracle's reference."""
        if self.mode == "inprocess":
            from reactive.engine.execution import call_query

            return await self.call(call_query, name, args or {}, None)
        return await (await self.control()).action("testapp.fresh", {"name": name, "args": args or {}})

    async def clock(self, *, freeze: bool | None = None, advance: float = 0.0) -> float:
        """Freeze, move or thaw the server's rate-limit clock (tests/clock.py)."""
        if self.mode == "inprocess":
            return clock.control(freeze_it=freeze, advance_by=advance)
        control = await self.control()
        return await control.action("testapp.clock", {"freeze": freeze, "advance": advance})

    async def stats(self) -> dict[str, Any]:
        if self.mode == "inprocess":
            from reactive.backends import get_backend

            invalidator = get_backend().invalidator
            return {"runs": dict(invalidator.runs), "instance_runs": dict(invalidator.instance_runs)}
        return await (await self.control()).action("testapp.stats")

    async def instance_runs(self, name: str, args: dict[str, Any]) -> int:
        """How many times the shared instance of a query ran."""
        from reactive.engine.instances import SHARED, instance_base, instance_id
        from reactive.functions.registry import get_function

        canonical = get_function(name, "query").validate(args).canonical
        key = instance_id(instance_base(name, canonical), SHARED)
        return (await self.stats())["instance_runs"].get(key, 0)

    async def wait_for_runs(self, name: str, args: dict[str, Any], runs: int, timeout: float = 10) -> None:
        """Until the shared instance of a query has run ``runs`` times."""
        deadline = time.monotonic() + timeout
        while (current := await self.instance_runs(name, args)) < runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} {args} ran {current} times, not {runs}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._control is not None:
            await self._control.close()


# Rows that migrate's post_migrate handlers write (content types, permissions): Django's flush
# after each transactional test empties them and runs those handlers to write them again, which
# costs more than the flush itself. Kept instead: every other table is emptied as before.
KEPT_BY_FLUSH = frozenset({"django_content_type", "auth_permission"})


def _flush_keeping_migrated_rows(self: Any) -> None:
    """``TransactionTestCase._fixture_teardown`` (``manage.py flush``) but for ``KEPT_BY_FLUSH``."""
    from django.core.management.color import no_style
    from django.db import connections

    for db_name in self._databases_names(include_mirrors=False):
        connection = connections[db_name]
        tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
        emptied = [table for table in tables if table not in KEPT_BY_FLUSH]
        connection.ops.execute_sql_flush(connection.ops.sql_flush(no_style(), emptied))


def pytest_configure(config: pytest.Config) -> None:
    from django.test import TransactionTestCase

    TransactionTestCase._fixture_teardown = _flush_keeping_migrated_rows


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # In-process servers share the test database; pytest-django sets it up only for marked
    # tests (requesting transactional_db dynamically leaves it empty).
    for item in items:
        if {"harness", "harness_server"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture
def watched_channel() -> Iterator[None]:
    """A live read set on ``chat_message.channel_id`` in this process's index: updates and
    deletes of messages are recorded row by row, with the old values of ``channel_id``."""
    from reactive.backends import get_backend
    from reactive.records import ReadSet

    index = get_backend().index
    index.set("test-watched-channel", ReadSet({"chat_message": {frozenset({("channel_id", 1)})}}))
    yield
    index.remove("test-watched-channel")


@pytest.fixture(params=["inprocess", "socket"])
def harness_server(request: pytest.FixtureRequest) -> tuple[str, Listening]:
    """Sync half of the harness: database setup must not run inside the event loop."""
    if request.param == "inprocess":
        server = request.getfixturevalue("inprocess_server")
    else:
        server = request.getfixturevalue("socket_server")
    return request.param, server


@pytest_asyncio.fixture
async def harness(harness_server: tuple[str, Listening]) -> AsyncIterator[Harness]:
    harness = Harness(*harness_server)
    yield harness
    await harness.close()


@pytest_asyncio.fixture
async def frozen_clock(harness: Harness) -> AsyncIterator[None]:
    """The server's rate-limit clock stands still for the test (it moves by harness.clock())."""
    await harness.clock(freeze=True)
    try:
        yield
    finally:
        await harness.clock(freeze=False)


async def next_frame_of_any(
    clients: Sequence[InstrumentedClient], marks: Sequence[int], timeout: float
) -> None:
    """Until one of ``clients`` has received a frame after its mark (``frames_received`` taken
    before the caller looked at their values), or ``timeout`` has passed: what a check that found
    a stale value waits for before it looks again."""
    waits = [
        asyncio.ensure_future(client.next_frame(since=mark, timeout=None))
        for client, mark in zip(clients, marks, strict=True)
    ]
    try:
        await asyncio.wait(waits, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


class LoopThread:
    """An event loop in a thread, so the synchronous state machine can drive async clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="oracle-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
