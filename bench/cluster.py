"""The Redis backend deployed for the benchmark, and the Redis keys its scenarios read.

``harness.cluster`` on ``bench.cluster_settings``: a private ``redis-server`` and Postgres,
Daphne servers A and B and one ``manage.py reactive_worker``, all on loopback
(``bench.systems`` runs it as the ``reactive-redis`` system).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench import Broken
from harness.cluster import Cluster
from harness.ports import ServerExited
from harness.processes import DAPHNE_LIMITS, Process

SETTINGS = "bench.cluster_settings"
# Redis keys of the backend (reactive/backends/redis/keys.py).
PROGRESS_KEY = "reactive:progress"
# The change log is a table of the database (reactive/capture/logtable.py): its head, the
# version just past the latest record a reader can read, and how many records it holds.
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
LOG_HEAD_SQL = f"SELECT COALESCE(max(xid) + 1, 0), count(*) FROM reactive_changelog WHERE xid < {_HORIZON}"
# Records at or past a version (the worker's progress) that a reader could read now, and all.
BACKLOG_SQL = (
    f"SELECT count(*) FILTER (WHERE xid >= %s AND xid < {_HORIZON}), count(*) FROM reactive_changelog"
)


def database(url: str):
    """An autocommit psycopg connection to the cluster's Postgres database (``url``)."""
    import psycopg

    return psycopg.connect(url, autocommit=True)


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
            # No access log (a line per request costs the server CPU), as the embedded servers.
            a, b = cluster.start_servers("A", "B", timeout=60, options=(*DAPHNE_LIMITS, "-v", "0"))
        except (ServerExited, TimeoutError) as exc:
            raise Broken(str(exc)) from None
        worker = cluster.start_worker("worker")
        try:
            asyncio.run(cluster.wait_for_leader([worker], timeout=60))
        except (RuntimeError, TimeoutError) as exc:
            raise Broken(f"the worker did not lead: {str(exc)[:2000]}") from None
        return cls(cluster, a, b, worker)

    def versions(self) -> dict[str, Any]:
        """Versions of channels_redis, redis-py, redis-server and Postgres, for the report."""
        import channels_redis
        import psycopg
        import redis

        out: dict[str, Any] = {"channels_redis": channels_redis.__version__, "redis_py": redis.__version__}
        with contextlib.suppress(Exception), self.cluster.redis(socket_timeout=10) as client:
            out["redis_server"] = client.info("server")["redis_version"]
        with contextlib.suppress(Exception), psycopg.connect(self.cluster.database_url) as connection:
            out["postgres"] = connection.execute("SHOW server_version").fetchone()[0]
        return out
