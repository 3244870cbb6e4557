"""The systems under test, and each one running on loopback for a scenario.

- ``reactive``: one server, the embedded backend (SQLite WAL, the change log table tailed and
  the invalidator in the server process); subscribers on our WebSocket.
- ``reactive-redis``: Daphne servers A and B, one worker, Redis and Postgres
  (``harness.cluster``); subscribers half on A, half on B; writes through A.
- ``tables``: ``reactive`` with ``REACTIVE["READ_SETS"] = "tables"`` (table-level invalidation).
- ``dcrf``: djangochannelsrestframework's model observer (``bench.dcrf``) on Channels'
  in-memory layer; subscribers on its WebSocket.
- ``poll-1s``, ``poll-100ms``: the ``reactive`` server with nobody subscribed; each client
  polls ``POST /reactive/api/query`` on that period.
- ``plain``: Django alone (``bench.asgi``), for the write-throughput baseline.

Every write is ``POST /bench/bump`` (a plain view's ORM write: captured by ``reactive``, signalled
to DCRF's observer). Single-process systems run under Daphne or uvicorn; the Redis deployment
under Daphne, as ``harness.cluster`` deploys it. A ``Running`` system knows where its subscribers
connect, where writes go, which processes serve it (their CPU is the system's), and how to ask it
for the invalidator's counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import Broken
from bench.servers import FLAVOURS, Databases, embedded_env, log_problems, start_server
from bench.wire import open_http
from harness import procfs
from harness.ports import HOST
from harness.processes import Process
from harness.services import scratch_parent


@dataclass(frozen=True)
class System:
    name: str
    label: str
    kind: str  # subscribers: "reactive", "dcrf" or "poll" (or "none")
    flavour: str  # the server: "reactive", "dcrf", "plain", or "redis" (the cluster)
    poll_ms: float | None = None
    env: tuple[tuple[str, str], ...] = ()


SYSTEMS = {
    system.name: system
    for system in (
        System("reactive", "reactive (embedded)", "reactive", "reactive"),
        System("reactive-redis", "reactive (Redis)", "reactive", "redis"),
        System("tables", "table-level", "reactive", "reactive", env=(("BENCH_READ_SETS", "tables"),)),
        System("dcrf", "DCRF observer", "dcrf", "dcrf"),
        System("poll-1s", "polling 1 s", "poll", "reactive", poll_ms=1000.0),
        System("poll-100ms", "polling 100 ms", "poll", "reactive", poll_ms=100.0),
        System("plain", "plain Django", "none", "plain"),
    )
}


@dataclass
class Running:
    """A system up on loopback: endpoints, serving processes, and what its servers logged."""

    system: System
    asgi_server: str
    endpoints: list[int]  # the ports subscribers connect to (round robin)
    write_port: int
    serving: dict[str, int]  # name -> pid: CPU counted as the system's
    tree_pids: dict[str, int] = field(default_factory=dict)  # name -> pid whose children count too
    redis_url: str | None = None
    database_url: str | None = None  # Redis: the cluster's Postgres (its change log table)
    database_path: Path | None = None  # single-process systems: the server's SQLite file
    versions: dict[str, Any] = field(default_factory=dict)  # Redis, Postgres, channels_redis
    env: dict[str, str] = field(default_factory=dict)  # of a Django process on the system's database
    directory: Path | None = None  # where its processes log
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.system.name}/{self.asgi_server}"

    @property
    def ws_path(self) -> str:
        return "/dcrf/ws/" if self.system.kind == "dcrf" else "/reactive/ws/"

    def endpoint(self, index: int) -> int:
        return self.endpoints[index % len(self.endpoints)]

    def serving_cpu(self) -> dict[str, float]:
        """CPU seconds of each serving process (Postgres: with its backends)."""
        seconds = {name: procfs.cpu_seconds(pid) for name, pid in self.serving.items()}
        seconds.update({name: procfs.tree_cpu_seconds(pid) for name, pid in self.tree_pids.items()})
        return seconds

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of each server process (not Redis or Postgres)."""
        out = {}
        for name, pid in self.serving.items():
            if name in ("redis", "worker"):
                continue
            with contextlib.suppress(OSError, RuntimeError):
                out[name] = procfs.rss_kib(pid) / 1024
        return out

    def redis_used_memory(self) -> int | None:
        if self.redis_url is None:
            return None
        import redis

        with redis.Redis.from_url(self.redis_url, socket_timeout=10) as client:
            return int(client.info("memory")["used_memory"])

    async def post(
        self, path: str, body: Any = None, port: int | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One POST to the system (its write port by default); the JSON answer."""
        connection = await open_http(HOST, port or self.write_port)
        try:
            _, status, answer = await connection.request(
                "POST", path, orjson.dumps(body) if body is not None else b"", timeout=300, headers=headers
            )
        finally:
            connection.close()
        if status != 200:
            raise Broken(f"{self.name}: POST {path} answered {status}: {answer[:300]!r}")
        return orjson.loads(answer)

    async def reset_counters(self, first: int, count: int) -> None:
        await self.post(f"/bench/reset?first={first}&count={count}")

    async def invalidator_runs(self) -> int | None:
        """Query re-runs so far (the embedded invalidator's count; None where it runs elsewhere)."""
        if self.system.flavour != "reactive":
            return None
        answer = await self.post("/reactive/api/action", {"name": "benchapp.stats", "args": {}})
        runs = answer["value"]["runs"]
        return sum(runs.values()) if answer["value"]["instances"] is not None else None


@contextlib.contextmanager
def running(system: System, asgi_server: str, workdir: Path, databases: Databases) -> Iterator[Running]:
    """Start ``system`` under ``asgi_server``; stop it on the way out. Problems found on stopping
    (a server that died, what it logged) land in ``Running.problems``."""
    if system.flavour == "redis":
        with _redis_deployment(system, workdir) as deployed:
            yield deployed
        return
    name = f"{system.name}-{asgi_server}-{int(time.monotonic() * 1000) % 100000}"
    settings = FLAVOURS[system.flavour].settings
    db = databases.fresh(settings)
    server = start_server(databases, workdir, name, system.flavour, asgi_server, db, **dict(system.env))
    deployed = Running(system, asgi_server, [server.port], server.port, {"server": server.pid})  # type: ignore[list-item]
    deployed.env = embedded_env(settings, db, **dict(system.env))
    deployed.database_path = db
    deployed.directory = workdir
    try:
        yield deployed
    finally:
        _stop([server], deployed)


def _stop(processes: list[Process], deployed: Running) -> None:
    alive = {process.name: process.alive() for process in processes}
    for process in processes:
        code = process.stop()
        if not alive[process.name]:
            deployed.problems.append(f"{process.name} died during the run (exit code {code})")
        logged = log_problems(process)
        if logged:
            deployed.problems.append(f"{process.name} logged: " + " | ".join(logged[:5])[:1500])


@contextlib.contextmanager
def _redis_deployment(system: System, workdir: Path) -> Iterator[Running]:
    """Redis, Postgres, Daphne servers A and B and one worker (``bench.cluster``)."""
    from bench.cluster import SETTINGS, Deployment
    from harness.cluster import Cluster

    directory = Path(tempfile.mkdtemp(prefix="reactive-bench-cluster-", dir=scratch_parent()))
    directory.chmod(0o755)  # as root, Postgres runs as another user inside it
    try:
        try:
            cluster = Cluster.create(directory, SETTINGS, log_level="WARNING")
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:  # not installed, not up
            raise Broken(f"Redis and Postgres did not start: {type(exc).__name__}: {exc}") from None
        deployed: Running | None = None
        try:
            deployment = Deployment.start(cluster)
            deployed = Running(
                system,
                "daphne",
                [deployment.a.port, deployment.b.port],  # type: ignore[list-item]
                deployment.a.port,  # type: ignore[arg-type]
                {
                    "server A": deployment.a.pid,
                    "server B": deployment.b.pid,
                    "worker": deployment.worker.pid,
                    "redis": cluster.redis_service.process.pid,  # type: ignore[union-attr]
                },
                {"postgres": cluster.postgres_service.process.pid},  # type: ignore[union-attr]
                redis_url=cluster.redis_url,
                database_url=cluster.database_url,
            )
            deployed.versions = deployment.versions()
            deployed.env = cluster.env()
            deployed.directory = directory
            yield deployed
        finally:
            cluster.stop()
            if deployed is not None:
                for process in cluster.processes:
                    logged = log_problems(process)
                    if logged:
                        deployed.problems.append(f"{process.name} logged: " + " | ".join(logged[:5])[:1500])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def prime_redis(deployed: Running, generators: Any, first_index: int) -> None:
    """One socket to each server, held for the whole run, and time for the worker to see both
    hubs: a subscription on a hub that started less than a second ago can miss updates until the
    worker's live-hubs cache (refreshed once a second) includes it (see ``bench.cluster``)."""
    import redis

    sockets = [
        {"index": first_index + i, "kind": "reactive", "host": HOST, "port": port, "path": "/reactive/ws/"}
        for i, port in enumerate(deployed.endpoints)
    ]
    opened = await generators.open(sockets, concurrency=2)
    if opened.get("error_count"):
        raise Broken(f"{deployed.name}: could not open the priming sockets: {opened['errors']}")
    deadline = time.monotonic() + 30
    with redis.Redis.from_url(deployed.redis_url, socket_timeout=10) as client:  # type: ignore[arg-type]
        while client.zcount("reactive:hubs", time.time(), "+inf") < len(deployed.endpoints):
            if time.monotonic() > deadline:
                raise Broken(f"{deployed.name}: the servers' hubs did not register in reactive:hubs")
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)
