"""Shared fixtures: real servers and a harness that runs each behaviour test two ways.

- ``inprocess``: a uvicorn server in a thread of the test process. Writes run directly in the
  test process (like a shell or a view in the server's process would).
- ``socket``: a Daphne server in a subprocess with its own database. Writes run in the server's
  process through the ``testapp.write`` action.

Both are reached over a real WebSocket with ``reactive.client``: tests get the instrumented
client (``reactive.client.testing``), which also logs frames and sends raw ones.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from reactive.client import ReactiveClient
from reactive.client.testing import InstrumentedClient

ROOT = Path(__file__).resolve().parent.parent
# Above REACTIVE's MAX_MESSAGE_BYTES, so oversized frames reach the app and get `too_large`.
ASGI_APP = "project.asgi:application"
DAPHNE_LIMITS = ["--websocket-max-message-size", "4194304", "--websocket-max-frame-size", "4194304"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Server:
    port: int
    log: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/reactive/ws/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_env(db_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a server subprocess: its own database (and Redis database)."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        SQLITE_PATH=str(db_path),
        PYTHONPATH=str(ROOT),
        REACTIVE_LOG_LEVEL="WARNING",
    )
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


def start_daphne(db_path: Path, log_path: Path, migrate: bool = True, port: int | None = None) -> Server:
    env = server_env(db_path)
    if migrate:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    port = port or free_port()
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_LIMITS, ASGI_APP],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process=process)
    return Server(port, log_path, process)


def stop(server: Server) -> None:
    if server.process is not None and server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def socket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("socket-server")
    server = start_daphne(directory / "db.sqlite3", directory / "daphne.log")
    yield server
    stop(server)


@pytest.fixture(scope="session")
def inprocess_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Server]:
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
    yield Server(port)
    server.should_exit = True
    thread.join(timeout=10)


def _in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    from django.db import close_old_connections

    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


class Harness:
    """One way of running a behaviour test: where the server is and where writes happen."""

    def __init__(self, mode: str, server: Server) -> None:
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
            from reactive.execution import call_query

            return await self.call(call_query, name, args or {}, None)
        return await (await self.control()).action("testapp.fresh", {"name": name, "args": args or {}})

    async def stats(self) -> dict[str, Any]:
        if self.mode == "inprocess":
            from reactive.backends import get_backend

            invalidator = get_backend().invalidator
            return {"runs": dict(invalidator.runs), "instance_runs": dict(invalidator.instance_runs)}
        return await (await self.control()).action("testapp.stats")

    async def instance_runs(self, name: str, args: dict[str, Any]) -> int:
        """How many times the shared instance of a query ran."""
        from reactive.instances import SHARED, instance_base, instance_id
        from reactive.registry import get_function

        validated = get_function(name, "query").validate_args(args)
        key = instance_id(instance_base(name, validated), SHARED)
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # In-process servers share the test database; pytest-django sets it up only for marked
    # tests (requesting transactional_db dynamically leaves it empty).
    for item in items:
        if {"harness", "harness_server"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture(params=["inprocess", "socket"])
def harness_server(request: pytest.FixtureRequest) -> tuple[str, Server]:
    """Sync half of the harness: database setup must not run inside the event loop."""
    if request.param == "inprocess":
        server = request.getfixturevalue("inprocess_server")
    else:
        server = request.getfixturevalue("socket_server")
    return request.param, server


@pytest_asyncio.fixture
async def harness(harness_server: tuple[str, Server]) -> AsyncIterator[Harness]:
    harness = Harness(*harness_server)
    yield harness
    await harness.close()
