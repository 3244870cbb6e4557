"""A cluster of real processes for the Redis backend's multi-process tests.

One cluster is one Redis server of its own (tests restart it and count its keys) and one
Postgres database (a copy of a migrated template, made once per test session), shared by every
process the test starts: Daphne servers, ``manage.py reactive_worker`` processes and one-off
management commands. Each process writes its output to a log of its own, for the failure report.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from reactive.client import ReactiveClient, ReactiveClientError, Subscription
from reactive.client.testing import InstrumentedClient
from tests.conftest import ASGI_APP, DAPHNE_LIMITS, ROOT, free_port, wait_for_port
from tests.services import Service, start_redis

SETTINGS = "tests.cluster_settings"
TEMPLATE_DATABASE = "reactive_cluster_template"
STOP_TIMEOUT = 10.0

# What the index and the live instances leave in Redis (reactive/lua/register.lua, backends/redis.py).
INDEX_PATTERNS = (
    "reactive:conj:*",
    "reactive:scheme:*",
    "reactive:schemes:*",
    "reactive:rev:*",
    "reactive:instance:*",
)
INDEX_SETS = ("reactive:instances", "reactive:live")
LEASE = "reactive:lease"


def _postgres(url: str, database: str = "postgres"):
    import psycopg

    base, _, _ = url.rpartition("/")
    return psycopg.connect(f"{base}/{database}", autocommit=True)


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


_template_of: dict[str, str] = {}


def migrated_template(database_url: str) -> str:
    """A migrated database to copy (``CREATE DATABASE ... TEMPLATE``), made once per session."""
    if database_url not in _template_of:
        with _postgres(database_url) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DATABASE}"')
            connection.execute(f'CREATE DATABASE "{TEMPLATE_DATABASE}"')
        url = _with_database(database_url, TEMPLATE_DATABASE)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS, "PYTHONPATH": str(ROOT), "DATABASE_URL": url}
        env.pop("REDIS_URL", None)  # migrations write no change records worth keeping
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        _template_of[database_url] = url
    return _template_of[database_url]


def copy_database(database_url: str, name: str) -> str:
    """A fresh database with the migrated schema; the template's connections are all closed."""
    migrated_template(database_url)
    with _postgres(database_url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"')
    return _with_database(database_url, name)


@dataclass
class Process:
    """One process of the cluster and its log (stdout and stderr)."""

    name: str
    popen: subprocess.Popen
    log: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/reactive/ws/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_kib(self) -> int:
        """Resident memory now (VmRSS of /proc/<pid>/status), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash, an OOM kill)."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    """Servers, workers and commands sharing one Redis and one Postgres database."""

    directory: Path
    redis_service: Service
    database_url: str
    processes: list[Process] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path) -> Cluster:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url or not database_url.startswith(("postgres://", "postgresql://")):
            raise RuntimeError(
                "The cluster tests need DATABASE_URL (Postgres): run them with make test-redis"
            )
        redis_service = start_redis(directory)
        try:
            database = copy_database(database_url, f"reactive_cluster_{uuid.uuid4().hex[:12]}")
        except BaseException:
            redis_service.stop()
            raise
        return cls(directory, redis_service, database)

    @property
    def redis_url(self) -> str:
        return self.redis_service.url

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=SETTINGS,
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            REACTIVE_LOG_LEVEL="INFO",
        )
        return env

    def _spawn(self, name: str, argv: list[str], port: int | None = None) -> Process:
        log = self.directory / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        process = Process(name, popen, log, port)
        self.processes.append(process)
        return process

    def start_servers(self, *names: str) -> list[Process]:
        """Daphne servers, started together; returns once each one listens."""
        servers = []
        for name in names:
            port = free_port()
            argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_LIMITS]
            servers.append(self._spawn(name, [*argv, ASGI_APP], port))
        for server in servers:
            try:
                wait_for_port(server.port, process=server.popen)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n{server.name}'s log:\n{server.tail()}") from None
        return servers

    def start_worker(self, name: str) -> Process:
        return self._spawn(name, [sys.executable, "manage.py", "reactive_worker"])

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A one-off management command (another process writing to the same database)."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            token = self.lease_holder()
            if token is not None:
                try:
                    leader = self.worker_of(token, workers)
                except AssertionError:
                    pass  # its startup line is not flushed yet
                else:
                    if "leads from version" in leader.output():
                        return leader
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

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.tail(lines)}" for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:  # all at once: each takes a while to shut down
            if process.alive():
                process.popen.terminate()
        for process in self.processes:
            process.stop()
        self.redis_service.stop()
        try:
            name = self.database_url.rpartition("/")[2]
            with _postgres(self.database_url) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:  # a database left behind is harmless; the test's outcome matters more
            pass


async def connect(url: str, **options: Any) -> InstrumentedClient:
    client = InstrumentedClient(url, **options)
    await client.connect()
    return client


async def fresh(control: ReactiveClient, name: str, args: dict[str, Any]) -> Any:
    """A fresh run of a query in a server process: the oracle's reference."""
    return await control.action("testapp.fresh", {"name": name, "args": args}, timeout=30)


async def wait_for_oracle(
    control: ReactiveClient, subscriptions: list[Subscription], timeout: float
) -> float:
    """Until every subscription's last value equals a fresh run of its query; the seconds it took.

    Raises AssertionError naming the subscriptions that still differ after ``timeout``.
    """
    began = time.monotonic()
    deadline = began + timeout
    while True:
        wrong = []
        for subscription in subscriptions:
            try:
                expected = await fresh(control, subscription.name, subscription.args)
            except ReactiveClientError as exc:  # the control socket was closed; it reconnects
                if exc.code != "connection_lost":
                    raise
                expected = _UNKNOWN
            if subscription.error is not None or subscription.value != expected:
                wrong.append((subscription, expected))
        if not wrong:
            return time.monotonic() - began
        if time.monotonic() > deadline:
            details = "\n".join(
                f"  {sub.client.url} {sub!r}: version {sub.version}, "
                f"has {_summary(sub.value)}, fresh run gives {_summary(expected)}"
                for sub, expected in wrong
            )
            raise AssertionError(
                f"{len(wrong)} of {len(subscriptions)} subscriptions differ from a fresh run "
                f"after {timeout} s:\n{details}"
            )
        await asyncio.sleep(0.2)


_UNKNOWN = object()


def _summary(value: Any) -> str:
    if isinstance(value, list):
        ids = [item.get("id") for item in value if isinstance(item, dict)]
        return f"{len(value)} items, last ids {ids[-3:]}"
    return repr(value)
