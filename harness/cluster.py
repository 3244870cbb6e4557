"""The Redis backend as deployed: real processes sharing one Redis and one Postgres database.

A cluster is one Redis server of its own (callers restart it and count its keys) and one
migrated Postgres database: a copy of a template migrated once in the Postgres that
``database_url`` names (the tests), or a private Postgres server of its own (the benchmark).
On them it starts Daphne servers, ``manage.py reactive_worker`` processes and one-off management
commands, each writing its output to a log of its own for the failure report.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from harness.ports import free_port
from harness.processes import (
    DAPHNE_LIMITS,
    ROOT,
    Process,
    daphne_command,
    django_env,
    manage_command,
    migrate,
    uvicorn_command,
)
from harness.services import Service, start_all, start_postgres, start_redis

# What the index and the live instances leave in Redis (reactive/backends/redis/).
INDEX_PATTERNS = (
    "reactive:conj:*",
    "reactive:scheme:*",
    "reactive:schemes:*",
    "reactive:rev:*",
    "reactive:instance:*",
)
INDEX_SETS = ("reactive:instances", "reactive:live")
LEASE = "reactive:lease"
EPOCH = "reactive:epoch"  # set by a worker when it starts to lead (RedisBackend.mark_state)


def _postgres(url: str, database: str = "postgres"):
    import psycopg

    return psycopg.connect(_with_database(url, database), autocommit=True)


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


_template_of: dict[tuple[str, str], str] = {}


def migrated_template(database_url: str, settings: str) -> str:
    """A database migrated with ``settings`` to copy (``CREATE DATABASE ... TEMPLATE``), made once
    per process; returns its name."""
    if (database_url, settings) not in _template_of:
        name = "reactive_template_" + settings.replace(".", "_")
        with _postgres(database_url) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        # Migrations write no change records worth keeping: no REDIS_URL.
        migrate(django_env(settings, DATABASE_URL=_with_database(database_url, name), REDIS_URL=None))
        _template_of[database_url, settings] = name
    return _template_of[database_url, settings]


def copy_database(database_url: str, settings: str, name: str) -> str:
    """A fresh database with the migrated schema; the template's connections are all closed."""
    template = migrated_template(database_url, settings)
    with _postgres(database_url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return _with_database(database_url, name)


class Cluster:
    """Servers, workers and commands sharing one Redis and one Postgres database."""

    def __init__(
        self,
        directory: Path,
        settings: str,
        redis_service: Service,
        database_url: str,
        postgres_service: Service | None = None,
        log_level: str = "INFO",
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.redis_service = redis_service
        self.database_url = database_url
        self.postgres_service = postgres_service  # None: the database is a copy, dropped in stop()
        self.log_level = log_level
        self.processes: list[Process] = []

    @classmethod
    def create(
        cls, directory: Path, settings: str, database_url: str | None = None, log_level: str = "INFO"
    ) -> Cluster:
        """A private Redis and a migrated database: a fresh copy in the Postgres of
        ``database_url``, or, without one, a private Postgres server of its own."""
        starters = {"redis": start_redis}
        if not database_url:
            starters["postgres"] = start_postgres
        services = start_all(directory, starters)
        try:
            if database_url:
                database = copy_database(database_url, settings, f"reactive_cluster_{uuid.uuid4().hex[:12]}")
                cluster = cls(directory, settings, services["redis"], database, log_level=log_level)
            else:
                postgres = services["postgres"]
                cluster = cls(directory, settings, services["redis"], postgres.url, postgres, log_level)
                migrate(cluster.env())
        except BaseException:
            for service in services.values():
                service.stop()
            raise
        return cluster

    @property
    def redis_url(self) -> str:
        return self.redis_service.url

    def redis(self, socket_timeout: float = 5.0) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=socket_timeout, socket_connect_timeout=5)

    def env(self) -> dict[str, str]:
        return django_env(
            self.settings,
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            SQLITE_PATH=None,
            PYTHONUNBUFFERED="1",
            REACTIVE_LOG_LEVEL=self.log_level,
        )

    def start(self, name: str, argv: list[str], port: int | None = None) -> Process:
        """Any process of the cluster (a writer, a load generator), logged to ``<name>.log``."""
        process = Process.start(name, argv, self.env(), self.directory / f"{name}.log", port)
        self.processes.append(process)
        return process

    def start_servers(
        self,
        *names: str,
        timeout: float = 30.0,
        server: str = "daphne",
        options: tuple[str, ...] | None = None,
    ) -> list[Process]:
        """ASGI servers (``"daphne"`` or ``"uvicorn"``) with ``options`` (each server's defaults
        if None), started together; returns once each one listens."""
        servers = []
        for name in names:
            port = free_port()
            if server == "uvicorn":
                argv = uvicorn_command(
                    port, *(options if options is not None else ("--log-level", "warning"))
                )
            else:
                argv = daphne_command(port, *(options if options is not None else DAPHNE_LIMITS))
            servers.append(self.start(name, argv, port))
        for process in servers:
            process.wait_until_listening(timeout)
        return servers

    def start_worker(self, name: str) -> Process:
        return self.start(name, manage_command("reactive_worker"))

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A one-off management command (another process writing to the same database)."""
        return subprocess.run(
            manage_command(*args),
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def lease_holder(self) -> str | None:
        """The token of the worker holding the lease, if one does."""
        with self.redis() as client:
            token = client.get(LEASE)
        return token.decode() if token else None

    def worker_of(self, token: str, workers: list[Process]) -> Process:
        """The worker whose startup line (``reactive worker <token[:8]> started``) names ``token``."""
        for worker in workers:
            if f"reactive worker {token[:8]} started" in worker.output():
                return worker
        raise AssertionError(f"no worker printed the token {token[:8]}")

    async def wait_for_leader(self, workers: list[Process], timeout: float = 15) -> Process:
        """Until one of ``workers`` holds the lease and leads (it has marked the backend's state,
        just before it reads the log), whatever the log level; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(worker.alive() for worker in workers):
                raise RuntimeError(f"every worker exited:\n{self.logs()}")
            token = self.lease_holder()
            with self.redis() as client:
                leads = client.exists(EPOCH)
            if token is not None and leads:
                try:
                    return self.worker_of(token, workers)
                except AssertionError:
                    pass  # its startup line is not flushed yet
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no worker leads after {timeout} s:\n{self.logs()}")

    def index_counts(self) -> dict[str, int]:
        """How many index and live-instance keys (patterns) and set members Redis holds."""
        counts: dict[str, int] = {}
        with self.redis() as client:
            for pattern in INDEX_PATTERNS:
                counts[pattern] = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
            for key in INDEX_SETS:
                counts[key] = client.scard(key)
        return counts

    def dead(self) -> list[str]:
        """The processes that are not running any more."""
        return [process.name for process in self.processes if not process.alive()]

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.tail(lines)}" for p in self.processes)

    def stop(self) -> dict[str, dict[str, Any]]:
        """Stop every process, Redis and the database (a copy is dropped, a private Postgres
        stopped); returns each process's exit code and whether it had died before."""
        alive = {process.name: process.alive() for process in self.processes}
        for process in self.processes:  # all at once: each takes a while to shut down
            if process.alive():
                with contextlib.suppress(OSError):
                    process.popen.terminate()
        status = {
            process.name: {"died_before_stop": not alive[process.name], "exit": process.stop()}
            for process in self.processes
        }
        try:
            self.redis_service.stop()
        finally:
            if self.postgres_service is not None:
                self.postgres_service.stop()
            else:
                self._drop_database()
        return status

    def _drop_database(self) -> None:
        try:
            name = self.database_url.rpartition("/")[2]
            with _postgres(self.database_url) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:  # a database left behind is harmless; the run's outcome matters more
            pass
