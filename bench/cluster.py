"""The Redis backend deployed for the benchmark, and what the parts read from it.

``harness.cluster`` on ``bench.cluster_settings``: a private ``redis-server`` and Postgres,
Daphne servers A and B and one ``manage.py reactive_worker``, all on loopback. The parts read
the CPU time of every process, which process owns a Redis connection, and how far the worker is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from bench import Broken
from harness import procfs
from harness.cluster import Cluster
from harness.ports import ServerExited
from harness.processes import Process
from reactive.client import ReactiveClient

SETTINGS = "bench.cluster_settings"
# Redis keys of the backend (reactive/backends/redis/keys.py).
PROGRESS_KEY = "reactive:progress"
REQUESTS_KEY = "reactive:requests"
# The change log is a table of the database (reactive/capture/logtable.py): its head, the
# version just past the latest record a reader can read, and how many records it holds.
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
LOG_HEAD_SQL = f"SELECT COALESCE(max(xid) + 1, 0), count(*) FROM reactive_changelog WHERE xid < {_HORIZON}"
# Records at or past a version (the worker's progress) that a reader could read now, and all.
BACKLOG_SQL = (
    f"SELECT count(*) FILTER (WHERE xid >= %s AND xid < {_HORIZON}), count(*) FROM reactive_changelog"
)


def log_head(connection) -> tuple[int, int]:
    """The change log's head version and its record count (a psycopg connection)."""
    head, count = connection.execute(LOG_HEAD_SQL).fetchone()
    return int(head), int(count)


def commandstats(client) -> dict[str, int]:
    """Calls per command since Redis started (``INFO commandstats``)."""
    return {name: stats["calls"] for name, stats in client.info("commandstats").items()}


class Deployment:
    """Servers A and B and the worker of a started cluster, led by the worker."""

    def __init__(self, cluster: Cluster, a: Process, b: Process, worker: Process) -> None:
        self.cluster = cluster
        self.a, self.b, self.worker = a, b, worker

    @classmethod
    def start(cls, cluster: Cluster) -> Deployment:
        """Servers A and B and the worker, on ``cluster``; returns once the worker leads."""
        try:
            a, b = cluster.start_servers("A", "B", timeout=60)
        except (ServerExited, TimeoutError) as exc:
            raise Broken(str(exc)) from None
        worker = cluster.start_worker("worker")
        try:
            asyncio.run(cluster.wait_for_leader([worker], timeout=60))
        except (RuntimeError, TimeoutError) as exc:
            raise Broken(f"the worker did not lead: {str(exc)[:2000]}") from None
        return cls(cluster, a, b, worker)

    @property
    def directory(self) -> Path:
        return self.cluster.directory

    def env(self) -> dict[str, str]:
        return self.cluster.env()

    def redis(self):
        return self.cluster.redis(socket_timeout=10)

    def database(self):
        """A connection to the cluster's Postgres database (autocommit), for ``log_head``."""
        import psycopg

        return psycopg.connect(self.cluster.database_url, autocommit=True)

    def cpu_snapshot(self, extra: dict[str, int] | None = None) -> dict[str, float]:
        """CPU seconds of every serving process (and ``extra`` ones), for ``stats.cpu_shares``."""
        snapshot = {
            "server A": self.a.cpu_seconds(),
            "server B": self.b.cpu_seconds(),
            "worker": self.worker.cpu_seconds(),
            "redis": procfs.cpu_seconds(self.cluster.redis_service.process.pid),
            "postgres": procfs.tree_cpu_seconds(self.cluster.postgres_service.process.pid),
            "load-gen": procfs.self_cpu_seconds(),
            "_machine": procfs.machine_busy_seconds(),
            "_wall": time.monotonic(),
        }
        for name, pid in (extra or {}).items():
            snapshot[name] = procfs.cpu_seconds(pid)
        return snapshot

    def port_owners(self) -> dict[int, str]:
        """Which process (A, B, worker, load-gen) owns each local port: MONITOR's client names."""
        owners = {port: "load-gen" for port in procfs.local_ports(os.getpid())}
        for process in (self.a, self.b, self.worker):
            if process.alive():
                owners.update(dict.fromkeys(procfs.local_ports(process.pid), process.name))
        return owners

    async def prime(self) -> list[ReactiveClient]:
        """One socket to each server, held for the whole run, and time for the worker to see both.

        A server process's hub starts with its first socket. The worker sends a batch's updates
        only to the hubs in its live-hubs cache (``RedisBackend.live_hubs``, refreshed once a
        second), and a hub missing from it gets no message at all, so no sequence gap either: a
        subscription made on a brand-new hub can miss every update of its first second for good
        (until the next change). Measured runs start after that second, in the steady state."""
        primers = [ReactiveClient(server.ws_url, reconnect=False) for server in (self.a, self.b)]
        for primer in primers:
            await primer.connect()
        deadline = time.monotonic() + 30
        with self.redis() as client:
            while client.zcount("reactive:hubs", time.time(), "+inf") < 2:
                if time.monotonic() > deadline:
                    raise Broken("the two servers' hubs did not register in reactive:hubs")
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # > the worker's live-hubs cache (HEARTBEAT_SECONDS / 2 = 1 s)
        return primers

    async def settle(self, timeout: float = 15.0) -> None:
        """Until the worker has read every request and every record (after closing sockets)."""
        deadline = time.monotonic() + timeout
        with self.redis() as client, self.database() as database:
            while time.monotonic() < deadline:
                head, _ = log_head(database)
                version, cursor = client.hmget(PROGRESS_KEY, "version", "requests")
                last = (
                    client.xinfo_stream(REQUESTS_KEY)["last-generated-id"]
                    if client.exists(REQUESTS_KEY)
                    else None
                )
                if int(version or 0) >= head and (last is None or cursor == last):
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)

    def versions(self) -> dict[str, Any]:
        """Versions of channels_redis, redis-py, redis-server and Postgres, for the report."""
        import channels_redis
        import psycopg
        import redis

        out: dict[str, Any] = {"channels_redis": channels_redis.__version__, "redis_py": redis.__version__}
        with contextlib.suppress(Exception), self.redis() as client:
            out["redis_server"] = client.info("server")["redis_version"]
        with contextlib.suppress(Exception), psycopg.connect(self.cluster.database_url) as connection:
            out["postgres"] = connection.execute("SHOW server_version").fetchone()[0]
        return out
